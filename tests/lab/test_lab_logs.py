"""Central logs and host metrics on the lab: every host's journal reaches monitoring-1 over
TLS, and monitoring-1 scrapes node_exporter on every host."""

from __future__ import annotations

import time
import uuid

REMOTE_DIR = "/var/log/journal/remote"
JOURNAL_PORT = 19532
NODE_EXPORTER_PORT = 9100
# Shipping is near-immediate; allow for an uploader that is between retries (10 s).
LOG_TIMEOUT = 60


def _monitoring(lab) -> str:
    return lab.groups["monitoring"][0]


def test_a_line_logged_on_a_backend_reaches_the_monitoring_host(lab):
    """The line arrives under the backend's own hostname (journal-remote keeps each sender's fields)."""
    backend = sorted(lab.groups["backend"])[0]
    hostname = lab.exec(backend, "hostname").stdout.strip()
    assert hostname, "the backend has no hostname"
    marker = f"qgpt-lab-{uuid.uuid4().hex}"
    logged = lab.exec(backend, f"logger -t qgpt-test {marker}")
    assert logged.returncode == 0, logged.stderr
    monitoring = _monitoring(lab)
    deadline = time.monotonic() + LOG_TIMEOUT
    while time.monotonic() < deadline:
        found = lab.exec(monitoring, f"journalctl --directory={REMOTE_DIR} --no-pager -o cat -t qgpt-test"
                                     f" _HOSTNAME={hostname} --since -10min | grep -c {marker}")
        if found.stdout.strip() not in ("", "0"):
            return
        time.sleep(2)
    raise AssertionError(f"{marker} logged on {backend} never reached {monitoring}:{REMOTE_DIR} within {LOG_TIMEOUT}s")


def test_every_shipping_host_is_connected(lab):
    """Every host in site.yml's plays runs the uploader, and it is running (not retrying)."""
    for host in sorted(h for g in ("bastion", "edge", "backend", "qdrant", "ollama", "monitoring")
                       for h in lab.groups.get(g, [])):
        state = lab.exec(host, "systemctl is-active systemd-journal-upload")
        assert state.stdout.strip() == "active", f"{host}: systemd-journal-upload is {state.stdout.strip()}"


def test_journal_remote_refuses_plain_http_and_unknown_clients(lab):
    monitoring = _monitoring(lab)
    url = f"{lab.address(monitoring)}:{JOURNAL_PORT}/upload"
    backend = sorted(lab.groups["backend"])[0]
    plain = lab.exec(backend, f"curl -s -o /dev/null -w '%{{http_code}}' --max-time 5 -X POST http://{url}")
    assert not plain.stdout.strip().startswith("2"), plain.stdout
    nocert = lab.exec(backend, f"curl -s -o /dev/null -w '%{{http_code}}' --max-time 5 --cacert /etc/journal-tls/ca.pem"
                               f" -H 'Content-Type: application/vnd.fdo.journal' --data-binary 'MESSAGE=x' https://{url}")
    assert not nocert.stdout.strip().startswith("2"), nocert.stdout


def test_node_exporter_answers_monitoring_on_every_host(lab):
    monitoring = _monitoring(lab)
    for host in sorted(h for g in ("bastion", "edge", "backend", "qdrant", "ollama", "monitoring")
                       for h in lab.groups.get(g, [])):
        metrics = lab.exec(monitoring, f"curl -sf --max-time 5 http://{lab.address(host)}:{NODE_EXPORTER_PORT}/metrics")
        assert metrics.returncode == 0, f"{host}: node_exporter does not answer monitoring ({metrics.stderr.strip()})"
        assert "node_exporter_build_info" in metrics.stdout, host


def test_node_exporter_is_closed_to_other_hosts(lab):
    """Only monitoring may scrape: a backend probing another host's 9100 is dropped."""
    backend = sorted(lab.groups["backend"])[0]
    target = lab.address(lab.groups["qdrant"][0])
    probe = lab.exec(backend, f"timeout 3 bash -c '</dev/tcp/{target}/{NODE_EXPORTER_PORT}' && echo open || echo closed")
    assert probe.stdout.strip() == "closed"
