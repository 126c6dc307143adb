"""The lab's EC2: an emulator (moto) on the controller, seeded as Terraform would build the lab.

inventories/lab/aws_ec2.yml is the production inventory plugin pointed at this emulator, so
the lab's groups, zones, host names and addresses come from the same plugin settings as
prod's. `seed` creates what terraform/ would create for lab/fleet.tfvars: the VPC and its
subnets, one instance per aws_instance (Project, Environment, ManagedBy, Role and Name tags;
the private IP is the lab container's address), the bastion's Elastic IP and the data
volumes attached where Terraform attaches them. The lab-only helpers (the ACME and S3 hosts
and the load balancer, standing in for what AWS and the internet provide) are added with Role
tags of their own.
The emulator keeps its state in memory: `ensure` reseeds it whenever it (re)starts.
"""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import terraform
from .paths import REPO, STATE, VENV
from .run import LabError

HOST = "127.0.0.1"
PORT = 4567
URL = f"http://{HOST}:{PORT}"
FLEET_VARS = REPO / "lab" / "fleet.tfvars"
PID_FILE = STATE / "ec2-emulator.pid"
LOG_FILE = STATE / "ec2-emulator.log"
OUTPUTS_FILE = REPO / "inventories" / "lab" / "group_vars" / "all" / "terraform_outputs.yml"

# The lab's "internet": the bastion's Elastic IP lives here and the controller (this
# network's gateway) reaches it there, like an operator reaching a public address.
# TEST-NET-2 (RFC 5737): never routed anywhere real.
INTERNET = ipaddress.ip_network("198.51.100.0/24")
BASTION_PUBLIC_IP = "198.51.100.10"
# The lab's load balancer (HAProxy, standing in for the NLB) answers clients here.
LB_PUBLIC_IP = "198.51.100.20"

# Lab-only helpers: (role, subnet kind, zone position). Never in prod. The `lb` sits in a
# public subnet with an address on the lab's "internet", as the NLB does.
LAB_ONLY = (("acme", "private", 1), ("s3", "private", 1), ("lb", "public", 0))
LAB_PUBLIC_IPS = {"lb": LB_PUBLIC_IP}
LAB_BUCKETS = ("backups", "documents")


@dataclass(frozen=True)
class LabHost:
    """One lab machine: an instance Terraform would create (or a lab-only helper)."""

    name: str  # the Name tag; also the container's name and hostname
    role: str
    address: str  # private IP
    subnet: terraform.Subnet
    data_devices: tuple[str, ...] = ()
    public_ip: str | None = None
    instance_type: str = "t3.small"

    @property
    def network(self) -> str:
        return network_name(self.subnet)


def network_name(subnet: terraform.Subnet) -> str:
    return f"{subnet.kind}-{subnet.zone[-1]}"


def fleet_values() -> dict[str, Any]:
    return terraform.values(FLEET_VARS)


def plan(vals: dict[str, Any] | None = None, helpers: tuple[tuple[str, str, int], ...] | None = None,
         bastion_public_ip: str = BASTION_PUBLIC_IP) -> list[LabHost]:
    """The machines Terraform would create for `vals` (the lab's by default) with addresses:
    per subnet, .10 upwards in plan order. The lab adds its helpers (LAB_ONLY)."""
    vals = vals or fleet_values()
    if helpers is None:
        helpers = LAB_ONLY if vals["env"] == "lab" else ()
    nets = terraform.subnets(vals)
    planned: list[tuple[str, str, terraform.Subnet, tuple[str, ...], str]] = [
        (i.name, i.role, i.subnet, tuple(i.data_devices), i.instance_type) for i in terraform.instances(vals)
    ]
    for role, kind, position in helpers:
        planned.append((f"{vals['project']}-{vals['env']}-{role}-1", role, nets[kind][position], (), "t3.small"))
    next_host: dict[str, int] = {}
    hosts = []
    for name, role, subnet, devices, instance_type in planned:
        offset = next_host.get(subnet.cidr.exploded, 10)
        next_host[subnet.cidr.exploded] = offset + 1
        address = str(subnet.cidr.network_address + offset)
        public_ip = bastion_public_ip if role == "bastion" else LAB_PUBLIC_IPS.get(role)
        hosts.append(LabHost(name, role, address, subnet, devices, public_ip, instance_type))
    return hosts


