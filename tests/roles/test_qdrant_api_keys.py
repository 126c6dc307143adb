"""roles/qdrant tasks/api_keys.yml: which keys a peer is given, from what its config holds; and
roles/prometheus_stack tasks/qdrant_key.yml, which keeps Prometheus's key the same way.

During a rotation (playbooks/runbooks/rotate_secrets.yml) a peer keeps the previous keys it holds
until the switch phase; outside one, a key other than the one held is refused unless switched.
Each case is a host over the local connection whose held config is a file in tmp_path (the
role's fixed path is replaced with extra vars, which outrank role vars); one run for all.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
ANSIBLE_PLAYBOOK = Path(sys.executable).with_name("ansible-playbook")
NEW, OLD, OTHER = "new-full-access-key", "old-full-access-key", "some-other-key"
NEW_RO, OLD_RO = "new-read-only-key", "old-read-only-key"

# case: (held keys or None for a new host, role variables, expected keys or the refused variables)
CASES: dict[str, tuple[dict[str, str] | None, dict[str, Any], dict[str, str] | list[str]]] = {
    "new_host": (None, {}, {"api_key": NEW, "read_only_api_key": NEW_RO}),
    "converged": ({"api_key": NEW, "read_only_api_key": NEW_RO}, {}, {"api_key": NEW, "read_only_api_key": NEW_RO}),
    "rotation_before_switch": (
        {"api_key": OLD, "read_only_api_key": OLD_RO},
        {"qdrant_api_key_previous": OLD, "qdrant_read_only_api_key_previous": OLD_RO},
        {"api_key": OLD, "read_only_api_key": OLD_RO}),
    "rotation_switch": (
        {"api_key": OLD, "read_only_api_key": OLD_RO},
        {"qdrant_api_key_previous": OLD, "qdrant_read_only_api_key_previous": OLD_RO, "qdrant_api_key_switch": True},
        {"api_key": NEW, "read_only_api_key": NEW_RO}),
    "rotation_after_switch": (
        {"api_key": NEW, "read_only_api_key": NEW_RO},
        {"qdrant_api_key_previous": OLD, "qdrant_read_only_api_key_previous": OLD_RO},
        {"api_key": NEW, "read_only_api_key": NEW_RO}),
    "changed_without_rotation": ({"api_key": OTHER, "read_only_api_key": NEW_RO}, {}, ["qdrant_api_key"]),
    "changed_read_only_during_rotation": (
        {"api_key": OLD, "read_only_api_key": OTHER},
        {"qdrant_api_key_previous": OLD, "qdrant_read_only_api_key_previous": OLD_RO},
        ["qdrant_read_only_api_key"]),
    "changed_and_switched": (
        {"api_key": OTHER, "read_only_api_key": OTHER}, {"qdrant_api_key_switch": True},
        {"api_key": NEW, "read_only_api_key": NEW_RO}),
}


def test_a_peer_keeps_a_rotations_previous_keys_until_the_switch_and_refuses_other_changes(tmp_path: Path) -> None:
    hosts: dict[str, Any] = {}
    for case, (held, variables, _) in CASES.items():
        config = tmp_path / f"{case}.yaml"
        if held is not None:
            config.write_text(yaml.safe_dump({"service": {"host": "10.0.2.10", **held}}))
        hosts[case] = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable,
                       "held_config": str(config), "qdrant_api_key": NEW, "qdrant_read_only_api_key": NEW_RO,
                       **variables}
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(yaml.safe_dump({"all": {"hosts": hosts}}))
    document = _run(tmp_path, hosts, "qdrant", "api_keys", "__qdrant_service_keys | to_json",
                    {"_qdrant_config_file": "{{ held_config }}"})
    tasks = {task["task"]["name"].removeprefix("qdrant : "): task["hosts"] for task in document["plays"][0]["tasks"]}
    for case, (_, _, expected) in CASES.items():
        if isinstance(expected, dict):
            shown = tasks["Show the keys"].get(case)
            assert shown is not None, f"{case}: {tasks['Refuse an API key change outside a rotation'].get(case)}"
            assert json.loads(shown["msg"]) == expected, case
        else:
            refusal = tasks["Refuse an API key change outside a rotation"][case]
            assert refusal.get("failed"), case
            assert refusal["msg"].startswith(", ".join(expected) + ":"), refusal["msg"]
            assert "rotate_secrets.yml" in refusal["msg"]
            assert case not in tasks.get("Show the keys", {})
    # the tasks that read or hold the keys show none of them (no_log)
    for name in ("Read the API keys the peer holds", "Choose the API keys for the peer"):
        text = json.dumps(tasks[name])
        assert not [key for key in (NEW, OLD, OTHER, NEW_RO, OLD_RO) if key in text], name


def _run(tmp_path: Path, hosts: dict[str, Any], role: str, tasks_from: str, show: str,
         extra: dict[str, str], check: bool = False) -> dict[str, Any]:
    """ansible-playbook over `hosts` running `role`'s `tasks_from`, then a debug of `show`: the
    JSON callback's document."""
    inventory = tmp_path / f"{role}-inventory.yml"
    inventory.write_text(yaml.safe_dump({"all": {"hosts": hosts}}))
    playbook = tmp_path / f"{role}-keys.yml"
    playbook.write_text(yaml.safe_dump([{
        "name": "Keys", "hosts": "all", "gather_facts": False,
        "tasks": [
            {"name": "Choose the keys", "ansible.builtin.include_role": {
                "name": role, "tasks_from": tasks_from, "public": True}},
            {"name": "Show the keys", "ansible.builtin.debug": {"msg": "{{ %s }}" % show}},
        ]}]))
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env.update({"ANSIBLE_STDOUT_CALLBACK": "ansible.builtin.json", "ANSIBLE_LOAD_CALLBACK_PLUGINS": "True"})
    done = subprocess.run(
        [str(ANSIBLE_PLAYBOOK), "-i", str(inventory), str(playbook), "-e", json.dumps(extra),
         *(["--check"] if check else [])],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=False)
    document, _ = json.JSONDecoder().raw_decode(done.stdout, done.stdout.index("{"))
    return dict(document)


