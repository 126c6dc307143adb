"""Monitoring on the lab: every target up, every dashboard query answers, alerts delivered.

Prometheus and Alertmanager listen on the monitoring host's private address and the lab's
webhook receiver (lab/tools/alert_receiver.py, LAB ONLY) on its loopback, so every request
is made with curl on the monitoring host itself, over SSH through the bastion.
"""

from __future__ import annotations

import json
import shlex
import time
import urllib.parse
import uuid

import pytest
import yaml

from conftest import REPO
from labview import qdrant_call

DASHBOARDS = REPO / "roles" / "prometheus_stack" / "files" / "dashboards"
JOBS = {"prometheus", "alertmanager", "blackbox_exporter", "node", "nginx", "backend", "qdrant",
        "probe_edge_https", "probe_edge_api", "probe_qdrant", "probe_ollama", "probe_backend"}


@pytest.fixture(scope="module")
def mon(lab):
    return lab.groups["monitoring"][0]


def curl_json(lab, host: str, url: str, method: str = "GET", timeout: int = 30):
    """Prometheus's and Alertmanager's APIs (https) as an operator on the host reaches them:
    TLS verified against the internal CA, with the UIs' user and password (both files are
    root's and the prometheus group's, hence sudo)."""
    auth = ("sudo curl --cacert /etc/prometheus/internal-ca.pem -u querygpt:\"$(sudo cat /etc/prometheus/web-password)\""
            if url.startswith("https://") else "curl")
    proc = lab.ssh(host, f"{auth} -sS --max-time 20 -X {method} {shlex.quote(url)}", timeout=timeout)
    assert proc.returncode == 0, f"{url}: {proc.stderr}"
    return json.loads(proc.stdout)


def prom(lab, mon: str) -> str:
    return f"https://{lab.address(mon)}:9090"


def query(lab, mon: str, expr: str) -> dict:
    return curl_json(lab, mon, f"{prom(lab, mon)}/api/v1/query?query={urllib.parse.quote(expr)}")


def wait_for(check, timeout: float, interval: float = 5):
    deadline = time.time() + timeout
    while True:
        result = check()
        if result or time.time() > deadline:
            return result
        time.sleep(interval)


def test_every_inventory_host_and_service_is_a_target_and_up(lab, mon):
    def not_up():
        targets = curl_json(lab, mon, f"{prom(lab, mon)}/api/v1/targets?state=active")["data"]["activeTargets"]
        down = [(t["labels"]["job"], t["labels"]["instance"], t["lastError"]) for t in targets if t["health"] != "up"]
        return targets, down

    targets, down = not_up()
    if down:  # a fresh converge: give every target a couple of scrape intervals
        time.sleep(30)
        targets, down = not_up()
    assert not down, down
    jobs = {t["labels"]["job"] for t in targets}
    assert JOBS <= jobs, JOBS - jobs
    node = {t["labels"]["instance"]: t["labels"] for t in targets if t["labels"]["job"] == "node"}
    # every host the project runs; the stand-ins for external services are not its hosts
    managed = set(lab.hostvars) - set(lab.groups.get("external_services", []))
    assert set(node) == managed, set(node) ^ managed
    for host, labels in node.items():
        assert labels["env"] == "lab"
        assert labels["az"] == lab.zone(host), (host, labels)
        assert host in lab.groups[labels["tier"]], (host, labels)


@pytest.mark.parametrize("series", ['node_systemd_unit_state{state="failed"}', "node_vmstat_oom_kill"])
def test_every_host_exports_what_the_host_alerts_read(lab, mon, series):
    """SystemdUnitFailed and OOMKillOccurred can only fire on a host whose node_exporter
    reports their input (its systemd and vmstat collectors): every host the project runs does."""
    managed = set(lab.hostvars) - set(lab.groups.get("external_services", []))
    reporting = {r["metric"]["instance"] for r in query(lab, mon, f"count by (instance) ({series})")["data"]["result"]}
    assert reporting == managed, reporting ^ managed


