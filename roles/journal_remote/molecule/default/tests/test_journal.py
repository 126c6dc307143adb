"""Central logs: journal-upload ships to journal-remote over mutual TLS, nothing else gets in.

One host (molecule.yml): the monitoring host runs both ends. Another host's lines arriving
under its own hostname is the lab's test (tests/lab/test_lab_logs.py).
"""

from __future__ import annotations

import base64
import sys
import time
import uuid
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[5] / "molecule" / "shared"))

from unit_security import CEILING, exposure, failed_checks  # noqa: E402

testinfra_hosts = ["monitoring"]

PORT = 19532
TLS = "/etc/journal-tls"
REMOTE_DIR = "/var/log/journal/remote"
# One entry in journal-upload's export format, as a real uploader sends it: systemd 257's
# journal-remote drops an entry without a boot id and a monotonic timestamp. An empty line
# ends each entry.
ENTRY = ("__REALTIME_TIMESTAMP={realtime}\n__MONOTONIC_TIMESTAMP={monotonic}\n_BOOT_ID={boot}\n"
         "SYSLOG_IDENTIFIER={ident}\nMESSAGE={message}")


@pytest.fixture(scope="module")
def address(host) -> str:
    return host.ansible("setup", "filter=ansible_default_ipv4")["ansible_facts"]["ansible_default_ipv4"]["address"]


def upload(host, address: str, message: str, client: str) -> str:
    """HTTP status (000 = no HTTP answer) of one journal entry POSTed with curl as `client`."""
    head = ENTRY.format(realtime=int(time.time() * 1e6), monotonic=int(time.monotonic() * 1e6),
                        boot=uuid.uuid4().hex, ident="qgpt-test", message=message)
    # Pad the message so base64 needs no '=' padding (the command then holds no '=').
    entry = head + "." * (-(len(head) + 2) % 3) + "\n\n"
    body = base64.b64encode(entry.encode()).decode()
    result = host.run(
        f"echo {body} | base64 -d | curl -sS -o /dev/null -w '%{{http_code}}' --max-time 10 {client}"
        f" -H 'Content-Type: application/vnd.fdo.journal' --data-binary @- https://{address}:{PORT}/upload"
    )
    return (result.stdout.strip() or "000") + f" ({result.stderr.strip()})"


def in_remote_journal(host, marker: str, timeout: int = 30, fields: str = "") -> bool:
    """Whether an entry with `marker` (and the journalctl `fields` matches) reached REMOTE_DIR."""
    for _ in range(timeout):
        if host.run(f"journalctl --directory={REMOTE_DIR} --no-pager -o cat {fields} | grep -q {marker}").rc == 0:
            return True
        time.sleep(1)
    return False


def test_journal_remote_still_cannot_check_client_certificates_itself(host):
    """Why stunnel fronts it: Debian's systemd is built without GnuTLS, so journal-remote's
    --trust is "not available". When this fails, Debian's build can check client
    certificates itself: drop stunnel and pass --trust (docs/logging.md)."""
    assert "-GNUTLS" in host.check_output("systemctl --version")
    out = host.run("/usr/lib/systemd/systemd-journal-remote --trust=/etc/hosts --listen-https=127.0.0.1:1 "
                   "--key=/etc/hosts --cert=/etc/hosts --output=/tmp/never.journal")
    assert "Option --trust= is not available" in out.stdout + out.stderr


def test_both_ends_run(host):
    for unit in ("systemd-journal-remote.socket", "systemd-journal-remote.service",
                 "stunnel@journal-remote.service", "systemd-journal-upload.service"):
        service = host.service(unit)
        assert service.is_running, unit
        assert service.is_enabled, unit


def test_receiver_listens_on_the_private_address_only(host, address):
    assert host.socket(f"tcp://{address}:{PORT}").is_listening
    assert not host.socket(f"tcp://0.0.0.0:{PORT}").is_listening
    # journal-remote itself speaks plain HTTP on loopback only, behind the TLS front.
    assert host.socket("tcp://127.0.0.1:19533").is_listening
    assert not host.socket(f"tcp://{address}:19533").is_listening


def test_tls_front_is_sandboxed_and_unprivileged(host):
    props = host.service("stunnel@journal-remote").systemd_properties
    assert props["NoNewPrivileges"] == "yes" and props["ProtectSystem"] == "strict"
    owner = host.check_output("ps -o user= -C stunnel4 | sort -u").split()
    assert owner == ["stunnel4"], owner


@pytest.mark.parametrize("unit", ["stunnel@journal-remote", "systemd-journal-remote", "systemd-journal-upload"])
def test_unit_exposure_at_most_the_ceiling(host, unit):
    # Debian's stunnel@ scored 9.2, journal-remote 4.2, journal-upload 4.9; the tests around
    # (mutual TLS, lines arriving) still pass under the sandboxes.
    assert exposure(host, unit) <= CEILING, failed_checks(host, unit)


def test_host_key_is_private_and_certificate_is_signed_by_the_ca(host, address):
    key = host.file(f"{TLS}/host.key")
    assert (key.user, key.group, key.mode) == ("root", "journal-tls", 0o640)
    host.run_expect([0], f"openssl verify -CAfile {TLS}/ca.pem {TLS}/host.pem")
    text = host.check_output(f"openssl x509 -in {TLS}/host.pem -noout -text")
    assert f"IP Address:{address}" in text
    assert "TLS Web Server Authentication" in text and "TLS Web Client Authentication" in text


def test_uploader_points_at_the_monitoring_host(host, address):
    conf = host.file("/etc/systemd/journal-upload.conf.d/querygpt.conf").content_string
    assert f"URL=https://{address}:{PORT}" in conf
    assert f"TrustedCertificateFile={TLS}/ca.pem" in conf


