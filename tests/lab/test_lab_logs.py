"""Central logs and host metrics on the lab: every host's journal reaches monitoring-1 over
TLS, and monitoring-1 scrapes every exporter over TLS with its client certificate."""

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


def test_every_exporter_answers_only_tls_with_the_monitoring_certificate(lab):
    """docs/architecture.md, "Internal TLS": every exporter (node on every host, nginx on the
    edges, postgres on the PostgreSQL hosts) answers the monitoring host's certificate, which
    Prometheus presents, over TLS verified against the internal CA; a client without a
    certificate gets no answer and plaintext no metrics. Which certificates they refuse
    (another CA's, the internal CA's for another host): node_exporter's molecule scenario."""
    monitoring = _monitoring(lab)
    targets = [(host, NODE_EXPORTER_PORT, "node_exporter_build_info")
               for g in ("bastion", "edge", "backend", "qdrant", "ollama", "postgres", "monitoring")
               for host in sorted(lab.groups.get(g, []))]
    targets += [(host, 9113, "nginx_up 1") for host in sorted(lab.groups["edge"])]
    targets += [(host, 9187, "pg_up 1") for host in sorted(lab.groups.get("postgres", []))]
    tls = "/etc/prometheus/exporter-tls"
    curl = f"curl -s --max-time 5 --cacert {tls}/ca.pem"
    # One shell on the monitoring host for every target: a line per target and check.
    script = "".join(
        f"echo \"{host}:{port} cert $({curl} --cert {tls}/server.pem --key {tls}/server.key "
        f"https://{lab.address(host)}:{port}/metrics | grep -c '^{marker}')\"; "
        f"echo \"{host}:{port} nocert $({curl} -o /dev/null -w '%{{http_code}}' https://{lab.address(host)}:{port}/metrics)\"; "
        f"echo \"{host}:{port} plain $(curl -s --max-time 5 http://{lab.address(host)}:{port}/metrics | grep -c '^{marker}')\"; "
        for host, port, marker in targets)
    out = lab.exec(monitoring, script, timeout=180).stdout
    seen = dict(line.rsplit(" ", 1) for line in out.splitlines() if line.count(" ") == 2)
    for host, port, _ in targets:
        assert seen.get(f"{host}:{port} cert") == "1", f"{host}:{port} does not answer monitoring's certificate: {out}"
        assert seen.get(f"{host}:{port} nocert") == "000", f"{host}:{port} answers a client without a certificate"
        assert seen.get(f"{host}:{port} plain") == "0", f"{host}:{port} serves metrics in plaintext"


def test_node_exporter_is_closed_to_other_hosts(lab):
    """Only monitoring may scrape: a backend probing another host's 9100 is dropped."""
    backend = sorted(lab.groups["backend"])[0]
    target = lab.address(lab.groups["qdrant"][0])
    probe = lab.exec(backend, f"timeout 3 bash -c '</dev/tcp/{target}/{NODE_EXPORTER_PORT}' && echo open || echo closed")
    assert probe.stdout.strip() == "closed"