def test_no_unit_is_failed_on_any_host(lab, mon):
    """None is failed on the lab as converged and as the earlier test files leave it: a
    package that starts a daemon the host cannot run, or a drill that leaves a unit failed,
    would fire SystemdUnitFailed in production."""
    failed = [(r["metric"]["instance"], r["metric"]["name"]) for r in
              query(lab, mon, 'node_systemd_unit_state{state="failed"} == 1')["data"]["result"]]
    assert failed == [], failed


def test_each_edge_probe_verifies_the_name_that_edge_serves(lab, mon):
    """docs/monitoring.md: each edge is probed at its address with its own name as SNI and Host
    (its own blackbox module, in the scrape URL) and its certificate verified against the lab
    ACME server's root: both probes of every edge succeed, and no module skips verification."""
    edges = lab.groups["edge"]
    names = {edge: str(lab.render("nginx_server_name", edge)) for edge in edges}
    targets = curl_json(lab, mon, f"{prom(lab, mon)}/api/v1/targets?state=active")["data"]["activeTargets"]
    urls = {(t["labels"]["job"], t["labels"]["instance"]): urllib.parse.parse_qs(urllib.parse.urlsplit(t["scrapeUrl"]).query)
            for t in targets if t["labels"]["job"] in ("probe_edge_https", "probe_edge_api")}
    assert {instance for _, instance in urls} == set(edges), urls
    for (job, edge), params in urls.items():
        assert params["module"] == [f"http_edge_{names[edge]}"], (job, edge, params)

    def failing():
        result = query(lab, mon, 'probe_success{job=~"probe_edge_.*"}')["data"]["result"]
        return [r["metric"] for r in result if float(r["value"][1]) != 1] if len(result) == 2 * len(edges) else result

    assert wait_for(lambda: failing() == [], timeout=60), failing()
    config = lab.ssh(mon, "sudo cat /etc/prometheus/blackbox.yml").stdout
    assert "http_edge_" in config and "insecure_skip_verify" not in config


def _panel_queries():
    for path in sorted(DASHBOARDS.glob("*.json")):
        board = json.loads(path.read_text())
        for panel in board["panels"]:
            for target in panel["targets"]:
                yield pytest.param(target["expr"], id=f"{path.stem}:{panel['title']}:{target['refId']}")


@pytest.fixture(scope="module")
def backup_metrics(lab, mon):
    """The backups dashboard reads the backup program's textfile metrics, one series per
    collection (shard) backed up. The test makes its own small collection rather than rely on
    an earlier test's, runs the backup the way cron does and waits until Prometheus has that
    collection's success; the collection is dropped afterwards (the next scheduled run then
    forgets it, so no stale-backup alert stays behind)."""
    peers = lab.groups["qdrant"]
    qdrant = peers[0]
    collection = f"lab_monitoring_{uuid.uuid4().hex[:8]}"
    # a shard on every peer, so the peer this test backs up holds some of it
    qdrant_call(lab, qdrant, "PUT", f"/collections/{collection}",
                {"vectors": {"size": 4, "distance": "Cosine"}, "shard_number": len(peers),
                 "replication_factor": min(2, len(peers))}, timeout=60)
    try:
        points = [{"id": i, "vector": [1.0, float(i), 0.5, 0.25], "payload": {"n": i}} for i in range(1, 7)]
        qdrant_call(lab, qdrant, "PUT", f"/collections/{collection}/points?wait=true", {"points": points}, timeout=60)
        run = lab.ssh(qdrant, "sudo /usr/local/bin/querygpt-backup --log-format journal backup", timeout=300)
        assert run.returncode == 0, run.stdout + run.stderr
        expr = f'querygpt_backup_last_success_timestamp_seconds{{collection="{collection}"}}'
        scraped = wait_for(lambda: query(lab, mon, expr)["data"]["result"], 60)
        assert scraped, f"no {expr} in Prometheus a minute after the backup"
        yield collection
    finally:
        qdrant_call(lab, qdrant, "DELETE", f"/collections/{collection}", timeout=60)


