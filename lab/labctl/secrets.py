"""Per-lab credentials: an SSH key pair and an ansible-vault file, generated on first `lab up`.

They live under .lab/ (git-ignored); the vault file sits where production keeps its own
(inventories/<env>/group_vars/all/vault.yml) so the playbooks read secrets the same way.
"""

from __future__ import annotations

import datetime
import ipaddress
import re
import secrets
import string
from collections.abc import Callable
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from .paths import LAB_INVENTORY, REPO, STATE, VENV
from .run import output, run

SSH_KEY = STATE / "id_ed25519"
# The lab's known hosts: where group_vars/all/connection.yml keeps them for environment "lab".
KNOWN_HOSTS = Path.home() / ".ssh" / "known_hosts.querygpt-lab"
VAULT_PASS = STATE / "vault-pass"
VAULT_FILE = LAB_INVENTORY / "group_vars" / "all" / "vault.yml"

# The wiring layer maps vault secrets to role variables (group_vars/all/secrets.yml): every
# `vault_<name>` it reads without a default is required in every environment's vault.
WIRING_SECRETS = REPO / "group_vars" / "all" / "secrets.yml"
# The lab's S3 endpoint (moto) has no instance profile to lean on: a static key pair, which
# the wiring reads only where it exists (vault_s3_*: default '').
LAB_ONLY_SECRETS = ["vault_s3_access_key_id", "vault_s3_secret_access_key"]


def required_vault_names() -> list[str]:
    """The vault variables the wiring reads with no default, in the order it reads them."""
    names: list[str] = []
    for match in re.finditer(r"\b(vault_\w+)\b(?!\s*\|\s*default)", WIRING_SECRETS.read_text()):
        if match.group(1) not in names:
            names.append(match.group(1))
    return names


# The environment's internal CA (roles/internal_pki): certificate and key, generated
# together (one is useless without the other).
INTERNAL_CA_CERT = "vault_internal_ca_cert"
INTERNAL_CA_KEY = "vault_internal_ca_key"
INTERNAL_CA_DAYS = 3650


def internal_ca(common_name: str = "QueryGPT lab internal CA", days: int = INTERNAL_CA_DAYS) -> tuple[str, str]:
    """(certificate PEM, key PEM) of a new self-signed CA that may sign only end-entity certs:
    the environment's internal CA (roles/internal_pki signs every host's certificate with it
    on the controller). bin/new-env and bin/lab make one per environment."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                          data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                          encipher_only=False, decipher_only=False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    return cert.public_bytes(serialization.Encoding.PEM).decode(), key_pem


def new_secret() -> str:
    """A random API key: alphanumeric (it goes into headers, YAML and env files unquoted), 48
    characters, like Terraform's random_password for the Secrets Manager entries."""
    alphabet = string.ascii_letters + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(48))


def add_missing_secrets(current: dict[str, str], names: list[str] | None = None,
                        fetch: Callable[[str], str | None] | None = None, ca_name: str = "QueryGPT lab internal CA",
                        ) -> list[str]:
    """Add to `current` every vault secret it lacks (required by the wiring, plus `names`);
    return the names added. Existing values stay. `fetch(name)` may supply a value (Secrets
    Manager); otherwise a new one is generated."""
    added = []
    for name in [*required_vault_names(), *(names or [])]:
        if name in (INTERNAL_CA_CERT, INTERNAL_CA_KEY) or current.get(name):
            continue
        current[name] = (fetch(name) if fetch else None) or new_secret()
        added.append(name)
    if not current.get(INTERNAL_CA_CERT) or not current.get(INTERNAL_CA_KEY):
        current[INTERNAL_CA_CERT], current[INTERNAL_CA_KEY] = internal_ca(ca_name)
        added += [INTERNAL_CA_CERT, INTERNAL_CA_KEY]
    return added


