"""The Terraform files parse, pin their versions, and validate their inputs."""

from __future__ import annotations

import importlib.metadata
import re
from pathlib import Path

import hcl2
import pytest

from terraform_helpers import ENVIRONMENTS, REPO, TERRAFORM, expr, load_hcl, tf_files

REQUIRED_FILES = [
    "versions.tf",
    "providers.tf",
    "backend.tf",
    "variables.tf",
    "networking.tf",
    "security_groups.tf",
    "llm.tf",
    "vectordb.tf",
    "application.tf",
    "edge.tf",
    "monitoring.tf",
    "secrets.tf",
    "storage.tf",
    "iam.tf",
    "bastion.tf",
    "amis.tf",
    "outputs.tf",
]


def test_hcl2_is_python_hcl2_from_the_project_venv() -> None:
    """checkov's bc-python-hcl2 also installs a module called hcl2; it must not be this one."""
    assert ".venv-checkov" not in Path(hcl2.__file__).parts, hcl2.__file__
    version = importlib.metadata.version("python-hcl2")
    assert version.startswith("8."), f"python-hcl2 {version}: requirements/controller.txt pins 8.1.x"


@pytest.mark.parametrize("name", REQUIRED_FILES)
def test_required_file_exists(name: str) -> None:
    assert (TERRAFORM / name).is_file(), f"terraform/{name} is missing"


@pytest.mark.parametrize("path", tf_files(), ids=lambda p: p.relative_to(TERRAFORM).as_posix())
def test_tf_file_parses(path: Path) -> None:
    with path.open() as handle:
        parsed = hcl2.load(handle)
    assert parsed, f"{path} parsed to nothing"


@pytest.mark.parametrize(
    "path",
    sorted((TERRAFORM / "environments").glob("*/*.tfvars")),
    ids=lambda p: p.relative_to(TERRAFORM).as_posix(),
)
def test_tfvars_file_parses(path: Path) -> None:
    assert load_hcl(path), f"{path} parsed to nothing"


def test_provider_and_terraform_versions_are_pinned(tf) -> None:
    blocks = [b for _, b in tf.blocks("terraform")]
    required_version = [b["required_version"] for b in blocks if "required_version" in b]
    assert required_version, "versions.tf: required_version is missing"
    providers = {}
    for block in blocks:
        for entry in block.get("required_providers", []):
            providers.update(entry)
    assert providers["aws"]["source"] == "hashicorp/aws"
    assert re.fullmatch(r"~> [56]\.\d+(\.\d+)?", providers["aws"]["version"]), providers["aws"]
    assert providers["random"]["source"] == "hashicorp/random"
    assert providers["random"]["version"].startswith("~> 3."), providers["random"]


def test_state_backend_is_s3_configured_per_environment(tf, backend_tfvars) -> None:
    backends = [b["backend"] for _, b in tf.blocks("terraform") if "backend" in b]
    assert len(backends) == 1, "exactly one backend block (backend.tf)"
    assert list(backends[0][0]) == ["s3"]
    for env, values in backend_tfvars.items():
        assert {"bucket", "key", "region"} <= set(values), f"environments/{env}/backend.tfvars"
        assert f"/{env}/" in values["key"], f"environments/{env}/backend.tfvars: the state key must name {env}"
        assert values["encrypt"] is True
    keys = {values["key"] for values in backend_tfvars.values()}
    assert len(keys) == len(ENVIRONMENTS), "staging and prod must not share a state object"


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


def test_state_is_locked_by_an_s3_lockfile_not_dynamodb(tf, backend_tfvars) -> None:
    """The S3 backend's DynamoDB locking is deprecated since Terraform 1.11, where S3-native
    locking (a <key>.tflock object next to the state) became generally available."""
    backends = [b["backend"][0]["s3"] for _, b in tf.blocks("terraform") if "backend" in b]
    assert backends[0].get("use_lockfile") is True, "backend.tf: use_lockfile = true (S3-native state locking)"
    for env, values in backend_tfvars.items():
        where = f"environments/{env}/backend.tfvars"
        dynamodb = sorted(k for k in values if k.startswith("dynamodb"))
        assert not dynamodb, f"{where} sets {dynamodb}: the lock is the S3 lockfile, no DynamoDB table"
        assert values.get("use_lockfile", True) is True, f"{where} must not turn the lockfile off"
    files = [*tf_files(), *sorted((TERRAFORM / "environments").glob("*/*.tfvars")), REPO / "docs" / "terraform.md"]
    for path in files:
        assert "dynamodb" not in path.read_text().lower(), f"{path.relative_to(REPO)} still mentions DynamoDB"

    required = next(b["required_version"] for _, b in tf.blocks("terraform") if "required_version" in b)
    lower = [c.strip()[2:].strip() for c in required.split(",") if c.strip().startswith(">=")]
    assert len(lower) == 1, f"versions.tf: required_version {required!r} needs one >= bound"
    assert _version(lower[0]) >= (1, 11), f"versions.tf: use_lockfile is GA from Terraform 1.11, not {lower[0]}"


