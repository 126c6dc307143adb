"""terraform/bin/export-outputs turns `terraform output -json` into the inventory's
terraform_outputs.yml, and refuses another environment's state."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from terraform_helpers import INVENTORIES, REPO, TERRAFORM, VENV_BIN

SCRIPT = TERRAFORM / "bin" / "export-outputs"


def _outputs(env: str) -> dict:
    """A `terraform output -json` document shaped like outputs.tf's."""
    return {
        "environment": {"sensitive": False, "type": "string", "value": env},
        "bastion_public_ip": {"sensitive": False, "type": "string", "value": "198.51.100.7"},
        "nlb_dns_name": {
            "sensitive": False,
            "type": "string",
            "value": "querygpt-prod-edge-1.elb.eu-central-1.amazonaws.com",
        },
        "secret_arns": {
            "sensitive": False,
            "type": ["map", "string"],
            "value": {
                "qdrant-api-key": "arn:aws:secretsmanager:eu-central-1:111122223333:secret:querygpt/prod/qdrant-api-key-AbCdEf"
            },
        },
        "acme_challenge": {"sensitive": False, "type": "string", "value": "dns-01"},
        "route53_zone_id": {"sensitive": False, "type": "string", "value": "Z0123456789ABCDEFGHIJ"},
        "something_secret": {"sensitive": True, "type": "string", "value": "do-not-write"},
    }


