"""Rollouts under steady load, through the lab's load balancer (HAProxy on the `lb` host, the
NLB's stand-in): a frontend release, a rolling Qdrant upgrade, a rolling reboot of the edges
and of the backends, a zone outage and a PostgreSQL failover must each fail no request
(docs/architecture.md, "Rollouts and drain"). A backend's drained restart and an nginx reload
under load are the secrets and CA rotation drills' (test_lab_secrets_rotation.py,
test_lab_ca_rotation.py), which do both on every backend and edge: they are not run again here. The scenarios are benchmarks/rollouts.py's, which
prints the same figures; the load is benchmarks/load.py's: kept-alive clients and clients on new
connections, health checks and questions; the Ollama stand-in takes a small GPU model's time,
so questions are in flight when a host leaves its pool. A request that meets a kept-alive
connection closing under it is sent again, as browsers do, and counted apart (load.py). Every
service killed with SIGKILL answers again within 10 s, a rolling reboot of a tier of one
host is refused before anything changes, and a backend the Debian upgrade took out of the
edges' upstreams is put back by its site.yml run.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))
from labview import REPO, ansible_env, lb_edges  # noqa: E402
from rollouts import (  # noqa: E402
    FRONTEND, KILLS, PROBE_POINTS, PlaybookFailed, Rollout, Site, frontend_release, kill_recovery,
    playbook, postgres_failover, qdrant_kill, qdrant_upgrade, rolling_reboot, wait_qdrant_settled,
    zone_outage,
)


@pytest.fixture(scope="module")
def site(rollout_site) -> Site:
    return rollout_site


def assert_no_failure(rollout: Rollout, path: str = "/api/query") -> None:
    result = rollout.result
    assert not result.failures, result.describe_failures()
    # questions (or pages) really were in flight
    assert result.stats(path)["ok" if path == "/" else "requests"] >= 10, result.report()


def test_the_load_balancer_spreads_new_connections_over_both_edges(lab, site):
    def servers() -> dict[str, tuple[int, str]]:
        """HTTPS listener's servers: name -> (connections so far, status)."""
        return {edge: (int(row["stot"]), row["status"]) for edge, row in lb_edges(lab).items()}

    before = servers()
    assert set(before) == set(lab.groups["edge"]), before
    assert {status for _, status in before.values()} == {"UP"}, before
    for _ in range(8):  # a new connection each: round robin
        assert site.request("GET", "/api/health").status_code == 200
    after = servers()
    assert all(after[edge][0] - before[edge][0] >= 2 for edge in before), (before, after)


@pytest.mark.parametrize("unit", [u for u in KILLS if u != "qdrant"])  # qdrant: under load, below
def test_a_service_killed_with_sigkill_answers_again_within_10_s(lab, unit):
    """kill -9 of every process of the service: systemd starts it again (Restart=on-failure)."""
    back = kill_recovery(lab, unit)
    assert back <= 10, f"{unit} answered again only after {back:.1f} s"


def test_qdrant_killed_with_sigkill_under_questions_fails_no_query_and_answers_within_10_s(lab, site):
    """One peer of the cluster killed: the backend asks the next peer, which reads every shard
    from a live replica; the killed peer answers again and catches up with the writes it missed."""
    assert len(lab.groups["qdrant"]) >= 3, "the lab runs Qdrant in distributed mode"
    back, rollout = qdrant_kill(lab, site)
    assert_no_failure(rollout)
    assert back <= 10, f"qdrant answered again only after {back:.1f} s"


def test_a_rolling_qdrant_upgrade_under_load_fails_no_request(lab, site, tmp_path):
    """playbooks/data.yml with a new release: one peer at a time, each restarted and then waited
    for until every shard replica of every collection is Active again (roles/qdrant)."""
    # checks every peer runs the new release, then goes back to the pin: the next test's
    # data.yml runs refuse a downgrade
    rollout = qdrant_upgrade(lab, site, tmp_path)
    assert_no_failure(rollout)
    peers = len(lab.groups["qdrant"])
    assert rollout.output.count("RUNNING HANDLER [qdrant : Restart qdrant]") == peers
    assert rollout.output.count("TASK [qdrant : Check every shard replica of each collection is Active]") == peers


@pytest.mark.parametrize("tier", ["edge", "backend"])
def test_a_rolling_reboot_under_load_fails_no_request(lab, site, tier):
    # rolling_reboot() checks that every host of the tier did reboot
    assert_no_failure(rolling_reboot(lab, site, tier))


