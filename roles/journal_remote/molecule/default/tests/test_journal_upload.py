"""journal_upload's tests: the uploader configured for the monitoring host, sandboxed, and
patient when the receiver is down.

The scenario is journal_remote's (roles/journal_upload/molecule/default links to it): one
instance running both ends, as every host ships its journal and the monitoring host also
receives. Both roles' scenarios used to converge the same three roles on one instance.
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
TLS = "/etc/journal-tls"
REMOTE_DIR = "/var/log/journal/remote"


@pytest.fixture(scope="module")
def address(host) -> str:
    return host.ansible("setup", "filter=ansible_default_ipv4")["ansible_facts"]["ansible_default_ipv4"]["address"]


def arrived(host, marker: str, timeout: int) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if host.run(f"journalctl --directory={REMOTE_DIR} --no-pager -o cat | grep -q {marker}").rc == 0:
            return True
        time.sleep(1)
    return False


def test_configured_for_the_monitoring_host_over_mutual_tls(host, address):
    conf = host.file("/etc/systemd/journal-upload.conf.d/querygpt.conf").content_string
    assert f"URL=https://{address}:19532" in conf
    assert f"ServerKeyFile={TLS}/host.key" in conf
    assert f"ServerCertificateFile={TLS}/host.pem" in conf
    assert f"TrustedCertificateFile={TLS}/ca.pem" in conf


def test_runs_unprivileged_with_the_key_group_and_restarts_patiently(host):
    service = host.service("systemd-journal-upload")
    assert service.is_running and service.is_enabled
    props = service.systemd_properties
    assert props["DynamicUser"] == "yes"
    assert "journal-tls" in props["SupplementaryGroups"].split()
    assert props["Restart"] == "always"
    assert props["RestartUSec"] == "2s"  # journal_upload_restart_sec of the scenario


def test_unit_exposure_at_most_the_ceiling(host):
    # Debian's unit scored 4.9; lines still arrive over mutual TLS (the test below).
    assert exposure(host, "systemd-journal-upload") <= CEILING, failed_checks(host, "systemd-journal-upload")


def test_a_line_logged_while_the_receiver_is_down_arrives_when_it_is_back(host):
    marker = f"qgpt-outage-{uuid.uuid4().hex}"
    host.run_expect([0], "systemctl stop stunnel@journal-remote")
    try:
        host.run_expect([0], f"logger -t qgpt-test {marker}")
        assert not arrived(host, marker, timeout=5)
    finally:
        host.run_expect([0], "systemctl start stunnel@journal-remote")
    assert arrived(host, marker, timeout=60), f"{marker} never arrived after the receiver came back"
    assert host.service("systemd-journal-upload").is_running