def test_every_variable_is_typed_and_described(tf) -> None:
    for name, body in tf.variables.items():
        assert body.get("description"), f"variable {name} has no description"
        assert "type" in body, f"variable {name} has no type"


@pytest.mark.parametrize(
    "name, must_mention",
    [
        ("env", ["staging", "prod"]),
        ("az_count", [">= 2"]),
        ("vpc_cidr", ["cidrhost"]),
        ("admin_cidrs", ["cidrhost", "0.0.0.0/0"]),
        ("edge_count", [">= 1"]),
        ("backend_count", [">= 1"]),
        ("qdrant_count", [">= 1"]),
        ("ollama_count", [">= 1"]),
        ("route53_zone_id", ["^Z[A-Z0-9]"]),
        ("noncurrent_version_retention_days", ["> 0"]),
        ("access_log_retention_days", ["> 0"]),
        ("replica_region", ["var.region"]),
    ],
)
def test_variable_has_validation(tf, name: str, must_mention: list[str]) -> None:
    validations = tf.variables[name].get("validation", [])
    assert validations, f"variable {name} has no validation block"
    conditions = " ".join(expr(v["condition"]) or "" for v in validations)
    for fragment in must_mention:
        assert fragment in conditions, f"variable {name}: no validation mentions {fragment!r}"
    for validation in validations:
        assert validation.get("error_message"), f"variable {name}: validation without error_message"


def test_tfvars_set_only_declared_variables(tf, tfvars) -> None:
    declared = set(tf.variables)
    for env, values in tfvars.items():
        unknown = set(values) - declared
        assert not unknown, f"environments/{env}/terraform.tfvars sets undeclared variables {sorted(unknown)}"
        required = {n for n, body in tf.variables.items() if "default" not in body}
        missing = required - set(values)
        assert not missing, f"environments/{env}/terraform.tfvars misses required variables {sorted(missing)}"


def test_tfvars_satisfy_the_environment_shape(tfvars) -> None:
    """A few of the validations, re-checked on the committed values (Terraform cannot run here)."""
    for env, values in tfvars.items():
        where = f"environments/{env}/terraform.tfvars"
        assert values["env"] == env, where
        assert values["region"] != values["replica_region"], where
        assert values["az_count"] >= 2, where
        assert values["edge_count"] >= 2, f"{where}: docs/architecture.md wants two edges, one per AZ"
        assert values["backend_count"] >= 2, f"{where}: docs/architecture.md wants 2+ backends"
        assert "0.0.0.0/0" not in values["admin_cidrs"], where
    assert tfvars["prod"]["nat_gateway_per_az"] is True
    assert tfvars["staging"]["nat_gateway_per_az"] is False
    assert tfvars["prod"]["vpc_cidr"] != tfvars["staging"]["vpc_cidr"]


def test_gitignore_keeps_state_out_but_lock_file_in() -> None:
    ignored = (TERRAFORM / ".gitignore").read_text()
    assert ".terraform/" in ignored and "*.tfstate" in ignored
    patterns = [line.strip() for line in ignored.splitlines() if line.strip() and not line.startswith("#")]
    assert ".terraform.lock.hcl" not in patterns, "commit the lock file"
    for env in ENVIRONMENTS:
        assert "terraform_outputs.yml" in (REPO / "inventories" / env / ".gitignore").read_text()


def test_instances_boot_debian_13_from_debians_own_account(tf) -> None:
    """The fleet runs the current Debian stable; Debian 12 is in LTS (docs/upgrading.md)."""
    amis = [block for _, block in tf.blocks("data") if "aws_ami" in block]
    assert len(amis) == 1, "one AMI lookup, pinned by var.ami_id when set"
    (lookup,) = amis[0]["aws_ami"].values()
    assert lookup["owners"] == ["136693071363"], "Debian's own AWS account"
    names = [f["values"] for f in lookup["filter"] if f["name"] == "name"]
    assert names == [["debian-13-amd64-*"]]
