"""The production drain of an edge (playbooks/tasks/drain.yml with querygpt_lb_kind: nlb):
deregistered from both NLB target groups and registered again, against a local AWS API (moto)
holding the target groups as terraform/edge.tf names them. The lab drains through HAProxy
instead, so this is the only test that runs the production path. nginx's reload on the edge
is answered by a stand-in `systemctl` that records the call.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import boto3
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = REPO / ".venv" / "bin"
REGION = "eu-central-1"


@pytest.fixture
def nlb(moto_url: str) -> dict:
    """An edge instance registered in <project>-prod-edge-{http,https}, as Terraform leaves it."""
    kw = {"region_name": REGION, "endpoint_url": moto_url, "aws_access_key_id": "testing",
          "aws_secret_access_key": "testing"}
    ec2, elb = boto3.client("ec2", **kw), boto3.client("elbv2", **kw)
    vpc = ec2.create_vpc(CidrBlock="10.40.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.40.0.0/20", AvailabilityZone=f"{REGION}a")["Subnet"]["SubnetId"]
    image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    instance = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1, SubnetId=subnet)["Instances"][0]["InstanceId"]
    project = yaml.safe_load((REPO / "group_vars/all/project.yml").read_text())["querygpt_project"]
    # terraform/edge.tf: name = "${local.name}-edge-${each.key}", local.name = "${var.project}-${var.env}"
    assert '"${local.name}-edge-${each.key}"' in (REPO / "terraform/edge.tf").read_text()
    groups = {}
    for key, port in (("http", 80), ("https", 443)):
        arn = elb.create_target_group(Name=f"{project}-prod-edge-{key}", Protocol="TCP", Port=port, VpcId=vpc,
                                      TargetType="instance")["TargetGroups"][0]["TargetGroupArn"]
        elb.register_targets(TargetGroupArn=arn, Targets=[{"Id": instance, "Port": port}])
        groups[key] = arn
    return {"elb": elb, "instance": instance, "groups": groups, "url": moto_url}


def targets(nlb: dict) -> dict[str, list[tuple[str, int, str]]]:
    out = {}
    for key, arn in nlb["groups"].items():
        health = nlb["elb"].describe_target_health(TargetGroupArn=arn)["TargetHealthDescriptions"]
        out[key] = [(h["Target"]["Id"], h["Target"]["Port"], h["TargetHealth"]["State"]) for h in health]
    return out


def drain(nlb: dict, tmp_path: Path, action: str) -> subprocess.CompletedProcess:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    systemctl = bin_dir / "systemctl"
    systemctl.write_text("#!/bin/sh\n"
                         f"echo \"$@\" >> {tmp_path / 'systemctl.calls'}\n"
                         "[ \"$1\" = show ] && printf 'Id=nginx.service\\nLoadState=loaded\\nActiveState=active\\n"
                         "SubState=running\\nUnitFileState=enabled\\n'\nexit 0\n")
    systemctl.chmod(0o755)
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(yaml.safe_dump({"all": {"hosts": {"edge-1": {
        "ansible_connection": "local", "ansible_python_interpreter": str(VENV_BIN / "python"),
        # what the aws_ec2 inventory and terraform_outputs.yml give a prod edge
        "ec2_instance_id": nlb["instance"], "ec2_tags": {"Environment": "prod", "Role": "edge"},
        "terraform_region": REGION}}}}))
    play = tmp_path / "play.yml"
    play.write_text(yaml.safe_dump([{"hosts": "edge-1", "gather_facts": False, "tasks": [{
        "ansible.builtin.include_tasks": str(REPO / "playbooks/tasks/drain.yml"),
        "vars": {"querygpt_drain_action": action, "querygpt_drain_pool": "edge"}}]}]))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "ANSIBLE_"))}
    env.update({"AWS_URL": nlb["url"], "AWS_ENDPOINT_URL": nlb["url"], "AWS_ACCESS_KEY_ID": "testing",
                "AWS_SECRET_ACCESS_KEY": "testing", "PATH": f"{bin_dir}{os.pathsep}{env['PATH']}",
                "ANSIBLE_LOCAL_TEMP": str(tmp_path / "tmp"), "ANSIBLE_HOME": str(tmp_path / "home"),
                "ANSIBLE_NOCOLOR": "1", "ANSIBLE_DEPRECATION_WARNINGS": "False"})
    # The wiring as every environment has it (listeners from the ports, the drain's timeout),
    # and prod's own choice of load balancer (querygpt_lb_kind: nlb).
    files = [REPO / "group_vars/all" / f"{name}.yml" for name in ("project", "ports", "services", "rollout")]
    files.append(REPO / "inventories/prod/group_vars/all/environment.yml")
    wiring = [arg for path in files for arg in ("-e", f"@{path}")]
    done = subprocess.run([str(VENV_BIN / "ansible-playbook"), "-i", str(inventory), str(play), *wiring],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    return done


def test_an_edge_leaves_both_target_groups_and_comes_back_healthy(nlb, tmp_path):
    instance = nlb["instance"]
    assert targets(nlb) == {"http": [(instance, 80, "healthy")], "https": [(instance, 443, "healthy")]}

    drain(nlb, tmp_path, "out")
    assert targets(nlb) == {"http": [], "https": []}
    # the edge's own clients were told to reconnect elsewhere
    assert "reload nginx" in (tmp_path / "systemctl.calls").read_text().splitlines()

    done = drain(nlb, tmp_path, "in")
    assert targets(nlb) == {"http": [(instance, 80, "healthy")], "https": [(instance, 443, "healthy")]}
    assert re.search(r"changed: \[edge-1 -> localhost\] => \(item=https\)", done.stdout)
    assert (tmp_path / "systemctl.calls").read_text().count("reload nginx") == 1  # `in` reloads nothing