@pytest.mark.parametrize("expr", list(_panel_queries()))
def test_every_dashboard_query_returns_series(lab, mon, backup_metrics, expr):
    answer = query(lab, mon, expr)
    assert answer["status"] == "success", answer
    assert answer["data"]["result"], f"no series for: {expr}"


def test_alert_rules_are_loaded(lab, mon):
    groups = curl_json(lab, mon, f"{prom(lab, mon)}/api/v1/rules?type=alert")["data"]["groups"]
    rules = {r["name"]: r for g in groups for r in g["rules"]}
    # every alert the role defines (OllamaPoolDown shares OllamaDown's `for`), and no other
    names = yaml.safe_load((REPO / "roles/prometheus_stack/vars/main.yml").read_text())["_prometheus_stack_alert_names"]
    assert sorted(rules) == sorted({*names, "OllamaPoolDown"})
    assert all(r["health"] == "ok" for r in rules.values()), {n: r.get("lastError") for n, r in rules.items()}


def test_stopping_one_ollama_host_raises_ollamadown_and_the_pool_still_serves(lab, mon):
    ollama = lab.groups["ollama"][0]
    receiver = "http://127.0.0.1:9099/alerts"
    curl_json(lab, mon, receiver, method="DELETE")
    stop = lab.ssh(ollama, "sudo systemctl stop ollama")
    assert stop.returncode == 0, stop.stderr
    try:
        def arrived():
            received = curl_json(lab, mon, receiver)
            return [a for r in received for a in r["payload"]["alerts"]
                    if a["labels"]["alertname"] == "OllamaDown" and a["status"] == "firing"]

        # probe fails within a scrape (10s), `for: 30s`, evaluation 10s, group_wait 10s
        alerts = wait_for(arrived, timeout=180)
        assert alerts, "OllamaDown did not reach the webhook receiver within 3 minutes"
        labels = alerts[0]["labels"]
        assert labels["instance"] == ollama and labels["tier"] == "ollama" and labels["env"] == "lab"
        # one host of the pool: a warning, and the pool still serves (every backend is ready)
        assert labels["severity"] == "warning"
        assert alerts[0]["annotations"]["runbook_url"].endswith("docs/runbooks/alerts.md#ollamadown")
        for backend in lab.groups["backend"]:
            ready = lab.exec(backend, f"curl -s --cacert /etc/journal-tls/ca.pem -o /dev/null -w '%{{http_code}}'"
                                      f" https://{lab.address(backend)}:8000/ready")
            assert ready.stdout == "200", (backend, ready.stdout, ready.stderr)
        pool = query(lab, mon, 'ALERTS{alertname="OllamaPoolDown"}')["data"]["result"]
        assert pool == [], pool
    finally:
        start = lab.ssh(ollama, "sudo systemctl start ollama")
        assert start.returncode == 0, start.stderr

    def resolved():
        answer = query(lab, mon, 'probe_success{job="probe_ollama"}')
        return all(float(r["value"][1]) == 1 for r in answer["data"]["result"]) and answer["data"]["result"]

    assert wait_for(resolved, timeout=120), "ollama's probe did not recover after the restart"


def test_prometheus_and_alertmanager_are_reachable_from_the_bastion_only(lab, mon):
    probe = "timeout 3 bash -c '</dev/tcp/{address}/{port}' && echo open || echo closed"
    address = lab.address(mon)
    bastion = lab.groups["bastion"][0]
    other = lab.groups["backend"][0]
    for port in (9090, 9093):
        assert lab.exec(bastion, probe.format(address=address, port=port)).stdout.strip() == "open", port
        assert lab.exec(other, probe.format(address=address, port=port)).stdout.strip() == "closed", port
