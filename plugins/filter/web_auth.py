"""bcrypt hashes for the basic auth of Prometheus's and Alertmanager's web configuration.

exporter-toolkit (the web server of Prometheus, Alertmanager and the exporters) checks basic
auth passwords against bcrypt hashes in its web configuration file. A hash with a random salt
would rewrite the file on every run, so the salt is derived from a non-secret seed (the
environment and the host): the same password and seed always give the same hash, and a new
password gives a new one. The salt is not secret in bcrypt; it only has to differ between
the places a password is stored.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import bcrypt
from ansible.errors import AnsibleFilterError

# bcrypt's own base64 alphabet, in the order of standard base64's.
_STD = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_BCRYPT = b"./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"


def bcrypt_hash(password: Any, seed: Any, rounds: int = 10) -> str:
    """The bcrypt ($2b$) hash of `password` with a salt derived from `seed` (16 bytes of its
    SHA-256): deterministic, so a template holding it changes only with the password."""
    if not isinstance(password, str) or not password:
        raise AnsibleFilterError("bcrypt_hash: the password must be a non-empty string")
    if len(password.encode()) > 72:
        raise AnsibleFilterError("bcrypt_hash: bcrypt reads at most 72 bytes of a password")
    rounds = int(rounds)
    if not 4 <= rounds <= 31:
        raise AnsibleFilterError(f"bcrypt_hash: rounds must be 4-31, got {rounds}")
    raw = hashlib.sha256(f"querygpt-web-auth:{seed}".encode()).digest()[:16]
    salt = base64.b64encode(raw).rstrip(b"=").translate(bytes.maketrans(_STD, _BCRYPT))
    return bcrypt.hashpw(password.encode(), b"$2b$%02d$" % rounds + salt).decode()


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"bcrypt_hash": bcrypt_hash}
