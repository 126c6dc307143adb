"""The internal PKI's certificate revocation lists (plugins/filter/internal_pki.py).

Checked the way the fleet's clients use them: Python's ssl (the backend) and `openssl verify
-crl_check` (OpenSSL, as nginx and libpq) against a CA and host certificates made here the way
roles/internal_pki makes them, and the CA rotation's CRL from labctl.secrets.rotate_ca.
"""

from __future__ import annotations

import datetime
import ssl
import subprocess
import sys
from pathlib import Path

import pytest
from ansible.errors import AnsibleFilterError
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "plugins" / "filter"))
sys.path.insert(0, str(REPO / "lab"))

import internal_pki as pki  # noqa: E402
from labctl import secrets  # noqa: E402

NOW = datetime.datetime.now(datetime.timezone.utc)


def host_cert(ca_pem: str, ca_key_pem: str, name: str) -> tuple[str, str, int]:
    """(certificate PEM, key PEM, serial) of a host, as roles/internal_pki signs one."""
    ca = x509.load_pem_x509_certificate(ca_pem.encode())
    ca_key = serialization.load_pem_private_key(ca_key_pem.encode(), None)
    key = ec.generate_private_key(ec.SECP256R1())
    serial = x509.random_serial_number()
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(NOW - datetime.timedelta(days=1))
        .not_valid_after(NOW + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    return cert.public_bytes(serialization.Encoding.PEM).decode(), key_pem, serial


@pytest.fixture(scope="module")
def ca():
    return secrets.internal_ca("QueryGPT test internal CA")


def openssl_verify(tmp_path: Path, cas: str, crls: str, cert: str) -> subprocess.CompletedProcess:
    (tmp_path / "ca.pem").write_text(cas)
    (tmp_path / "crl.pem").write_text(crls)
    (tmp_path / "host.pem").write_text(cert)
    return subprocess.run(
        ["openssl", "verify", "-crl_check", "-CAfile", tmp_path / "ca.pem", "-CRLfile", tmp_path / "crl.pem",
         tmp_path / "host.pem"], capture_output=True, text=True)


def hex_serial(serial: int) -> str:
    return format(serial, "X")


def test_a_revoked_certificate_is_refused_and_the_others_are_not(ca, tmp_path):
    ca_pem, ca_key = ca
    good, _, _ = host_cert(ca_pem, ca_key, "backend-a")
    bad, _, bad_serial = host_cert(ca_pem, ca_key, "backend-b")
    crl = pki.crl_sign(ca_pem, ca_key, [{"serial": hex_serial(bad_serial), "revoked_on": "2026-12-01",
                                         "reason": "key_compromise"}], 365)
    assert openssl_verify(tmp_path, ca_pem, crl, good).returncode == 0
    refused = openssl_verify(tmp_path, ca_pem, crl, bad)
    assert refused.returncode != 0 and "certificate revoked" in refused.stdout + refused.stderr


def test_python_clients_refuse_a_revoked_server_and_a_ca_without_crl(ca, tmp_path):
    """What the backend's Settings.tls_verify builds: the CA file, the CRL file, CRL check on the leaf."""
    ca_pem, ca_key = ca
    cert, key, serial = host_cert(ca_pem, ca_key, "localhost")
    (tmp_path / "server.pem").write_text(cert + key)
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(tmp_path / "server.pem")

    def handshake(crls: str) -> None:
        (tmp_path / "ca.pem").write_text(ca_pem)
        (tmp_path / "crl.pem").write_text(crls)
        client = ssl.create_default_context(cafile=tmp_path / "ca.pem")
        client.load_verify_locations(cafile=tmp_path / "crl.pem")
        client.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        c_in, c_out = ssl.MemoryBIO(), ssl.MemoryBIO()
        s = server.wrap_bio(incoming, outgoing, server_side=True)
        c = client.wrap_bio(c_in, c_out, server_hostname="localhost")
        for _ in range(10):
            for side, src, dst in ((c, c_out, incoming), (s, outgoing, c_in)):
                try:
                    side.do_handshake()
                except ssl.SSLWantReadError:
                    pass
                dst.write(src.read())
            try:
                c.do_handshake()
                return
            except ssl.SSLWantReadError:
                continue

    handshake(pki.crl_sign(ca_pem, ca_key, [], 30))
    with pytest.raises(ssl.SSLCertVerificationError, match="revoked"):
        handshake(pki.crl_sign(ca_pem, ca_key, [{"serial": hex_serial(serial), "revoked_on": "2026-12-01"}], 30))
    other_ca, other_key = secrets.internal_ca("Another CA")
    with pytest.raises(ssl.SSLCertVerificationError, match="CRL"):
        handshake(pki.crl_sign(other_ca, other_key, [], 30))


def test_the_current_crl_is_kept_until_the_list_or_its_end_changes(ca):
    ca_pem, ca_key = ca
    revoked = [{"serial": "0A:1B", "revoked_on": "2026-12-01", "reason": "superseded"}]
    crl = pki.crl_sign(ca_pem, ca_key, revoked, 365)
    other_ca, other_key = secrets.internal_ca("Old CA")
    bundle = crl + pki.crl_sign(other_ca, other_key, [], 30)
    assert pki.crl_current(bundle, ca_pem, revoked, 30) == crl.strip()
    # another list, another reason, a CRL running out within renew_days, another CA's: due
    assert pki.crl_current(bundle, ca_pem, [], 30) == ""
    assert pki.crl_current(bundle, ca_pem, [dict(revoked[0], reason="key_compromise")], 30) == ""
    assert pki.crl_current(pki.crl_sign(ca_pem, ca_key, revoked, 20), ca_pem, revoked, 30) == ""
    assert pki.crl_current(bundle, other_ca, revoked, 1) == ""
    # a CA with the same name but another key: its CRL's signature does not verify
    twin_ca, _ = secrets.internal_ca("QueryGPT test internal CA")
    assert pki.crl_current(crl, twin_ca, revoked, 30) == ""
    assert pki.crl_current("", ca_pem, revoked, 30) == ""


def test_bad_revocation_entries_are_named():
    assert pki.revoked_problems([{"serial": "0A1B", "revoked_on": "2026-12-01"}]) == []
    problems = pki.revoked_problems([
        {"serial": 1234, "revoked_on": "2026-12-01"},
        {"serial": "0Z", "revoked_on": "2026-12-01"},
        {"serial": "0A", "revoked_on": "yesterday"},
        {"serial": "0A", "revoked_on": "2026-12-01", "reason": "lost"},
        {"revoked_on": "2026-12-01"},
    ])
    assert [p.split(":")[0] for p in problems] == [f"entry {i}" for i in range(1, 6)]
    assert "quote it" in problems[0] and "YYYY-MM-DD" in problems[2] and "key_compromise" in problems[3]
    assert pki.revoked_problems("0A") == ["expected a list of {serial, revoked_on, reason}, got str"]
    with pytest.raises(AnsibleFilterError, match="not the key of internal_pki_ca_cert"):
        pki.crl_sign(secrets.internal_ca("A")[0], secrets.internal_ca("B")[1], [], 30)


def test_a_ca_rotation_signs_the_old_cas_last_crl_with_the_inventorys_list(ca, tmp_path):
    ca_pem, ca_key = ca
    old_cert, _, serial = host_cert(ca_pem, ca_key, "qdrant-1")
    revoked = [{"serial": hex_serial(serial), "revoked_on": "2026-12-02"}]
    (tmp_path / "group_vars" / "all").mkdir(parents=True)
    (tmp_path / "group_vars" / "all" / "tls.yml").write_text(f'internal_pki_revoked:\n  - serial: "{hex_serial(serial)}"\n'
                                                            '    revoked_on: "2026-12-02"\n')
    assert secrets.inventory_revoked(tmp_path) == revoked
    vault = {secrets.INTERNAL_CA_CERT: ca_pem, secrets.INTERNAL_CA_KEY: ca_key}
    secrets.rotate_ca(vault, "QueryGPT test internal CA 2", revoked=secrets.inventory_revoked(tmp_path))
    old_crl = vault[secrets.INTERNAL_CA_PREVIOUS_CRL]
    assert vault[secrets.INTERNAL_CA_PREVIOUS] == ca_pem and vault[secrets.INTERNAL_CA_KEY] != ca_key
    # the old CA's CRL still lists the revoked certificate, and runs until the old CA does
    refused = openssl_verify(tmp_path, ca_pem, old_crl, old_cert)
    assert "certificate revoked" in refused.stdout + refused.stderr
    crl = x509.load_pem_x509_crl(old_crl.encode())
    old = x509.load_pem_x509_certificate(ca_pem.encode())
    assert crl.next_update_utc > NOW + datetime.timedelta(days=3000) and crl.next_update_utc <= old.not_valid_after_utc
    # preflight: the old CA is covered; without its CRL it is named
    assert pki.crl_missing_for([old_crl], [ca_pem], vault[secrets.INTERNAL_CA_CERT]) == []
    assert pki.crl_missing_for([], [ca_pem, vault[secrets.INTERNAL_CA_CERT]],
                               vault[secrets.INTERNAL_CA_CERT]) == ["QueryGPT test internal CA"]
    secrets.finish_ca_rotation(vault)
    assert secrets.INTERNAL_CA_PREVIOUS_CRL not in vault


def test_the_metrics_say_when_each_crl_and_the_certificate_run_out(ca):
    ca_pem, ca_key = ca
    cert, _, _ = host_cert(ca_pem, ca_key, "edge-a")
    crl = pki.crl_sign(ca_pem, ca_key, [], 100)
    text = pki.crl_metrics(crl, cert)
    until = int(x509.load_pem_x509_crl(crl.encode()).next_update_utc.timestamp())
    key_id = x509.SubjectKeyIdentifier.from_public_key(
        x509.load_pem_x509_certificate(ca_pem.encode()).public_key()).digest.hex()
    assert (f'internal_pki_crl_next_update_seconds{{issuer="QueryGPT test internal CA",issuer_key_id="{key_id}"}} '
            f'{until}') in text
    # two CAs of one name (a rotation on the day the CA was made): two series, told apart by key
    twin, twin_key = secrets.internal_ca("QueryGPT test internal CA")
    both = pki.crl_metrics(crl + pki.crl_sign(twin, twin_key, [], 100))
    series = [line.rsplit(" ", 1)[0] for line in both.splitlines() if not line.startswith("#")]
    assert len(series) == 2 and len(set(series)) == 2, both
    not_after = int(x509.load_pem_x509_certificate(cert.encode()).not_valid_after_utc.timestamp())
    assert f"internal_pki_certificate_not_after_seconds {not_after}" in text
    assert pki.crl_metrics(crl, cert) == text  # the same files, the same text
