"""Fixtures for the Terraform layer's tests: the parsed HCL, the tfvars and the inventories
(the moto server on a free loopback port is in tests/conftest.py)."""

from __future__ import annotations

import sys
from pathlib import Path
import pytest
import yaml

# The helpers module sits next to this file; make it importable whatever pytest's
# import mode is.
sys.path.insert(0, str(Path(__file__).resolve().parent))

from terraform_helpers import (  # noqa: E402
    ENVIRONMENTS,
    INVENTORIES,
    TERRAFORM,
    TerraformConfig,
    load_hcl,
    tf_files,
)


def _values(path: Path) -> dict:
    """A .tfvars file's assignments (without the parser's __comments__ entry)."""
    return {k: v for k, v in load_hcl(path).items() if not k.startswith("__")}


@pytest.fixture(scope="session")
def tf() -> TerraformConfig:
    return TerraformConfig({p.relative_to(TERRAFORM).as_posix(): load_hcl(p) for p in tf_files()})


@pytest.fixture(scope="session")
def tfvars() -> dict[str, dict]:
    return {env: _values(TERRAFORM / "environments" / env / "terraform.tfvars") for env in ENVIRONMENTS}


@pytest.fixture(scope="session")
def backend_tfvars() -> dict[str, dict]:
    return {env: _values(TERRAFORM / "environments" / env / "backend.tfvars") for env in ENVIRONMENTS}


@pytest.fixture(scope="session")
def inventories() -> dict[str, dict]:
    return {env: yaml.safe_load((INVENTORIES / env / "aws_ec2.yml").read_text()) for env in ENVIRONMENTS}
