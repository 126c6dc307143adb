"""The dynamic inventories against a moto EC2 seeded the way Terraform would build it.

For prod AND staging (in the same account and region, so the filters must do the
separating), instances are created with the counts of environments/<env>/terraform.tfvars,
the subnets and AZ spread of the aws_instance resources, the default_tags and Role tags,
and an Elastic IP on the bastion. Noise that must never show up: a stopped prod backend,
a prod instance without a Role tag, and another project's instance.

`ansible-inventory` runs the unmodified inventory (the directory, with its group_vars);
AWS_URL points the amazon.aws.aws_ec2 plugin at moto.
"""

from __future__ import annotations

import sys
import json
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import boto3
import pytest

from terraform_helpers import ENVIRONMENTS, INVENTORIES, REPO, TERRAFORM, VENV_BIN, aws_env

sys.path.insert(0, str(REPO / "lab"))
from labctl import ec2 as lab_ec2  # noqa: E402  - the lab seeds its emulator the same way
from labctl import terraform as lab_terraform  # noqa: E402
from labctl.inventory import unwrap_unsafe  # noqa: E402

GROUPS = ("bastion", "edge", "backend", "qdrant", "ollama", "postgres", "monitoring")


@dataclass
class Host:
    role: str
    private_ip: str
    az: str
    public_ip: str | None = None


@dataclass
class Seeded:
    """What moto holds: the hosts each inventory must show, and those it must not."""

    hosts: dict[str, list[Host]] = field(default_factory=dict)
    excluded: dict[str, str] = field(default_factory=dict)  # private IP -> why


@pytest.fixture(scope="module")
def seeded(moto_url: str, tfvars) -> Seeded:
    """Each environment as Terraform would build it (lab/labctl/terraform.py reads the HCL with
    the environment's tfvars: counts, subnets and zones, default and Role tags, the bastion's
    Elastic IP, the data volumes), plus noise that must never show up."""
    result = Seeded()
    region = tfvars["prod"]["region"]
    assert all(v["region"] == region for v in tfvars.values()), "the test seeds one region"
    for number, env in enumerate(ENVIRONMENTS):
        values = lab_terraform.values(TERRAFORM / "environments" / env / "terraform.tfvars")
        planned = lab_ec2.plan(values, bastion_public_ip=f"203.0.113.{10 + number}")
        lab_ec2.seed(planned, values, url=moto_url)
        result.hosts[env] = [Host(h.role, h.address, h.subnet.zone, h.public_ip) for h in planned]

    ec2 = boto3.client("ec2", region_name=region, endpoint_url=moto_url,
                       aws_access_key_id="testing", aws_secret_access_key="testing")
    ami = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    subnet = ec2.describe_subnets(Filters=[{"Name": "cidr-block", "Values": [
        str(lab_terraform.subnets(lab_terraform.values(TERRAFORM / "environments/prod/terraform.tfvars"))
            ["private"][0].cidr)]}])["Subnets"][0]["SubnetId"]

    def launch(tag_pairs: dict[str, str]) -> dict:
        return ec2.run_instances(
            ImageId=ami, InstanceType="t3.small", MinCount=1, MaxCount=1, SubnetId=subnet,
            TagSpecifications=[{"ResourceType": "instance",
                                "Tags": [{"Key": k, "Value": v} for k, v in tag_pairs.items()]}],
        )["Instances"][0]

    prod_tags = {"Project": "querygpt", "Environment": "prod", "ManagedBy": "terraform"}
    stopped = launch({**prod_tags, "Role": "backend"})
    ec2.stop_instances(InstanceIds=[stopped["InstanceId"]])
    result.excluded[stopped["PrivateIpAddress"]] = "stopped prod backend"
    stray = launch({**prod_tags, "Name": "debug-box"})
    result.excluded[stray["PrivateIpAddress"]] = "prod instance without a Role tag"
    other = launch({"Project": "other", "Environment": "prod", "Role": "edge"})
    result.excluded[other["PrivateIpAddress"]] = "another project's edge"

    states = {
        i["PrivateIpAddress"]: i["State"]["Name"]
        for r in ec2.describe_instances()["Reservations"]
        for i in r["Instances"]
    }
    assert "stopped" in states.values(), "the stopped instance did not stop in moto"
    return result


