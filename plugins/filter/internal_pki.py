"""The internal PKI's certificate revocation lists (roles/internal_pki), on the controller.

Every host keeps `crl.pem` beside `ca.pem`: one CRL from the signing CA, signed on the
controller with the CA key from the vault, then the CRLs of the other CAs the hosts still trust
during a rotation (signed when the rotation began, as the old CA's key is dropped then). The
clients that can check revocation (nginx, the backend, libpq) load it, and OpenSSL then refuses
a certificate whose issuer has no current CRL there: the role signs anew before one runs out.

A CRL holds no secret, but signing reads the CA key: no message here carries any part of it.
"""

from __future__ import annotations

import datetime
import re
from typing import Any

from ansible.errors import AnsibleFilterError
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import CRLEntryExtensionOID

_PEM_CRL = re.compile(r"-----BEGIN X509 CRL-----.+?-----END X509 CRL-----", re.S)
_HEX = re.compile(r"^[0-9A-Fa-f]+$")
# RFC 5280 reason codes, by the names the inventory uses (cryptography's ReasonFlags names)
REASONS = {flag.name: flag for flag in x509.ReasonFlags if flag is not x509.ReasonFlags.remove_from_crl}
# A CRL counts from a day back, as the certificates do: a host whose clock is behind must not
# find it "not yet valid".
_BACKDATE = datetime.timedelta(days=1)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def revoked_serial(value: Any) -> int:
    """A certificate serial as `openssl x509 -noout -serial` prints it (hex, colons allowed)."""
    text = str(value).strip().replace(":", "")
    if text.lower().startswith("serial="):
        text = text[len("serial="):]
    if not isinstance(value, str) or not _HEX.match(text):
        raise AnsibleFilterError(
            f"internal_pki_revoked: serial {value!r} is not a hex string as openssl x509 -noout -serial prints it "
            "(quote it in YAML)"
        )
    return int(text, 16)


def _revoked(entries: Any) -> dict[int, dict[str, Any]]:
    if not isinstance(entries, list):
        raise AnsibleFilterError("internal_pki_revoked: expected a list of {serial, revoked_on, reason}")
    out: dict[int, dict[str, Any]] = {}
    for entry in entries:
        if not isinstance(entry, dict) or "serial" not in entry or "revoked_on" not in entry:
            raise AnsibleFilterError(f"internal_pki_revoked: every entry needs serial and revoked_on, got {entry!r}")
        try:
            when = datetime.datetime.strptime(str(entry["revoked_on"]), "%Y-%m-%d")
        except ValueError:
            raise AnsibleFilterError(
                f"internal_pki_revoked: revoked_on {entry['revoked_on']!r} is not a date (YYYY-MM-DD)"
            ) from None
        reason = entry.get("reason", "unspecified")
        if reason not in REASONS:
            raise AnsibleFilterError(f"internal_pki_revoked: reason {reason!r} is not one of {sorted(REASONS)}")
        out[revoked_serial(entry["serial"])] = {
            "date": when.replace(tzinfo=datetime.timezone.utc),
            "reason": REASONS[reason],
        }
    return out


def _cert(pem: str, what: str) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(str(pem).encode())
    except ValueError:
        raise AnsibleFilterError(f"{what} is not a PEM certificate") from None


def split_crls(bundle: Any) -> list[str]:
    """The PEM CRLs in `bundle`, in order (nothing else is kept)."""
    return _PEM_CRL.findall(str(bundle or ""))


def _issued_by(crl: x509.CertificateRevocationList, ca: x509.Certificate) -> bool:
    if crl.issuer != ca.subject:
        return False
    try:
        return crl.is_signature_valid(ca.public_key())
    except InvalidSignature:
        return False


def crl_current(bundle: Any, ca_cert: str, revoked: Any, renew_days: Any) -> str:
    """The PEM CRL in `bundle` that `ca_cert` signed, if it lists exactly `revoked` (serials,
    dates, reasons) and runs for more than `renew_days` days yet; "" when one is due."""
    ca = _cert(ca_cert, "internal_pki_ca_cert")
    wanted = _revoked(revoked)
    horizon = _now() + datetime.timedelta(days=int(renew_days))
    for pem in split_crls(bundle):
        try:
            crl = x509.load_pem_x509_crl(pem.encode())
        except ValueError:
            continue
        if not _issued_by(crl, ca) or crl.next_update_utc is None or crl.next_update_utc <= horizon:
            continue
        listed = {
            entry.serial_number: {
                "date": entry.revocation_date_utc,
                "reason": _reason(entry),
            }
            for entry in crl
        }
        if listed == wanted:
            return pem
    return ""


def _reason(entry: x509.RevokedCertificate) -> x509.ReasonFlags:
    try:
        return entry.extensions.get_extension_for_oid(CRLEntryExtensionOID.CRL_REASON).value.reason
    except x509.ExtensionNotFound:
        return x509.ReasonFlags.unspecified