# A rotation of the internal CA (playbooks/runbooks/rotate_internal_ca.yml): the old CA's
# certificate stays here, trusted and never used to sign, until every host holds a certificate
# from the new one. Not required by the wiring: it exists only during a rotation.
INTERNAL_CA_PREVIOUS = "vault_internal_ca_previous_cert"
# ... and its certificate revocation list, signed when the rotation begins (the last thing its
# key signs): the hosts' checking clients refuse a certificate of a CA they hold no current CRL
# of (roles/internal_pki). It runs until the old CA itself does.
INTERNAL_CA_PREVIOUS_CRL = "vault_internal_ca_previous_crl"
# The CRL code the role uses on the controller (one implementation for both).
_PKI_FILTERS = REPO / "plugins" / "filter" / "internal_pki.py"


def _pki_filters():
    import importlib.util

    spec = importlib.util.spec_from_file_location("querygpt_internal_pki_filters", _PKI_FILTERS)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def inventory_revoked(inventory: Path) -> list[dict]:
    """internal_pki_revoked as the environment's inventory sets it (plain YAML under
    group_vars/all/; the vault is never read for it, as the list is not secret)."""
    found: list[dict] = []
    for path in sorted((inventory / "group_vars" / "all").glob("*.yml")):
        if path.name == "vault.yml":
            continue
        data = yaml.safe_load(path.read_text()) or {}
        if isinstance(data, dict) and "internal_pki_revoked" in data:
            found = data["internal_pki_revoked"] or []
    return found


class RotationError(ValueError):
    """The vault is not in the state the rotation step needs; the message says what to do."""


# The CA's vault names from before roles/journal_tls became roles/internal_pki. Vaults made
# then still hold them; bin/new-env and bin/lab rename them (playbooks/preflight.yml refuses
# them, docs/upgrading.md).
RENAMED_VAULT_NAMES = {
    "vault_journal_tls_ca_cert": INTERNAL_CA_CERT,
    "vault_journal_tls_ca_key": INTERNAL_CA_KEY,
    "vault_journal_tls_ca_previous_cert": INTERNAL_CA_PREVIOUS,
}


class RenameError(ValueError):
    """An old and a new vault name hold different values: which is right is the operator's call."""


def rename_old_vault_names(current: dict[str, str]) -> list[str]:
    """Move the values of the old vault names in `current` to their new names; return the old
    names it dropped. An old name beside its new one is dropped when the two agree or one is
    empty (the other is kept); different values raise RenameError before anything changes.
    The messages name variables only, never values."""
    conflicts = [old for old, new in RENAMED_VAULT_NAMES.items()
                 if current.get(old) and current.get(new) and current[old] != current[new]]
    if conflicts:
        raise RenameError(
            "; ".join(f"{old} and {RENAMED_VAULT_NAMES[old]} are both set, to different values" for old in conflicts)
            + ": the first is the name from before the rename of the internal CA's vault keys. Keep the value the "
            "hosts' certificates are signed with under the new name and delete the old name "
            "(ansible-vault edit; docs/upgrading.md), then run this again")
    renamed = []
    for old, new in RENAMED_VAULT_NAMES.items():
        if old not in current:
            continue
        value = current.pop(old)
        if new not in current or (value and not current[new]):
            current[new] = value
        renamed.append(old)
    return renamed


def describe_renames(renamed: list[str]) -> str:
    """"renamed a to b, c to d" for the operator (names only)."""
    return "renamed " + ", ".join(f"{old} to {RENAMED_VAULT_NAMES[old]}" for old in renamed)


def rotate_ca(current: dict[str, str], ca_name: str, revoked: list[dict] | None = None) -> None:
    """Start a CA rotation in `current`: the CA moves to INTERNAL_CA_PREVIOUS with a last CRL
    listing `revoked` (internal_pki_revoked) in INTERNAL_CA_PREVIOUS_CRL; its key is dropped:
    nothing signs with the old CA again. A new CA, named `ca_name`, takes its place."""
    if current.get(INTERNAL_CA_PREVIOUS):
        raise RotationError(f"{INTERNAL_CA_PREVIOUS} is set: a rotation is under way. Run "
                            "playbooks/runbooks/rotate_internal_ca.yml, then --finish-ca-rotation")
    if not current.get(INTERNAL_CA_CERT):
        raise RotationError(f"{INTERNAL_CA_CERT} is not set: there is no CA to rotate")
    old = x509.load_pem_x509_certificate(current[INTERNAL_CA_CERT].encode())
    days = (old.not_valid_after_utc - datetime.datetime.now(datetime.timezone.utc)).days
    if days < 2:
        raise RotationError(f"{INTERNAL_CA_CERT} runs out in {days} day(s): too late for an overlap; "
                            "make a new environment CA and sign every host again (docs/runbooks/rotate_internal_ca.md)")
    crl = _pki_filters().crl_sign(current[INTERNAL_CA_CERT], current[INTERNAL_CA_KEY], revoked or [], days)
    current[INTERNAL_CA_PREVIOUS] = current[INTERNAL_CA_CERT]
    current[INTERNAL_CA_PREVIOUS_CRL] = crl
    current[INTERNAL_CA_CERT], current[INTERNAL_CA_KEY] = internal_ca(ca_name)