def _ansible_inventory(env: str, moto_url: str, tmp: Path, *args: str) -> str:
    """Run ansible-inventory on a copy of inventories/<env> (the directory, as playbooks
    use it) without the ansible-vault file, whose password a test does not have, and
    without a stale terraform_outputs.yml."""
    copy = tmp / "inventories" / env
    if not copy.exists():
        shutil.copytree(INVENTORIES / env, copy, ignore=shutil.ignore_patterns("vault.yml", "terraform_outputs.yml"))
    done = subprocess.run(
        [str(VENV_BIN / "ansible-inventory"), "-i", str(copy), *args],
        cwd=REPO,
        env=aws_env(moto_url, tmp),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, f"ansible-inventory {env} {args} failed:\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def listed(seeded: Seeded, moto_url: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    tmp = tmp_path_factory.mktemp("ansible")
    return {env: unwrap_unsafe(json.loads(_ansible_inventory(env, moto_url, tmp, "--list"))) for env in ENVIRONMENTS}


def _group_hosts(inventory: dict, group: str) -> set[str]:
    return set(inventory.get(group, {}).get("hosts", []))


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_groups_hold_exactly_the_hosts_terraform_would_create(env: str, seeded: Seeded, listed: dict) -> None:
    inventory = listed[env]
    for role in GROUPS:
        expected = {h.private_ip for h in seeded.hosts[env] if h.role == role}
        assert expected, f"{role}: nothing seeded for {env}"
        assert _group_hosts(inventory, role) == expected, f"{env} group {role}"
    all_hosts = set(inventory["_meta"]["hostvars"])
    assert all_hosts == {h.private_ip for h in seeded.hosts[env]}


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_group_names_are_exactly_roles_and_azs(env: str, listed: dict) -> None:
    groups = {g for g in listed[env] if g != "_meta"}
    extra = groups - set(GROUPS) - {"all", "ungrouped", "aws_ec2"}
    assert all(g.startswith("az_") for g in extra), f"unexpected groups {sorted(extra)}"


def test_other_environments_and_noise_are_excluded(seeded: Seeded, listed: dict) -> None:
    prod_hosts = set(listed["prod"]["_meta"]["hostvars"])
    staging_hosts = set(listed["staging"]["_meta"]["hostvars"])
    assert not prod_hosts & {h.private_ip for h in seeded.hosts["staging"]}, "staging hosts leaked into prod"
    assert not staging_hosts & {h.private_ip for h in seeded.hosts["prod"]}, "prod hosts leaked into staging"
    for ip, why in seeded.excluded.items():
        assert ip not in prod_hosts | staging_hosts, f"{why} ({ip}) is in an inventory"


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_ansible_host_is_the_private_ip_except_on_the_bastion(env: str, seeded: Seeded, listed: dict) -> None:
    hostvars = listed[env]["_meta"]["hostvars"]
    for host in seeded.hosts[env]:
        variables = hostvars[host.private_ip]
        if host.role == "bastion":
            assert host.public_ip and variables["ansible_host"] == host.public_ip
        else:
            assert variables["ansible_host"] == host.private_ip
        assert variables["ec2_private_ip_address"] == host.private_ip


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_az_groups_follow_placement(env: str, seeded: Seeded, listed: dict) -> None:
    inventory = listed[env]
    for host in seeded.hosts[env]:
        group = "az_" + host.az.replace("-", "_")
        assert host.private_ip in _group_hosts(inventory, group), f"{host} not in {group}"
    edges = [h for h in seeded.hosts[env] if h.role == "edge"]
    assert len({h.az for h in edges}) == len(edges), "the edges must sit one per AZ"


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_graph_shows_the_role_groups(
    env: str, seeded: Seeded, moto_url: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    graph = _ansible_inventory(env, moto_url, tmp_path_factory.mktemp("graph"), "--graph")
    for role in GROUPS:
        assert f"@{role}:" in graph, graph
    for host in seeded.hosts[env]:
        assert host.private_ip in graph