# --- the emulator process ------------------------------------------------------------------


def answers() -> bool:
    try:
        with socket.create_connection((HOST, PORT), timeout=1):
            pass
        urllib.request.urlopen(f"{URL}/moto-api/", timeout=2).read()
        return True
    except OSError:
        return False


def start() -> bool:
    """Start the emulator if it does not answer; True when it was (re)started (state empty)."""
    if answers():
        return False
    STATE.mkdir(parents=True, exist_ok=True)
    with LOG_FILE.open("a") as log:
        proc = subprocess.Popen([str(VENV / "bin" / "moto_server"), "-H", HOST, "-p", str(PORT)],
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    PID_FILE.write_text(f"{proc.pid}\n")
    deadline = time.monotonic() + 30
    while not answers():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise LabError(f"the lab's EC2 emulator did not start on {URL}; see {LOG_FILE}")
        time.sleep(0.2)
    return True


def stop() -> None:
    if not PID_FILE.exists():
        return
    try:
        os.kill(int(PID_FILE.read_text().strip()), signal.SIGTERM)
    except (ProcessLookupError, ValueError):
        pass
    PID_FILE.unlink(missing_ok=True)


def client(service: str = "ec2", region: str | None = None, url: str = URL):  # noqa: ANN201 - untyped
    import boto3  # only in .venv

    return boto3.client(service, region_name=region or fleet_values()["region"], endpoint_url=url,
                        aws_access_key_id="lab-emulator", aws_secret_access_key="lab-emulator")


# --- seeding ---------------------------------------------------------------------------------


def seeded_names(ec2: Any, env: str) -> set[str]:
    names = set()
    pages = ec2.get_paginator("describe_instances").paginate(
        Filters=[{"Name": "tag:Environment", "Values": [env]},
                 {"Name": "instance-state-name", "Values": ["running"]}])
    for page in pages:
        for reservation in page["Reservations"]:
            for inst in reservation["Instances"]:
                names |= {t["Value"] for t in inst.get("Tags", []) if t["Key"] == "Name"}
    return names


def primary_interface(subnet_id: str, address: str) -> list[dict[str, Any]]:
    """An instance's primary network interface as EC2 makes it at launch: deleted with the
    instance, so a terminated instance's address is free again. (The emulator keeps it taken
    when the instance is launched with SubnetId and PrivateIpAddress alone.)"""
    return [{"DeviceIndex": 0, "SubnetId": subnet_id, "PrivateIpAddress": address, "DeleteOnTermination": True}]


def attach_data_volumes(ec2: Any, host: LabHost, instance_id: str) -> None:
    """The host's data volumes (Terraform's aws_ebs_volume per device), attached to the instance."""
    for device in host.data_devices:
        volume = ec2.create_volume(AvailabilityZone=host.subnet.zone, Size=10, VolumeType="gp3")
        ec2.attach_volume(VolumeId=volume["VolumeId"], InstanceId=instance_id, Device=device)


def seed(hosts: list[LabHost], vals: dict[str, Any], url: str = URL) -> bool:
    """Create the VPC, subnets, instances, Elastic IP and volumes of an environment as Terraform
    would (tags, zones, addresses); False if the emulator already holds exactly these."""
    ec2 = client(region=vals["region"], url=url)
    if seeded_names(ec2, vals["env"]) == {h.name for h in hosts}:
        return False
    if seeded_names(ec2, vals["env"]):
        raise LabError(f"the EC2 emulator at {url} holds another {vals['env']} fleet; `bin/lab down` and up again")
    default_tags = {"Project": vals["project"], "Environment": vals["env"], "ManagedBy": "terraform"}
    vpc = ec2.create_vpc(CidrBlock=vals["vpc_cidr"])["Vpc"]["VpcId"]
    subnet_ids: dict[str, str] = {}
    for kind_subnets in terraform.subnets(vals).values():
        for subnet in kind_subnets:
            subnet_ids[subnet.cidr.exploded] = ec2.create_subnet(
                VpcId=vpc, CidrBlock=str(subnet.cidr), AvailabilityZone=subnet.zone)["Subnet"]["SubnetId"]
    image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    for host in hosts:
        tags = {**default_tags, "Role": host.role, "Name": host.name}
        instance = ec2.run_instances(
            ImageId=image, InstanceType=host.instance_type, MinCount=1, MaxCount=1,
            NetworkInterfaces=primary_interface(subnet_ids[host.subnet.cidr.exploded], host.address),
            TagSpecifications=[{"ResourceType": "instance",
                                "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}],
        )["Instances"][0]
        if host.public_ip:
            eip = ec2.allocate_address(Domain="vpc", Address=host.public_ip)
            ec2.associate_address(InstanceId=instance["InstanceId"], AllocationId=eip["AllocationId"])
        attach_data_volumes(ec2, host, instance["InstanceId"])
    return True


def replace_instance(host: LabHost, address: str, url: str = URL) -> str:
    """What a lost instance's replacement looks like to the inventory: the running instance
    tagged Name=`host.name` is terminated and another is launched with its tags, type, subnet
    and volumes at `address` (EC2 picks a new private address; Terraform pins none). Returns
    the new instance's id. The lab test of replace_qdrant_node.yml uses it."""
    ec2 = client(url=url)
    found = [inst for page in ec2.get_paginator("describe_instances").paginate(
                 Filters=[{"Name": "tag:Name", "Values": [host.name]},
                          {"Name": "instance-state-name", "Values": ["running"]}])
             for reservation in page["Reservations"] for inst in reservation["Instances"]]
    if len(found) != 1:
        raise LabError(f"{host.name}: expected one running instance in the EC2 emulator, found {len(found)}")
    old = found[0]
    ec2.terminate_instances(InstanceIds=[old["InstanceId"]])
    instance = ec2.run_instances(
        ImageId=old["ImageId"], InstanceType=old["InstanceType"], MinCount=1, MaxCount=1,
        NetworkInterfaces=primary_interface(old["SubnetId"], address),
        TagSpecifications=[{"ResourceType": "instance", "Tags": old["Tags"]}],
    )["Instances"][0]
    attach_data_volumes(ec2, host, instance["InstanceId"])
    return instance["InstanceId"]


def bucket_name(vals: dict[str, Any], purpose: str) -> str:
    """The lab's bucket names (Terraform adds the account id; the lab has none)."""
    return f"{vals['project']}-{vals['env']}-{purpose}"


def write_outputs(hosts: list[LabHost], vals: dict[str, Any]) -> Path:
    """The lab's terraform_outputs.yml: the keys terraform/bin/export-outputs writes for prod."""
    bastion = next(h for h in hosts if h.role == "bastion")
    outputs = {
        "environment": vals["env"],
        "region": vals["region"],
        "bastion_public_ip": bastion.public_ip,
        "bastion_private_ip": bastion.address,
        "nlb_dns_name": "",
        "nlb_zone_id": "",
        "backups_bucket": bucket_name(vals, "backups"),
        "documents_bucket": bucket_name(vals, "documents"),
        "documents_replica_bucket": "",
        "kms_key_arn": "",
        "secret_arns": {},
        "vpc_cidr": vals["vpc_cidr"],
        "admin_cidrs": list(vals["admin_cidrs"]),
        "acme_challenge": "http-01",
        "route53_zone_id": "",
    }
    # The format of terraform/bin/export-outputs: one line per output, the value as JSON.
    body = "".join(f"terraform_{k}: {json.dumps(v, sort_keys=True)}\n" for k, v in sorted(outputs.items()))
    OUTPUTS_FILE.parent.mkdir(parents=True, exist_ok=True)
    OUTPUTS_FILE.write_text(
        "---\n# GENERATED by bin/lab up: what terraform/bin/export-outputs writes for prod, for the\n"
        "# lab (which has no Terraform state). Do not edit; git-ignored.\n" + body)
    return OUTPUTS_FILE


def ensure() -> list[LabHost]:
    """The emulator answers and holds the lab fleet; the outputs file is written."""
    vals = fleet_values()
    hosts = plan(vals)
    start()
    seed(hosts, vals)
    write_outputs(hosts, vals)
    return hosts
