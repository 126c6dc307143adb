"""Helpers for the Terraform layer's tests (imported by conftest.py and the tests).

The Terraform binary cannot run here (no network for providers), so these tests read
the HCL with python-hcl2 from .venv (never the bc-python-hcl2 fork that checkov
installs into .venv-checkov), and exercise the dynamic inventory against moto.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator


REPO = Path(__file__).resolve().parents[2]
TERRAFORM = REPO / "terraform"
INVENTORIES = REPO / "inventories"
VENV_BIN = REPO / ".venv" / "bin"
ENVIRONMENTS = ("staging", "prod")

# The HCL reader the lab uses too (strings without their quotes, expressions as "${...}").
sys.path.insert(0, str(REPO / "lab"))
from labctl.terraform import expr, load as load_hcl  # noqa: E402


def tf_files() -> list[Path]:
    return sorted(p for p in TERRAFORM.rglob("*.tf") if ".terraform" not in p.parts)


@dataclass
class TerraformConfig:
    """The parsed root module: every block by type, with the file it came from."""

    files: dict[str, dict] = field(default_factory=dict)

    def blocks(self, kind: str) -> Iterator[tuple[str, dict]]:
        for name, doc in self.files.items():
            for block in doc.get(kind, []):
                yield name, block

    def resources(self, rtype: str) -> dict[str, dict]:
        """{resource name: body} of every resource of one type."""
        found: dict[str, dict] = {}
        for _, block in self.blocks("resource"):
            for kind, named in block.items():
                if kind != rtype:
                    continue
                for rname, body in named.items():
                    assert rname not in found, f"duplicate resource {rtype}.{rname}"
                    found[rname] = body
        return found

    def resource_files(self, rtype: str) -> dict[str, str]:
        """{resource name: file name} of every resource of one type."""
        found: dict[str, str] = {}
        for fname, block in self.blocks("resource"):
            for kind, named in block.items():
                if kind == rtype:
                    for rname in named:
                        found[rname] = fname
        return found

    def all_resources(self) -> Iterator[tuple[str, str, dict]]:
        for _, block in self.blocks("resource"):
            for kind, named in block.items():
                for rname, body in named.items():
                    yield kind, rname, body

    @property
    def locals(self) -> dict:
        merged: dict = {}
        for _, block in self.blocks("locals"):
            for key, value in block.items():
                if key.startswith("__"):
                    continue
                assert key not in merged, f"local.{key} defined twice"
                merged[key] = value
        return merged

    @property
    def variables(self) -> dict[str, dict]:
        merged: dict[str, dict] = {}
        for _, block in self.blocks("variable"):
            merged.update(block)
        return merged

    @property
    def outputs(self) -> dict[str, dict]:
        merged: dict[str, dict] = {}
        for _, block in self.blocks("output"):
            merged.update(block)
        return merged


def aws_env(moto_url: str, tmp: Path) -> dict[str, str]:
    """Environment for a subprocess that must talk to moto and nothing else."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "ANSIBLE_"))}
    env.update(
        {
            "AWS_URL": moto_url,
            "AWS_ENDPOINT_URL": moto_url,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "eu-central-1",
            "AWS_CONFIG_FILE": str(tmp / "aws-config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(tmp / "aws-credentials"),
            "ANSIBLE_LOCAL_TEMP": str(tmp / "ansible-tmp"),
            "ANSIBLE_HOME": str(tmp / "ansible-home"),
            # A broken inventory source must fail the command, not yield an empty inventory.
            "ANSIBLE_INVENTORY_UNPARSED_FAILED": "True",
            "ANSIBLE_INVENTORY_ANY_UNPARSED_IS_FAILED": "True",
            "ANSIBLE_DEPRECATION_WARNINGS": "False",
        }
    )
    return env