def finish_ca_rotation(current: dict[str, str]) -> None:
    """End a CA rotation in `current`: the old CA is no longer trusted (run the runbook first)."""
    current.pop(INTERNAL_CA_PREVIOUS_CRL, None)
    if not current.pop(INTERNAL_CA_PREVIOUS, None):
        raise RotationError(f"{INTERNAL_CA_PREVIOUS} is not set: no rotation is under way")


# A rotation of the Qdrant API keys (playbooks/runbooks/rotate_secrets.yml): the keys the peers
# held stay here beside the new ones until every peer holds the new ones; the clients hold both
# meanwhile. Not required by the wiring: they exist only during a rotation.
QDRANT_KEYS = ("vault_qdrant_api_key", "vault_qdrant_read_only_api_key")


def previous_name(name: str) -> str:
    return f"{name}_previous"


def rotate_secrets(current: dict[str, str], fetch: Callable[[str], str | None] | None = None) -> None:
    """Start a rotation of the Qdrant keys in `current`: each key moves to its `_previous` name
    and a new one takes its place: `fetch(name)` (Secrets Manager, after Terraform replaced the
    value there), or a generated one when there is no `fetch`."""
    if any(current.get(previous_name(name)) for name in QDRANT_KEYS):
        raise RotationError("a rotation of the Qdrant keys is under way (vault_qdrant_*_previous is set). "
                            "Run playbooks/runbooks/rotate_secrets.yml, then --finish-secrets-rotation")
    new: dict[str, str] = {}
    for name in QDRANT_KEYS:
        if not current.get(name):
            raise RotationError(f"{name} is not set: there is no key to rotate")
        value = fetch(name) if fetch else new_secret()
        if not value:
            raise RotationError(f"no new value for {name} in Secrets Manager")
        if value == current[name]:
            raise RotationError(
                f"Secrets Manager still holds the current {name}: replace it first, e.g. terraform apply "
                f"-replace='random_password.app[\"{name.removeprefix('vault_').replace('_', '-')}\"]' "
                "(docs/runbooks/rotate_secrets.md)")
        new[name] = value
    if new["vault_qdrant_api_key"] == new["vault_qdrant_read_only_api_key"]:
        raise RotationError("the new full-access and read-only keys are the same value")
    for name, value in new.items():
        current[previous_name(name)] = current[name]
        current[name] = value


def finish_secrets_rotation(current: dict[str, str]) -> None:
    """End a rotation of the Qdrant keys in `current`: the old keys are forgotten (run the
    runbook first: until it has run, the peers still hold them)."""
    dropped = [current.pop(previous_name(name), None) for name in QDRANT_KEYS]
    if not any(dropped):
        raise RotationError("vault_qdrant_*_previous is not set: no rotation of the Qdrant keys is under way")


# The lab's first admin of the application (playbooks/runbooks/create_admin.yml): its password
# is made once and kept here, so every `lab up` passes the same one and changes nothing.
ADMIN_USERNAME = "admin"
ADMIN_PASSWORD = STATE / "admin-password"