def crl_sign(ca_cert: str, ca_key: str, revoked: Any, days: Any) -> str:
    """A new PEM CRL of `ca_cert`, signed with `ca_key`, listing `revoked`, valid `days` days."""
    ca = _cert(ca_cert, "internal_pki_ca_cert")
    try:
        key = serialization.load_pem_private_key(str(ca_key).encode(), password=None)
    except (ValueError, TypeError):
        raise AnsibleFilterError("internal_pki_ca_key is not an unencrypted PEM private key") from None
    if key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ) != ca.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo):
        raise AnsibleFilterError("internal_pki_ca_key is not the key of internal_pki_ca_cert")
    now = _now()
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.subject)
        .last_update(now - _BACKDATE)
        .next_update(now + datetime.timedelta(days=int(days)))
        # increasing, as RFC 5280 asks: the second it was signed
        .add_extension(x509.CRLNumber(int(now.timestamp())), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.public_key()), critical=False)
    )
    for serial, entry in sorted(_revoked(revoked).items()):
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder()
            .serial_number(serial)
            .revocation_date(entry["date"])
            .add_extension(x509.CRLReason(entry["reason"]), critical=False)
            .build()
        )
    crl = builder.sign(key, hashes.SHA256())
    return crl.public_bytes(serialization.Encoding.PEM).decode()


def revoked_problems(entries: Any) -> list[str]:
    """What is wrong with internal_pki_revoked, one message per problem; [] when nothing is."""
    if not isinstance(entries, list):
        return [f"expected a list of {{serial, revoked_on, reason}}, got {type(entries).__name__}"]
    problems = []
    for index, entry in enumerate(entries):
        try:
            _revoked([entry])
        except AnsibleFilterError as exc:
            problems.append(f"entry {index + 1}: {str(exc).removeprefix('internal_pki_revoked: ')}")
    return problems


def crl_missing_for(crls: Any, ca_certs: Any, signing_ca: Any = "") -> list[str]:
    """The common names of the CAs in `ca_certs` (but the signing CA, whose CRL the role signs)
    that no CRL in `crls` (PEMs or bundles) is signed by and runs for: a certificate of theirs
    would be refused by every checking client."""
    try:
        signing = _cert(signing_ca, "internal_pki_ca_cert").public_key() if signing_ca else None
    except AnsibleFilterError:
        signing = None  # its own check names it
    parsed = []
    for pem in split_crls("\n".join(str(c) for c in (crls or []))):
        try:
            parsed.append(x509.load_pem_x509_crl(pem.encode()))
        except ValueError:
            continue
    missing = []
    now = _now()
    for index, pem in enumerate(ca_certs or []):
        try:
            ca = _cert(pem, "internal_pki_ca_trusted")
        except AnsibleFilterError:
            missing.append(f"#{index + 1} (not a readable certificate)")
            continue
        if signing is not None and ca.public_key() == signing:
            continue
        if not any(_issued_by(c, ca) and c.next_update_utc and c.next_update_utc > now for c in parsed):
            names = ca.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
            missing.append(str(names[0].value) if names else ca.subject.rfc4514_string())
    return missing


def crl_metrics(bundle: Any, certificate: Any = "") -> str:
    """Prometheus text (node_exporter's textfile collector): when each CRL in `bundle` and the
    host certificate run out, as Unix times. Only file contents: the same files, the same text."""
    lines = [
        "# HELP internal_pki_crl_next_update_seconds When a certificate revocation list the host's clients check runs out.",
        "# TYPE internal_pki_crl_next_update_seconds gauge",
    ]
    for pem in split_crls(bundle):
        crl = x509.load_pem_x509_crl(pem.encode())
        names = crl.issuer.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
        issuer = (str(names[0].value) if names else crl.issuer.rfc4514_string()).replace("\\", "\\\\").replace('"', '\\"')
        until = int(crl.next_update_utc.timestamp()) if crl.next_update_utc else 0
        # the issuer's key too: two CAs of a rotation may share a name, and a duplicate series
        # would make the textfile collector drop the whole file
        try:
            key_id = crl.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier.hex()
        except x509.ExtensionNotFound:
            key_id = ""
        lines.append(f'internal_pki_crl_next_update_seconds{{issuer="{issuer}",issuer_key_id="{key_id}"}} {until}')
    if certificate:
        cert = _cert(certificate, "the host certificate")
        lines += [
            "# HELP internal_pki_certificate_not_after_seconds When the host's internal certificate runs out.",
            "# TYPE internal_pki_certificate_not_after_seconds gauge",
            f"internal_pki_certificate_not_after_seconds {int(cert.not_valid_after_utc.timestamp())}",
        ]
    return "\n".join(lines) + "\n"


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {
            "internal_pki_crl_current": crl_current,
            "internal_pki_crl_sign": crl_sign,
            "internal_pki_crl_missing_for": crl_missing_for,
            "internal_pki_crl_metrics": crl_metrics,
            "internal_pki_revoked_serial": revoked_serial,
            "internal_pki_revoked_problems": revoked_problems,
        }