def test_a_rolling_reboot_of_a_one_host_tier_is_refused_before_any_change(lab):
    host = lab.groups["monitoring"][0]
    assert len(lab.groups["monitoring"]) == 1
    before = lab.exec(host, "cut -d ' ' -f 22 /proc/1/stat").stdout.strip()
    done = subprocess.run([str(REPO / ".venv/bin/ansible-playbook"), "playbooks/runbooks/rolling_reboot.yml",
                           "-i", "inventories/lab", "-e", "reboot_hosts=monitoring"],
                          cwd=REPO, env=ansible_env(), capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode != 0, done.stdout[-3000:]
    assert "reboot_allow_outage:" in done.stdout and "has no peer to serve while it" in done.stdout, done.stdout[-3000:]
    assert "TASK [Reboot]" not in done.stdout
    assert lab.exec(host, "cut -d ' ' -f 22 /proc/1/stat").stdout.strip() == before


def test_a_backend_the_debian_upgrade_took_out_is_put_back_by_its_site_run(lab):
    """upgrade_debian.yml takes a backend out of every edge's upstreams before any change,
    reboots it and leaves it out; `site.yml --limit <host>` (docs/upgrading.md) converges it
    and puts it back, as app.yml does for a backend that a failed rollout left out
    (docs/architecture.md, "Rollouts and drain"). The lab runs Debian 13, which the runbook
    skips: the host gets the runbook's marker, so the run resumes an upgrade it "started"."""
    backend = lab.groups["backend"][-1]
    line = rf"^\s*server {re.escape(lab.address(backend))}:[0-9]+ "
    marker = "/var/lib/querygpt-upgrade-debian"

    def flags() -> dict[str, str]:
        return {edge: lab.exec(edge, f"grep -cE '{line}.* down;$' /etc/nginx/nginx.conf").stdout.strip()
                for edge in lab.groups["edge"]}

    boot = lab.exec(backend, "cut -d ' ' -f 22 /proc/1/stat").stdout.strip()
    assert lab.exec(backend, f"echo 'lab test: an upgrade to resume' > {marker}").returncode == 0
    try:
        upgrade = playbook("playbooks/runbooks/upgrade_debian.yml", "-e", f"upgrade_hosts={backend}").stdout
        out_after_upgrade = flags()
        rebooted = lab.exec(backend, "cut -d ' ' -f 22 /proc/1/stat").stdout.strip() != boot
        marker_left = lab.exec(backend, f"test -e {marker}").returncode == 0
        converged = playbook("site.yml", "--limit", backend).stdout
    finally:
        left = flags()
        if any(count != "0" for count in left.values()):  # leave the lab serving for the next tests
            for edge in lab.groups["edge"]:
                lab.exec(edge, f"sed -E -i '/{line}/ s/ down;$/;/' /etc/nginx/nginx.conf && systemctl reload nginx")
        lab.exec(backend, f"rm -f {marker}")
    assert out_after_upgrade == dict.fromkeys(lab.groups["edge"], "1"), (out_after_upgrade, upgrade[-3000:])
    assert rebooted and not marker_left, upgrade[-3000:]
    assert "out of its pool (backend)" in " ".join(upgrade.split()), upgrade[-3000:]
    assert left == dict.fromkeys(lab.groups["edge"], "0"), (left, converged[-3000:])


def test_a_frontend_release_under_load_fails_no_page_and_keeps_open_pages_loading(lab, site, tmp_path):
    """A release reaches every edge at once and each edge's `current` moves: page loads during
    the release all succeed, though a page and its assets may come from different edges (two of
    the clients open a connection per request), and a browser that fetched the old index.html
    before still gets the old assets it names (from the pool of kept releases' assets)."""
    edges = lab.groups["edge"]
    old_index = site.request("GET", "/").text
    old_assets = re.findall(r'(?:src|href)="(/assets/[^"]+)"', old_index)
    assert old_assets, old_index

    def while_released(renames: dict[str, str]) -> None:
        assert set(old_assets) <= set(renames)
        new_index = site.request("GET", "/").text
        assert new_index != old_index and renames[old_assets[0]] in new_index
        # the page opened before the release: its assets still load, on either edge
        for path in old_assets:
            for e in edges:
                assert lab.exec(e, f"test -f {FRONTEND}/pool{path}").returncode == 0, (e, path)
            assert site.request("GET", path).status_code == 200, path

    assert_no_failure(frontend_release(lab, site, tmp_path, while_released), path="/")
    assert site.request("GET", "/").text == old_index, "not rolled back to the release served before"


def test_a_rolling_qdrant_run_stops_while_another_peer_is_down(lab):
    """A down peer's replicas still look Active until a write fails on it: the rolling run
    checks every member of the cluster is up too, and stops (naming the variable and the peer)
    before it touches the next."""
    down, running = lab.groups["qdrant"][-1], lab.groups["qdrant"][0]
    assert lab.exec(down, "systemctl stop qdrant").returncode == 0
    try:
        with pytest.raises(PlaybookFailed) as refused:
            playbook("playbooks/data.yml", "--limit", running, "--tags", "qdrant", "-e", "qdrant_cluster_replicas_timeout=4")
        assert "qdrant_cluster_replicas_timeout: after 4 s, member(s)" in str(refused.value), str(refused.value)[-3000:]
        assert f"https://{lab.address(down)}:" in str(refused.value), str(refused.value)[-3000:]
    finally:
        assert lab.exec(down, "systemctl start qdrant").returncode == 0
        wait_qdrant_settled(lab, down)


def test_a_zone_outage_answers_again_within_30_s_loses_no_point_and_heals_by_itself(lab, site):
    """Every container of one zone killed under questions (last: it restarts a zone's hosts):
    the load balancer, the edges and the backend move on to the hosts left, Qdrant serves every
    shard from the replica outside the zone; when the zone returns, its peer's replicas recover
    and its edge rejoins the load balancer without any step from an operator."""
    # the zone stays down past the 30-s bound, so a recovery that needs its return shows as late
    outage = zone_outage(lab, site, hold=38.0)
    questions = outage.result.stats("/api/query")
    assert {"edge", "backend", "qdrant", "ollama"} <= {g for g in lab.groups for h in outage.hosts if h in lab.groups[g]}
    assert outage.answering_after <= 30, outage.result.describe_failures()
    answered_late = [f for f in outage.result.failures if f.at > outage.down_at + 30]
    assert not answered_late, outage.result.describe_failures()
    assert questions["ok"] >= 10, outage.result.report()
    before, during = outage.points
    assert before == PROBE_POINTS and during == before, f"points before the outage {before}, during it {during}"
    assert outage.healed_after <= 180
    # the zone's edge is back in the load balancer, and every edge serves
    deadline = time.monotonic() + 60
    while True:
        down = [edge for edge, row in lb_edges(lab).items() if row["status"] != "UP"]
        if not down:
            break
        assert time.monotonic() < deadline, f"still out of the load balancer a minute after the zone returned: {down}"
        time.sleep(2)
    for _ in range(4):
        assert site.request("POST", "/api/query", json={"query": "Which customer spent the most?",
                                                        "collection_name": site.collection}, timeout=120).status_code == 200


def test_a_killed_postgres_primary_fails_over_by_the_runbook_losing_no_acknowledged_write(lab, site, tmp_path):
    """The primary's instance killed under questions and uploads (last: it leaves the other host
    the primary): the runbook promotes the standby; every upload acknowledged before, during and
    after is listed by the new primary; questions never fail (their history row is skipped while
    no primary answers); the old primary's fence refuses to start it when its instance returns,
    and the runbook run again rebuilds it as a synchronous standby. benchmarks/rollouts.py prints
    the same drill's figures."""
    failover = postgres_failover(lab, site, tmp_path)
    assert failover.promoted != failover.killed
    acknowledged = [u for u in failover.uploads if u[1] == 200]
    assert len([u for u in acknowledged if u[0] < 0]) >= 2 and [u for u in acknowledged if u[0] > 0], failover.uploads
    assert failover.lost == [], f"acknowledged uploads missing after the failover: {failover.lost}"
    # an upload fails only with the database's 503, and only until the runbook promoted the standby
    assert all(status == 503 and at < failover.runbook_seconds for at, status, _, _ in failover.failed_uploads), \
        failover.failed_uploads
    assert not failover.result.failures, failover.result.describe_failures()
    assert failover.fenced, "the old primary's PostgreSQL started (or failed without the fence's refusal)"
    assert failover.replication == "streaming quorum", failover.replication