def test_a_logged_line_reaches_the_remote_journal(host):
    marker = f"qgpt-molecule-{uuid.uuid4().hex}"
    host.run_expect([0], f"logger -t qgpt-test {marker}")
    assert in_remote_journal(host, marker, fields="_HOSTNAME=instance"), f"{marker} never reached {REMOTE_DIR}"


def test_the_receiver_is_verified_by_the_ca(host, address):
    """Server authentication: a client trusting another CA refuses the receiver."""
    status = upload(host, address, "qgpt-untrusted-server", "--cacert /etc/ssl/certs/ca-certificates.crt")
    assert status.startswith("000") and "certificate" in status.lower(), status


def test_a_client_with_a_ca_signed_certificate_is_accepted(host, address):
    """The control for the rejections below: the same request with the host's certificate."""
    marker = f"qgpt-control-{uuid.uuid4().hex}"
    status = upload(host, address, marker, f"--cacert {TLS}/ca.pem --cert {TLS}/host.pem --key {TLS}/host.key")
    assert status.startswith("2"), f"the host's own CA-signed certificate was refused: {status}"
    assert in_remote_journal(host, marker)


def test_plain_http_is_rejected(host, address):
    result = host.run(f"curl -sS -o /dev/null -w '%{{http_code}}' --max-time 5 -X POST http://{address}:{PORT}/upload")
    assert result.stdout.strip() in ("000", "400"), f"plain HTTP got an answer: {result.stdout} {result.stderr}"


def test_a_client_without_a_certificate_is_rejected(host, address):
    marker = f"qgpt-nocert-{uuid.uuid4().hex}"
    assert not upload(host, address, marker, f"--cacert {TLS}/ca.pem").startswith("2")
    assert not in_remote_journal(host, marker, timeout=3)


def test_a_client_with_a_self_signed_certificate_is_rejected(host, address):
    marker = f"qgpt-rogue-{uuid.uuid4().hex}"
    host.run_expect([0], (
        "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1"
        " -subj /CN=rogue -keyout /tmp/rogue.key -out /tmp/rogue.pem 2>/dev/null"
    ))
    assert not upload(host, address, marker, f"--cacert {TLS}/ca.pem --cert /tmp/rogue.pem --key /tmp/rogue.key").startswith("2")
    assert not in_remote_journal(host, marker, timeout=3)


# Sends entries to journal-remote's own loopback listener (the TLS front is tested above),
# as journal-upload does: ENTRY (prepended to the script), one boot, rising timestamps. Random
# text compresses little, so the files grow by about what is sent.
FLOOD = r"""
import base64, http.client, os, sys, time, uuid
boot, run = uuid.uuid4().hex, sys.argv[1]
batches, per_batch = int(sys.argv[2]), 100
now, mono = int(time.time() * 1e6), int(time.monotonic() * 1e6)
for batch in range(batches):
    body = []
    for i in range(per_batch):
        n = batch * per_batch + i
        marker = "first" if n == 0 else "last" if n == batches * per_batch - 1 else "fill"
        text = base64.b64encode(os.urandom(1500)).decode()
        body.append(ENTRY.format(realtime=now + n, monotonic=mono + n, boot=boot, ident="qgpt-disk",
                                 message=f"qgpt-disk-{marker}-{run} {text}") + "\n\n")
    conn = http.client.HTTPConnection("127.0.0.1", 19533, timeout=30)
    conn.request("POST", "/upload", "".join(body).encode(), {"Content-Type": "application/vnd.fdo.journal"})
    answer = conn.getresponse()
    answer.read()
    if answer.status != 202:
        sys.exit(f"batch {batch}: HTTP {answer.status}")
    conn.close()
"""


def iec_bytes(size: str) -> int:
    return int(size.rstrip("KMGT")) * 1024 ** (" KMGT".index(size[-1]) if size[-1] in "KMGT" else 0)


def test_the_receiver_keeps_its_journals_within_max_use(host):
    """journal_remote_max_use and _max_file_size (this scenario: small, molecule.yml's converge):
    after twice max_use of entries, the oldest archived files are gone, the directory is within
    max_use plus the file being written, and the newest entries are there. Last in this file:
    it deletes what the tests above wrote."""
    conf = dict(line.split("=", 1) for line in host.file(
        "/etc/systemd/journal-remote.conf.d/querygpt.conf").content_string.splitlines() if "=" in line)
    max_use, max_file = iec_bytes(conf["MaxUse"]), iec_bytes(conf["MaxFileSize"])
    assert max_use <= 16 * 1024 ** 2, f"the scenario's cap should be small enough to reach: {conf}"
    run = uuid.uuid4().hex
    batches = 2 * max_use // (100 * 2000) + 1  # entries of about 2000 bytes, 100 per request
    script = base64.b64encode(f"ENTRY = {ENTRY!r}\n{FLOOD}".encode()).decode()
    host.run_expect([0], f"echo {script} | base64 -d | python3 - {run} {batches}")

    sizes = host.check_output(f"find {REMOTE_DIR} -name '*.journal*' -printf '%f %s\\n'").splitlines()
    files = {name: int(size) for name, size in (line.split() for line in sizes)}
    assert any("@" in name for name in files), f"nothing was archived: {files}"
    assert sum(files.values()) <= max_use + max_file, f"over MaxUse {conf['MaxUse']} + MaxFileSize: {files}"
    assert in_remote_journal(host, f"qgpt-disk-last-{run}", timeout=10), "the newest entry is missing"
    assert not in_remote_journal(host, f"qgpt-disk-first-{run}", timeout=1), "the oldest entry was kept"
