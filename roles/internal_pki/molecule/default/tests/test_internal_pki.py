"""The host's key stays on the host, its certificate is signed by the current internal CA.

After converge with the first CA, the side effect replaced the CA (the second one) in the
rotation runbook's three phases: the key must be the same, the certificate new and signed by
the second CA, and ca.pem the second CA alone. Then it revoked the host's certificate: the CRL
lists it, and the host has a new key and certificate.
"""

from __future__ import annotations

import pytest

testinfra_hosts = ["backend"]
TLS = "/etc/journal-tls"


@pytest.fixture(scope="module")
def address(host) -> str:
    return host.ansible("setup", "filter=ansible_default_ipv4")["ansible_facts"]["ansible_default_ipv4"]["address"]


def test_files_and_permissions(host):
    expected = {
        TLS: ("root", "journal-tls", 0o750),
        f"{TLS}/host.key": ("root", "journal-tls", 0o640),
        f"{TLS}/host.pem": ("root", "root", 0o644),
        f"{TLS}/ca.pem": ("root", "root", 0o644),
        f"{TLS}/crl.pem": ("root", "root", 0o644),
        "/var/lib/prometheus/node-exporter/internal_pki.prom": ("root", "root", 0o644),
    }
    for path, owner in expected.items():
        f = host.file(path)
        assert (f.user, f.group, f.mode) == owner, path


def test_the_certificate_is_signed_by_the_current_ca(host):
    host.run_expect([0], f"openssl verify -CAfile {TLS}/ca.pem {TLS}/host.pem")
    assert "QueryGPT molecule internal-ca-2" in host.check_output(f"openssl x509 -in {TLS}/ca.pem -noout -subject")
    assert "QueryGPT molecule internal-ca-2" in host.check_output(f"openssl x509 -in {TLS}/host.pem -noout -issuer")
    assert host.file(f"{TLS}/ca.pem").content_string.count("BEGIN CERTIFICATE") == 1


def test_the_certificate_names_the_host_and_serves_both_ends(host, address):
    text = host.check_output(f"openssl x509 -in {TLS}/host.pem -noout -text")
    assert f"IP Address:{address}" in text
    assert "DNS:logs.molecule.test" in text
    assert "TLS Web Server Authentication" in text and "TLS Web Client Authentication" in text
    assert "CA:FALSE" in text


def test_a_new_ca_kept_the_key_and_replaced_the_certificate(host):
    key_before, cert_before = host.file("/var/tmp/molecule-internal-pki-before.txt").content_string.split("\n")[:2]
    key_rotated, cert_rotated = host.file("/var/tmp/molecule-internal-pki-rotated.txt").content_string.split("\n")[:2]
    assert key_rotated == key_before
    assert cert_rotated != cert_before


def test_a_revoked_certificate_is_listed_and_replaced_with_a_new_key(host):
    key_rotated, cert_rotated = host.file("/var/tmp/molecule-internal-pki-rotated.txt").content_string.split("\n")[:2]
    key_now = host.check_output(f"openssl pkey -in {TLS}/host.key -pubout | sha256sum | cut -d' ' -f1")
    cert_now = host.check_output(f"openssl x509 -in {TLS}/host.pem -noout -fingerprint -sha256")
    assert key_now != key_rotated and cert_now != cert_rotated
    # OpenSSL (as nginx and libpq check) refuses the revoked certificate, and takes the new one
    revoked = host.run(f"openssl verify -crl_check -CAfile {TLS}/ca.pem -CRLfile {TLS}/crl.pem "
                       "/var/tmp/molecule-internal-pki-revoked.pem")
    assert revoked.rc != 0 and "certificate revoked" in revoked.stdout + revoked.stderr
    host.run_expect([0], f"openssl verify -crl_check -CAfile {TLS}/ca.pem -CRLfile {TLS}/crl.pem {TLS}/host.pem")
    crl = host.check_output(f"openssl crl -in {TLS}/crl.pem -noout -text")
    assert "Key Compromise" in crl and "QueryGPT molecule internal-ca-2" in crl


def test_the_crl_is_the_current_cas_alone_signed_and_announced(host):
    """After the rotation's drop phase: the second CA's CRL only (the first CA's went with it),
    with a valid signature; the certificate names where its clients find it."""
    assert host.file(f"{TLS}/crl.pem").content_string.count("BEGIN X509 CRL") == 1
    host.run_expect([0], f"openssl crl -in {TLS}/crl.pem -CAfile {TLS}/ca.pem -noout")
    text = host.check_output(f"openssl x509 -in {TLS}/host.pem -noout -text")
    assert f"URI:file://{TLS}/crl.pem" in text
    metrics = host.file("/var/lib/prometheus/node-exporter/internal_pki.prom").content_string
    next_update = host.check_output(f"date -d \"$(openssl crl -in {TLS}/crl.pem -noout -nextupdate | cut -d= -f2)\" +%s")
    assert f'internal_pki_crl_next_update_seconds{{issuer="QueryGPT molecule internal-ca-2",issuer_key_id="' in metrics
    assert f'"}} {next_update}\n' in metrics
    not_after = host.check_output(f"date -d \"$(openssl x509 -in {TLS}/host.pem -noout -enddate | cut -d= -f2)\" +%s")
    assert f"internal_pki_certificate_not_after_seconds {not_after}" in metrics


def test_the_services_that_read_the_files_were_reloaded_once_per_change(host):
    """internal_pki_dependent_units: the running reader was reloaded by the first certificate
    and again by each phase of the CA rotation (the side effect: trust, sign, drop) and by the
    revocation, not by the refused run nor the idempotence run; the installed but
    stopped unit stayed stopped (try-), and a unit the host lacks was no failure."""
    reloads = host.file("/var/tmp/molecule-pki-reader.reloads")
    assert reloads.exists and reloads.content_string.count("reloaded") == 5, \
        reloads.content_string if reloads.exists else "never reloaded"
    assert host.service("molecule-pki-reader").is_running
    assert not host.service("molecule-pki-idle").is_running
    assert not host.file("/var/tmp/molecule-pki-idle.reloads").exists