def ensure_admin_password(path: Path = ADMIN_PASSWORD) -> str:
    """The lab admin's password: read from `path`, or generated (32 random URL-safe characters,
    nothing a YAML or Jinja reader would take for syntax) and written there 0600 first."""
    if path.exists():
        path.chmod(0o600)
        password = path.read_text().strip()
        if len(password) >= 12:
            return password
    path.parent.mkdir(parents=True, exist_ok=True)
    password = secrets.token_urlsafe(24)
    path.touch(mode=0o600)
    path.chmod(0o600)  # also when it existed, too short, with another mode
    path.write_text(password + "\n")
    return password


def ensure_ssh_key() -> str:
    if not SSH_KEY.exists():
        STATE.mkdir(parents=True, exist_ok=True)
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "querygpt-lab", "-f", str(SSH_KEY)])
    return SSH_KEY.with_suffix(".pub").read_text().strip()


def _vault(*args: str, input_text: str | None = None) -> str:
    # Labelled `lab`: ansible.cfg's vault_identity_list finds its password (bin/lab-vault-client).
    return run([str(VENV / "bin" / "ansible-vault"), *args, "--vault-id", f"lab@{VAULT_PASS}"],
               capture=True, quiet=True, input_text=input_text).stdout


def ensure_vault() -> None:
    """Create the lab vault, or add the secrets it lacks, without printing any value."""
    STATE.mkdir(parents=True, exist_ok=True)
    if not VAULT_PASS.exists():
        VAULT_PASS.write_text(secrets.token_urlsafe(32) + "\n")
        VAULT_PASS.chmod(0o600)
    current: dict[str, str] = {}
    if VAULT_FILE.exists():
        current = yaml.safe_load(_vault("view", str(VAULT_FILE))) or {}
    renamed = _rename_in_lab_vault(current)
    if not add_missing_secrets(current, LAB_ONLY_SECRETS) and not renamed:
        return
    _write_vault(current)


def edit_vault(change: Callable[[dict[str, str]], None]) -> None:
    """Apply `change` to the lab vault's secrets (rotate_ca, rotate_secrets, the finishes) and
    write it back."""
    current = yaml.safe_load(_vault("view", str(VAULT_FILE))) or {}
    _rename_in_lab_vault(current)
    change(current)
    _write_vault(current)


def _rename_in_lab_vault(current: dict[str, str]) -> list[str]:
    """A lab vault from before the rename of the CA's names: rename them, say which."""
    renamed = rename_old_vault_names(current)
    if renamed:
        print(f"lab vault {VAULT_FILE}: {describe_renames(renamed)} (values not shown)")
    return renamed


def _write_vault(current: dict[str, str]) -> None:
    body = "# Lab secrets, generated by `bin/lab up`; never committed.\n" + yaml.safe_dump(current)
    encrypted = _vault("encrypt", "--encrypt-vault-id", "lab", "--output", "-", "-", input_text=body)
    VAULT_FILE.parent.mkdir(parents=True, exist_ok=True)
    VAULT_FILE.write_text(encrypted)


def ssh_config(bastion_address: str, lab_cidrs: list[str]) -> Path:
    """An ssh_config for people and tests: the bastion directly, every other host through it,
    with the known-hosts policy and file the playbooks use (group_vars/all/connection.yml)."""
    path = STATE / "ssh_config"
    common = (
        f"  User admin\n  IdentityFile {SSH_KEY}\n  IdentitiesOnly yes\n"
        f"  UserKnownHostsFile {KNOWN_HOSTS}\n  StrictHostKeyChecking accept-new\n"
    )
    patterns = " ".join(_ssh_pattern(cidr) for cidr in lab_cidrs)
    path.write_text(
        "# Generated by bin/lab: the bastion directly, everything else through it.\n"
        f"Host {bastion_address}\n  ProxyJump none\n{common}\n"
        f"Host {patterns}\n  ProxyJump {bastion_address}\n{common}"
    )
    return path


def _ssh_pattern(cidr: str) -> str:
    """An ssh_config Host pattern covering a CIDR on octet boundaries (10.42.0.0/16 -> 10.42.*)."""
    network = ipaddress.ip_network(cidr)
    octets = network.network_address.exploded.split(".")[: network.prefixlen // 8]
    return ".".join(octets + ["*"])


def fingerprint() -> str:
    return output(["ssh-keygen", "-l", "-f", str(SSH_KEY)])
