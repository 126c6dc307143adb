"""Certificate revocation lists for the tests, signed as roles/internal_pki signs crl.pem: by
the CA's key, a day old, valid for 30 more, listing the given serials. Shared by the backend's
internal TLS tests and the backup program's."""

from __future__ import annotations

import datetime
from collections.abc import Iterable
from pathlib import Path

import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization


def serial_of(cert_pem: bytes) -> int:
    return x509.load_pem_x509_certificate(cert_pem).serial_number


def write_crl(ca: trustme.CA, path: Path, revoked: Iterable[int] = ()) -> str:
    """The CRL of `ca` listing the serials `revoked`, written to `path` (PEM); its path."""
    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem.bytes())
    key = serialization.load_pem_private_key(ca.private_key_pem.bytes(), None)
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateRevocationListBuilder().issuer_name(ca_cert.subject)
               .last_update(now - datetime.timedelta(days=1)).next_update(now + datetime.timedelta(days=30)))
    for serial in revoked:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(now).build())
    path.write_bytes(builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM))
    return str(path)
