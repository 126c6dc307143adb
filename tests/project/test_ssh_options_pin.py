"""Every playbook and runbook pins the SSH options once (playbooks/tasks/ssh_options.yml).

Without the pin a play still works, only slower: Ansible templates the nested connection
variables again in every task on every host (docs/deploy-speed.md). So nothing else would
notice a new runbook that forgets it: this test does. The pin goes first, before any task
reaches a host over SSH; preflight.yml is the exception (its checks must name a missing
bastion address in their own words before anything resolves the options).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
PLAYBOOKS = sorted([*(REPO / "playbooks").glob("*.yml"), *(REPO / "playbooks" / "runbooks").glob("*.yml")])
EXEMPT = {"preflight.yml"}


def first_task(play: dict) -> dict | None:
    for section in ("pre_tasks", "tasks"):
        if play.get(section):
            return play[section][0]
    return None


def pins(task: dict | None) -> bool:
    return bool(task) and str(task.get("ansible.builtin.import_tasks", "")).endswith("tasks/ssh_options.yml")


def plays_of(path: Path) -> list[dict]:
    """The plays a playbook runs, in order, those of the playbooks it imports included."""
    plays = []
    for entry in yaml.safe_load(path.read_text()):
        imported = entry.get("ansible.builtin.import_playbook")
        if imported:
            plays += plays_of(path.parent / imported)
        elif "hosts" in entry:
            plays.append(entry)
    return plays


@pytest.mark.parametrize("path", [p for p in PLAYBOOKS if p.name not in EXEMPT], ids=lambda p: p.relative_to(REPO).as_posix())
def test_the_first_play_on_the_fleet_pins_the_ssh_options_first(path):
    plays = plays_of(path)
    fleet = [p for p in plays if p["hosts"] != "localhost" and not p.get("connection") == "local"]
    assert fleet, f"{path.name}: no play on the fleet"
    assert pins(first_task(fleet[0])), (
        f"{path.name}: the play {fleet[0].get('name')!r} does not import tasks/ssh_options.yml as its first task")
    for play in fleet:
        tasks = [*play.get("pre_tasks", []), *play.get("tasks", [])]
        imports = [i for i, t in enumerate(tasks) if pins(t)]
        assert imports in ([], [0]), f"{path.name}: {play.get('name')!r} pins the SSH options after other tasks"


def test_the_pin_exists_and_is_tagged_always():
    task = yaml.safe_load((REPO / "playbooks" / "tasks" / "ssh_options.yml").read_text())[0]
    assert "always" in task["tags"]
    assert set(task["ansible.builtin.set_fact"]) == {"ansible_ssh_common_args", "ansible_ssh_private_key_file"}