def test_prometheus_keeps_the_previous_read_only_key_it_holds_until_the_switch(tmp_path: Path) -> None:
    cases = {  # case: (key file content or None, role variables, key written)
        "new_host": (None, {}, NEW_RO),
        "no_rotation": (OLD_RO, {}, NEW_RO),
        "rotation_before_switch": (OLD_RO, {"prometheus_stack_qdrant_api_key_previous": OLD_RO}, OLD_RO),
        "rotation_switch": (OLD_RO, {"prometheus_stack_qdrant_api_key_previous": OLD_RO,
                                     "prometheus_stack_qdrant_api_key_switch": True}, NEW_RO),
        "rotation_after_switch": (NEW_RO, {"prometheus_stack_qdrant_api_key_previous": OLD_RO}, NEW_RO),
    }
    hosts: dict[str, Any] = {}
    for case, (held, variables, _) in cases.items():
        path = tmp_path / f"{case}.key"
        if held is not None:
            path.write_text(held)
        hosts[case] = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable,
                       "held_key": str(path), "prometheus_stack_qdrant_api_key": NEW_RO, **variables}
    # --check: the copy is only shown; the user is root so that it needs no prometheus group
    document = _run(tmp_path, hosts, "prometheus_stack", "qdrant_key", "_prometheus_stack_qdrant_api_key_written",
                    {"_prometheus_stack_qdrant_credentials_file": "{{ held_key }}", "_prometheus_stack_user": "root"},
                    check=True)
    shown = {task["task"]["name"]: task["hosts"] for task in document["plays"][0]["tasks"]}["Show the keys"]
    assert {case: shown[case]["msg"] for case in cases} == {case: expected for case, (_, _, expected) in cases.items()}
