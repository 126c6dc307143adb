"""node_exporter's tests: Debian's package, on the private address only, with the textfile collector.

The scenario is prometheus_stack's (roles/node_exporter/molecule/default links to it): the
monitoring host gets node_exporter first, as every host does, and then scrapes it. The
exporter's own scenario converged the same role on an instance of its own.
"""

from __future__ import annotations

import sys
import time
import uuid
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[5] / "molecule" / "shared"))

from unit_security import CEILING, exposure, failed_checks  # noqa: E402

testinfra_hosts = ["monitoring"]

PORT = 9100
TEXTFILE_DIR = "/var/lib/prometheus/node-exporter"


@pytest.fixture(scope="module")
def address(host) -> str:
    return host.ansible("setup", "filter=ansible_default_ipv4")["ansible_facts"]["ansible_default_ipv4"]["address"]


TLS_DIR = "/etc/prometheus/exporter-tls"
CLIENTS = "/root/molecule-clients"  # prepare.yml: certificates the exporter must refuse


def curl(client: str | None = None, cacert: str = f"{TLS_DIR}/ca.pem") -> str:
    """curl against the exporter, presenting `client` (a pair's path without .pem/.key)."""
    pair = f"--cert {client}.pem --key {client}.key" if client else ""
    return f"curl -s --max-time 5 --cacert {cacert} {pair}"


def metrics(host, address: str) -> str:
    """/metrics as Prometheus reads it: TLS verified against the internal CA, with the
    monitoring host's client certificate (this instance's pair names it)."""
    return host.check_output(f"{curl(f'{TLS_DIR}/server')} -f https://{address}:{PORT}/metrics")


def test_service_runs_from_the_debian_package(host):
    assert host.package("prometheus-node-exporter").is_installed
    service = host.service("prometheus-node-exporter")
    assert service.is_running
    assert service.is_enabled


def test_unit_is_sandboxed(host):
    props = host.service("prometheus-node-exporter").systemd_properties
    assert props["User"] == "prometheus"
    assert props["NoNewPrivileges"] == "yes"
    assert props["ProtectSystem"] == "strict"
    assert props.get("CapabilityBoundingSet", "") in ("", "0"), "the exporter needs no capabilities"


def test_unit_exposure_at_most_the_ceiling(host):
    # Debian's unit scored 9.2; the collectors below (systemd over D-Bus, textfile) still work.
    assert exposure(host, "prometheus-node-exporter") <= CEILING, failed_checks(host, "prometheus-node-exporter")


def test_collectors_work_as_without_the_sandbox(host, address):
    # The collectors that read what the sandbox narrows: /proc, /sys, the mounts, the clock.
    text = metrics(host, address)
    for collector in ("cpu", "meminfo", "filesystem", "diskstats", "netdev", "timex", "systemd", "textfile"):
        assert f'node_scrape_collector_success{{collector="{collector}"}} 1' in text, collector


def test_listens_on_the_private_address_only(host, address):
    assert host.socket(f"tcp://{address}:{PORT}").is_listening
    assert not host.socket(f"tcp://0.0.0.0:{PORT}").is_listening
    assert "node_exporter_build_info" in metrics(host, address)
    refused = host.run(f"curl -sk --max-time 5 https://127.0.0.1:{PORT}/metrics")
    assert refused.rc == 7, "node_exporter answers on loopback: it must bind the private address only"


def test_metrics_only_over_tls_to_the_scrapers_certificate(host, address):
    """docs/architecture.md, "Internal TLS": the monitoring host's certificate is served; a
    client without a certificate, with one from another CA (naming the monitoring host), or
    with the internal CA's for another host ends the handshake; plaintext gets no metrics."""
    url = f"https://{address}:{PORT}/metrics"
    assert "node_exporter_build_info" in metrics(host, address)
    for client in (None, f"{CLIENTS}/impostor", f"{CLIENTS}/stranger"):
        refused = host.run(f"{curl(client)} -o /dev/null -w '%{{http_code}}' {url}")
        assert refused.rc != 0 and refused.stdout == "000", (client, refused.stdout, refused.stderr)
    plain = host.run(f"curl -s --max-time 5 -w '\\n%{{http_code}}' http://{address}:{PORT}/metrics")
    assert plain.stdout.endswith("\n400") and "node_" not in plain.stdout, plain.stdout
    # The server's certificate verifies for its address against the internal CA, and TLS
    # below 1.2 or a CBC suite is refused even with the right client certificate.
    weak = host.run(f"{curl(f'{TLS_DIR}/server')} --tls-max 1.2 --ciphers ECDHE-ECDSA-AES128-SHA "
                    f"-o /dev/null -w '%{{http_code}}' {url}")
    assert weak.stdout == "000", weak.stdout


def test_exporters_tls_files_are_the_pkis_and_the_key_stays_private(host):
    key = host.file(f"{TLS_DIR}/server.key")
    assert (key.user, key.group, key.mode) == ("root", "prometheus", 0o640)
    assert host.file(f"{TLS_DIR}/server.pem").content == host.file("/etc/journal-tls/host.pem").content
    assert host.file(f"{TLS_DIR}/ca.pem").content == host.file("/etc/journal-tls/ca.pem").content


def test_flags_come_from_the_default_file(host, address):
    args = host.file("/etc/default/prometheus-node-exporter").content_string
    assert f"--web.listen-address={address}:{PORT}" in args
    assert f"--web.config.file={TLS_DIR}/web-config.yml" in args
    assert f"--collector.textfile.directory={TEXTFILE_DIR}" in args
    assert "--collector.systemd" in args


def test_systemd_collector_reports_units(host, address):
    assert 'node_systemd_unit_state{name="prometheus-node-exporter.service"' in metrics(host, address)


def test_textfile_metric_appears(host, address):
    marker = uuid.uuid4().hex[:12]
    prom = f"{TEXTFILE_DIR}/querygpt_backup_molecule.prom"
    host.run_expect([0], f"printf 'querygpt_backup_molecule_marker{{id=\"{marker}\"}} 1\\n' > {prom}.tmp && mv {prom}.tmp {prom}")
    try:
        for _ in range(10):
            if f'querygpt_backup_molecule_marker{{id="{marker}"}} 1' in metrics(host, address):
                break
            time.sleep(1)
        else:
            pytest.fail(f"the textfile metric from {prom} never appeared in /metrics")
    finally:
        host.run(f"rm -f {prom}")
