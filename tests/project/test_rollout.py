"""Rollout batches (plugins/filter/rollout.py) and the drain's wiring in the tier playbooks."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "plugins" / "filter"))
from rollout import serial_batches, serial_problem  # noqa: E402


@pytest.mark.parametrize(("serial", "hosts", "batches"), [
    (1, 2, [1, 1]),
    (["1", "100%"], 2, [1, 1]),
    (["1", "100%"], 4, [1, 3]),
    (["1", "50%"], 4, [1, 2, 1]),
    (["1", "50%"], 2, [1, 1]),
    ("100%", 2, [2]),
    ("30%", 10, [3, 3, 3, 1]),
    ("10%", 3, [1, 1, 1]),  # rounded down, at least one
    (0, 3, [3]),  # 0: every host at once
    ([], 3, [3]),
    (5, 3, [3]),
])
def test_batches_follow_ansible_core(serial, hosts, batches):
    assert serial_batches(serial, hosts) == batches


@pytest.mark.parametrize(("serial", "hosts"), [
    ("100%", 2), (2, 2), (0, 2), ("100%", 3), (["2"], 2), ([], 2)])
def test_a_batch_of_the_whole_tier_is_a_problem(serial, hosts):
    assert "take all" in serial_problem(serial, hosts)


@pytest.mark.parametrize(("serial", "hosts"), [(1, 2), (["1", "50%"], 4), (["1", "100%"], 3), ("100%", 1)])
def test_batches_that_leave_a_host_serving_pass(serial, hosts):
    assert serial_problem(serial, hosts) == ""


@pytest.mark.parametrize("serial", ["half", ["1", "x%"], None])
def test_a_value_that_is_no_batch_size_is_named(serial):
    assert "neither a host count nor a percentage" in serial_problem(serial, 2)


def test_the_shipped_rollout_values_leave_a_host_serving_at_every_size():
    values = yaml.safe_load((REPO / "playbooks" / "vars" / "rollout.yml").read_text())
    for name in ("querygpt_edge_serial", "querygpt_backend_serial"):
        for hosts in range(1, 12):
            assert serial_problem(values[name], hosts) == "", (name, hosts)


@pytest.mark.parametrize(("playbook", "hook", "serial"), [
    ("edge.yml", "nginx_drain_tasks", "querygpt_edge_serial"),
    ("app.yml", "backend_drain_tasks", "querygpt_backend_serial"),
])
def test_the_tier_playbooks_drain_and_take_serial_from_the_variable(playbook, hook, serial):
    # the play that restarts (the edge's frontend play has nothing to drain and no serial)
    play = next(p for p in yaml.safe_load((REPO / "playbooks" / playbook).read_text()) if "serial" in p)
    assert play["serial"] == "{{ " + serial + " }}"
    assert "vars/rollout.yml" in play["vars_files"]
    assert play["vars"][hook] == "{{ playbook_dir }}/tasks/drain.yml"
    assert play["max_fail_percentage"] == 0
    assert (REPO / "playbooks" / "tasks" / "drain.yml").is_file()


def test_the_frontend_reaches_every_edge_before_nginx_rolls():
    """Every edge holds a new frontend release's assets before any edge serves its index.html:
    the frontend runs in a play of its own, on every edge at once, before the serial nginx play."""
    plays = yaml.safe_load((REPO / "playbooks" / "edge.yml").read_text())
    roles = [[r["role"] for r in p["roles"]] for p in plays]
    assert roles == [["firewall", "frontend"], ["internal_pki", "nginx"]]
    assert "serial" not in plays[0] and plays[0]["hosts"] == plays[1]["hosts"] == "edge"
    assert plays[0]["max_fail_percentage"] == 0


def _tasks(play: dict) -> list[dict]:
    return [t for key in ("pre_tasks", "tasks", "post_tasks") for t in play.get(key) or []]


def test_the_tier_playbooks_end_by_putting_their_host_back():
    """A host a failed rollout or a runbook left out of its pool is put back by its tier's
    next run, --limit <host> included (no-op when it is in)."""
    app = yaml.safe_load((REPO / "playbooks" / "app.yml").read_text())[-1]
    assert app["post_tasks"][-1]["ansible.builtin.include_tasks"] == "tasks/backend_rejoined.yml"
    rejoined = yaml.safe_load((REPO / "playbooks" / "tasks" / "backend_rejoined.yml").read_text())
    assert rejoined[0]["vars"] == {"querygpt_drain_action": "in", "querygpt_drain_pool": "backend"}
    edge = yaml.safe_load((REPO / "playbooks" / "edge.yml").read_text())[-1]
    put_back = edge["post_tasks"][-1]
    assert put_back["ansible.builtin.include_tasks"] == "tasks/drain.yml"
    assert put_back["vars"] == {"querygpt_drain_action": "in", "querygpt_drain_pool": "edge"}


def test_the_debian_upgrade_drains_its_host_before_any_change_and_leaves_it_out():
    play = yaml.safe_load((REPO / "playbooks" / "runbooks" / "upgrade_debian.yml").read_text())[1]
    names = [t["name"] for t in _tasks(play)]
    drains = [t for t in _tasks(play) if str(t.get("ansible.builtin.include_tasks", "")).endswith("drain.yml")]
    assert [t["vars"]["querygpt_drain_action"] for t in drains] == ["out"], "site.yml puts it back, not the runbook"
    assert drains[0]["vars"]["querygpt_drain_pool"] == "{{ querygpt_reboot_pool }}"
    # the pool and the boot check come from the one file rolling_reboot.yml reads too
    reboot = yaml.safe_load((REPO / "playbooks" / "runbooks" / "rolling_reboot.yml").read_text())[1]
    assert play["vars_files"] == reboot["vars_files"] == ["../vars/reboot.yml"]
    # the marker that makes a later run resume an interrupted upgrade comes before any change to
    # the system, and goes only once the host reports Debian 13
    first_change = names.index("Record that the upgrade has started")
    assert first_change + 1 == names.index("Point apt at Debian 13 (deb822)")
    assert names.index(drains[0]["name"]) < names.index("Back up every collection before the qdrant host changes") < first_change
    assert names.index("Check the host now runs Debian 13") + 1 == names.index("Record that the upgrade is done")
    assert "not __upgrade_unfinished.stat.exists" in _tasks(play)[names.index("Skip a host that already runs Debian 13")]["when"]
    # a Qdrant peer: the cluster is whole before it goes down, and again before the run ends
    replicas = [i for i, t in enumerate(_tasks(play))
                if (t.get("ansible.builtin.include_role") or {}).get("tasks_from") == "replicas_active"]
    assert len(replicas) == 2 and replicas[0] < first_change < names.index("Reboot into Debian 13") < replicas[1]
    # a new boot is told the same way, on an instance and on a lab container
    reboots = [t["ansible.builtin.reboot"] for p in (play, reboot) for t in _tasks(p) if "ansible.builtin.reboot" in t]
    assert [r["boot_time_command"] for r in reboots] == ["{{ querygpt_boot_time_command }}"] * 2


@pytest.mark.parametrize(("groups", "pool"), [
    (["edge"], "edge"), (["backend"], "backend"), (["qdrant"], ""), (["monitoring"], ""), ([], ""),
    (["aws_ec2", "edge", "zone_eu_central_1a"], "edge"),  # as the aws_ec2 inventory plugin groups a host
])
def test_the_pool_a_rebooted_host_leaves_follows_its_groups(groups, pool):
    from ansible.parsing.dataloader import DataLoader  # noqa: PLC0415 - Ansible only where it is needed
    from ansible.template import Templar, trust_as_template  # noqa: PLC0415
    shared = yaml.safe_load((REPO / "playbooks" / "vars" / "reboot.yml").read_text())
    templar = Templar(loader=DataLoader(), variables={"group_names": groups})
    assert templar.template(trust_as_template(shared["querygpt_reboot_pool"])) == pool
