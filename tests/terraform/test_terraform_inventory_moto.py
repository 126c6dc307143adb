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

import ipaddress
import json
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest

from terraform_helpers import ENVIRONMENTS, INVENTORIES, REPO, VENV_BIN, aws_env, expr

GROUPS = ("bastion", "edge", "backend", "qdrant", "ollama", "monitoring")


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


def _cidrsubnet(cidr: str, newbits: int, index: int) -> str:
    """Terraform's cidrsubnet()."""
    network = ipaddress.ip_network(cidr)
    return str(list(network.subnets(prefixlen_diff=newbits))[index])


def _count(body: dict, tf, values: dict) -> int:
    code = expr(body.get("count"))
    if code is None:
        return 1 if "count" not in body else int(body["count"])
    match = re.fullmatch(r"var\.(\w+)", code)
    assert match, f"count {code!r}: teach the test to read it"
    name = match.group(1)
    return int(values.get(name, tf.variables[name].get("default")))


def _subnet(body: dict, index: int, az_count: int) -> tuple[str, int]:
    """("public"|"private", subnet index) of instance number `index`."""
    code = expr(body["subnet_id"])
    match = re.fullmatch(r"aws_subnet\.(public|private)\[(.+)\]\.id", code or "")
    assert match, f"subnet_id {code!r}: teach the test to read it"
    kind, position = match.groups()
    if position == "count.index % var.az_count":
        return kind, index % az_count
    return kind, int(position)


@pytest.fixture(scope="module")
def seeded(moto_url: str, tf, tfvars) -> Seeded:
    project = tf.variables["project"]["default"]
    result = Seeded()
    region = tfvars["prod"]["region"]
    assert all(v["region"] == region for v in tfvars.values()), "the test seeds one region"
    ec2 = boto3.client(
        "ec2",
        region_name=region,
        endpoint_url=moto_url,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    ami = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]

    def tags(pairs: dict[str, str]) -> list[dict]:
        return [{"ResourceType": "instance", "Tags": [{"Key": k, "Value": v} for k, v in pairs.items()]}]

    def launch(subnet: str, instance_type: str, tag_pairs: dict[str, str]) -> dict:
        return ec2.run_instances(
            ImageId=ami,
            InstanceType=instance_type,
            MinCount=1,
            MaxCount=1,
            SubnetId=subnet,
            TagSpecifications=tags(tag_pairs),
        )["Instances"][0]

    instances = tf.resources("aws_instance")
    for env in ENVIRONMENTS:
        values = tfvars[env]
        az_count = values["az_count"]
        azs = [f"{region}{'abcdef'[i]}" for i in range(az_count)]
        vpc = ec2.create_vpc(CidrBlock=values["vpc_cidr"])["Vpc"]["VpcId"]
        subnets = {
            kind: [
                ec2.create_subnet(
                    VpcId=vpc, CidrBlock=_cidrsubnet(values["vpc_cidr"], 4, i + offset), AvailabilityZone=azs[i]
                )["Subnet"]["SubnetId"]
                for i in range(az_count)
            ]
            for kind, offset in (("public", 0), ("private", 8))
        }
        default_tags = {"Project": project, "Environment": env, "ManagedBy": "terraform"}
        hosts: list[Host] = []
        for body in instances.values():
            role = body["tags"]["Role"]
            for index in range(_count(body, tf, values)):
                kind, position = _subnet(body, index, az_count)
                instance = launch(
                    subnets[kind][position],
                    values["instance_types"][role],
                    {**default_tags, "Role": role, "Name": f"{project}-{env}-{role}-{index + 1}"},
                )
                host = Host(role, instance["PrivateIpAddress"], azs[position])
                if role == "bastion":
                    eip = ec2.allocate_address(Domain="vpc")
                    ec2.associate_address(InstanceId=instance["InstanceId"], AllocationId=eip["AllocationId"])
                    host.public_ip = eip["PublicIp"]
                hosts.append(host)
        result.hosts[env] = hosts

        if env == "prod":
            stopped = launch(subnets["private"][0], "t3.small", {**default_tags, "Role": "backend"})
            ec2.stop_instances(InstanceIds=[stopped["InstanceId"]])
            result.excluded[stopped["PrivateIpAddress"]] = "stopped prod backend"
            stray = launch(subnets["private"][1], "t3.small", {**default_tags, "Name": "debug-box"})
            result.excluded[stray["PrivateIpAddress"]] = "prod instance without a Role tag"
            other = launch(subnets["private"][0], "t3.small", {"Project": "other", "Environment": env, "Role": "edge"})
            result.excluded[other["PrivateIpAddress"]] = "another project's edge"

    states = {
        i["PrivateIpAddress"]: i["State"]["Name"]
        for r in ec2.describe_instances()["Reservations"]
        for i in r["Instances"]
    }
    assert "stopped" in states.values(), "the stopped instance did not stop in moto"
    return result


def _unsafe(value: Any) -> Any:
    """ansible-inventory --list marks templated values {"__ansible_unsafe": v}; unwrap them."""
    if isinstance(value, dict):
        if set(value) == {"__ansible_unsafe"}:
            return value["__ansible_unsafe"]
        return {k: _unsafe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_unsafe(v) for v in value]
    return value


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
    return {env: _unsafe(json.loads(_ansible_inventory(env, moto_url, tmp, "--list"))) for env in ENVIRONMENTS}


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
            assert "ProxyJump" not in variables["ansible_ssh_common_args"], "the bastion must not jump through itself"
        else:
            assert variables["ansible_host"] == host.private_ip
            assert "ProxyJump=" in variables["ansible_ssh_common_args"]
        assert variables["ansible_user"] == "admin"
        assert variables["ansible_aws_ssm_instance_id"].startswith("i-")


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