def _run(tmp_path: Path, env: str, outputs: dict) -> subprocess.CompletedProcess:
    source = tmp_path / "outputs.json"
    source.write_text(json.dumps(outputs))
    return subprocess.run(
        [sys.executable, str(SCRIPT), env, "--from-json", str(source), "--inventory-dir", str(tmp_path / env)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_writes_prefixed_outputs_as_yaml(tmp_path: Path) -> None:
    done = _run(tmp_path, "prod", _outputs("prod"))
    assert done.returncode == 0, done.stderr
    written = yaml.safe_load((tmp_path / "prod" / "group_vars" / "all" / "terraform_outputs.yml").read_text())
    assert written["terraform_bastion_public_ip"] == "198.51.100.7"
    assert written["terraform_environment"] == "prod"
    assert written["terraform_secret_arns"]["qdrant-api-key"].startswith("arn:aws:secretsmanager:")
    assert written["terraform_acme_challenge"] == "dns-01"
    assert written["terraform_route53_zone_id"] == "Z0123456789ABCDEFGHIJ"
    assert "terraform_something_secret" not in written, "sensitive outputs must not be written"


def test_refuses_another_environments_state(tmp_path: Path) -> None:
    done = _run(tmp_path, "prod", _outputs("staging"))
    assert done.returncode == 1
    assert "staging" in done.stderr and "backend.tfvars" in done.stderr
    assert not (tmp_path / "prod" / "group_vars" / "all" / "terraform_outputs.yml").exists()


def test_every_output_the_playbooks_read_exists() -> None:
    """The wiring, the environments and the playbooks read terraform_<name>: each <name> must
    be an output of outputs.tf (and so in terraform_outputs.yml after export-outputs)."""
    outputs_tf = (TERRAFORM / "outputs.tf").read_text()
    readers = [*(REPO / "group_vars").rglob("*.yml"), *INVENTORIES.glob("*/group_vars/**/*.yml"),
               *(REPO / "playbooks").rglob("*.yml"), *(REPO / "lab" / "playbooks").glob("*.yml")]
    names = {(path, name) for path in readers
             for name in re.findall(r"\bterraform_(\w+)", path.read_text()) if name != "outputs"}
    assert any(name == "bastion_public_ip" for _, name in names), "nothing reads the bastion's address"
    for path, name in sorted(names):
        assert f'output "{name}"' in outputs_tf, f"{path.relative_to(REPO)}: terraform_{name} has no output {name}"


def test_exported_bastion_address_becomes_the_jump_host(tmp_path: Path) -> None:
    """End to end: export into a copy of the prod inventory, then let Ansible template the
    connection variables (group_vars/all/connection.yml) of a bastion and an edge host. The
    jump to the bastion carries the same host-key policy as the target: a fresh operator
    machine neither prompts nor fails on the bastion's key."""
    inventory = tmp_path / "prod"
    shutil.copytree(
        INVENTORIES / "prod" / "group_vars",
        inventory / "group_vars",
        ignore=shutil.ignore_patterns("vault.yml", "terraform_outputs.yml"),
    )
    tags = "{ec2_tags: {Environment: prod, Role: %s}}"
    (inventory / "hosts.yml").write_text(
        "all:\n  children:\n"
        f"    bastion: {{hosts: {{10.40.0.10: {tags % 'bastion'}}}}}\n"
        f"    edge: {{hosts: {{10.40.128.10: {tags % 'edge'}}}}}\n")
    assert _run(tmp_path, "prod", _outputs("prod")).returncode == 0
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env.update(
        {
            "ANSIBLE_LOCAL_TEMP": str(tmp_path / "tmp"),
            "ANSIBLE_HOME": str(tmp_path / "home"),
            "ANSIBLE_DEPRECATION_WARNINGS": "False",
            "ANSIBLE_LOAD_CALLBACK_PLUGINS": "True",
            "ANSIBLE_STDOUT_CALLBACK": "ansible.builtin.json",
        }
    )
    done = subprocess.run(
        [
            str(VENV_BIN / "ansible"),
            "-i",
            str(inventory / "hosts.yml"),
            "all",
            "-m",
            "ansible.builtin.debug",
            "-a",
            "var=ansible_ssh_common_args",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    # ansible.cfg may enable timing callbacks that print around the JSON document.
    start = 0 if done.stdout.startswith("{") else done.stdout.index("\n{") + 1
    document, _ = json.JSONDecoder().raw_decode(done.stdout, start)
    hosts = document["plays"][0]["tasks"][0]["hosts"]
    edge = hosts["10.40.128.10"]["ansible_ssh_common_args"]
    bastion = hosts["10.40.0.10"]["ansible_ssh_common_args"]
    jump = re.search(r'ProxyCommand="ssh (.*) -W %h:%p admin@198\.51\.100\.7"', edge)
    assert jump, edge
    # the jump's own connection: accept a new bastion key, refuse a changed one, same file
    assert "StrictHostKeyChecking=accept-new" in jump.group(1)
    assert "UserKnownHostsFile=~/.ssh/known_hosts.querygpt-prod" in jump.group(1)
    assert "StrictHostKeyChecking=accept-new" in bastion and "Proxy" not in bastion

    # The playbooks resolve these options once per run (playbooks/tasks/ssh_options.yml): the
    # facts must be what group_vars gives each host, and prod, which names no key file, gets
    # none. The playbook sits beside a link to the project's group_vars, as playbooks/ does.
    (tmp_path / "group_vars").symlink_to(REPO / "group_vars")
    (tmp_path / "pin.yml").write_text(
        "- hosts: all\n  gather_facts: false\n  tasks:\n"
        f"    - ansible.builtin.import_tasks: {REPO / 'playbooks' / 'tasks' / 'ssh_options.yml'}\n"
        "    - ansible.builtin.debug:\n        msg: \"{{ {'args': ansible_ssh_common_args,"
        " 'key': ansible_ssh_private_key_file | default(None)} }}\"\n")
    pinned = subprocess.run([str(VENV_BIN / "ansible-playbook"), "-i", str(inventory / "hosts.yml"),
                             str(tmp_path / "pin.yml")], cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=60)
    assert pinned.returncode == 0, pinned.stdout + pinned.stderr
    start = 0 if pinned.stdout.startswith("{") else pinned.stdout.index("\n{") + 1
    tasks = json.JSONDecoder().raw_decode(pinned.stdout, start)[0]["plays"][0]["tasks"]
    assert tasks[0]["task"]["name"] == "Resolve this host's SSH options once for the run"
    for host, before in (("10.40.128.10", edge), ("10.40.0.10", bastion)):
        assert tasks[0]["hosts"][host]["ansible_facts"]["ansible_ssh_common_args"] == before
        assert tasks[1]["hosts"][host]["msg"] == {"args": before, "key": None}
