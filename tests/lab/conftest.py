"""Fixtures for tests that run against a converged lab (`bin/lab up`).

These tests exercise the lab the way an operator does: over SSH through the bastion, with the
lab inventory. They fail, rather than skip, when no lab is running: `bin/test` brings one up
before it runs them.

Every QueryGPT API call but /health needs an identity (docs/access-control.md): `lab_identity`
is the admin `lab-tests` with a new password and API token, made once per session with the
backend's CLI (labview.lab_admin); `lab_token` is its token, which `edge_api` sends by default.
"""

from __future__ import annotations

import json
import shlex
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from labview import (  # noqa: E402,F401  (re-exported for the tests)
    AUTH_HEADER_DIR, REPO, Identity, Lab, acme_root_pem, ansible_env, auth_header_file, lab_admin, load_lab,
)

ROOT_ON_EDGE = "/var/tmp/lab-acme-root.pem"


@pytest.fixture(scope="session")
def lab() -> Lab:
    try:
        return load_lab()
    except RuntimeError as err:
        pytest.fail(str(err))


@pytest.fixture(scope="session")
def rollout_site(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """benchmarks/rollouts.py's site (a collection holding the schema the load asks about, and
    the load's identities), made once for every module that changes the fleet under load."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    from rollouts import open_site

    return open_site(lab, tmp_path_factory.mktemp("pdf"))


@pytest.fixture(scope="session")
def lab_identity(lab: Lab) -> Iterator[Identity]:
    """The admin `lab-tests`: a random password (given to the CLI on stdin) and an API token
    (valid for a day), made on the first backend host. Its repr shows neither secret. At the
    end of the session the header files and cookie jars the tests left on the edges go."""
    try:
        identity = lab_admin(lab)
    except RuntimeError as err:
        pytest.fail(str(err))
    yield identity
    for edge in lab.groups["edge"]:
        lab.exec(edge, f"rm -rf {AUTH_HEADER_DIR}")


@pytest.fixture(scope="session")
def lab_token(lab_identity: Identity) -> str:
    """`lab-tests`' API token, for `Authorization: Bearer`. Never put it in a message."""
    return lab_identity.token


@dataclass
class EdgeResponse:
    """A response through the edge: its status, headers (names in lower case; a repeated one,
    e.g. Set-Cookie, joined by newlines) and body (parsed JSON, else the text; None when empty)."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None


class EdgeApi:
    """The public API through an edge's nginx, over TLS verified against the lab's ACME root
    for the edge's own name, with curl on the edge itself (to 127.0.0.1, so the client address
    nginx passes on is 127.0.0.1; `source="127.x.y.z"` binds another loopback address, a client
    of its own for the backend's per-address login throttle).

    `edge_api(method, path, *curl_args)` -> (status, JSON body), authenticated as `lab-tests`;
    `auth=None` sends no credentials, `auth=edge_api.header(token)` another token's. `timeout`
    bounds the whole request (curl --max-time). `edge_api.response(...)` -> EdgeResponse, with
    the headers."""

    def __init__(self, lab: Lab, edge: str, token: str) -> None:
        self.lab, self.edge = lab, edge
        self.name = str(lab.render("nginx_server_name", edge))
        pem = acme_root_pem(lab)
        assert lab.exec(edge, f"printf %s {shlex.quote(pem)} > {ROOT_ON_EDGE}").returncode == 0
        self.token_header = self.header(token)

    def header(self, token: str) -> str:
        """The curl file holding `Authorization: Bearer <token>` on the edge (the token stays
        off the command line, so off every failure message)."""
        return auth_header_file(self.lab, self.edge, token)

    def _curl(self, method: str, path: str, args: tuple[str, ...], auth: str | None, timeout: int,
              headers: bool, source: str) -> tuple[str, int]:
        command = " ".join([
            f"curl -sS -m {timeout} -w '\\n%{{http_code}}' -H 'Expect:'", *(["-D -"] if headers else []),
            *([f"--interface {shlex.quote(source)}"] if source else []),
            f"--resolve {self.name}:443:127.0.0.1 --cacert {ROOT_ON_EDGE}",
            *([f"-H @{auth}"] if auth else []), f"-X {method}", *args, shlex.quote(f"https://{self.name}/api{path}")])
        done = self.lab.exec(self.edge, command, timeout=timeout + 10)
        text, _, status = done.stdout.rpartition("\n")
        assert done.returncode == 0, f"curl {method} /api{path} on {self.edge}: {done.stderr[-1000:]}"
        return text, int(status)

    def __call__(self, method: str, path: str, *args: str, timeout: int = 120, auth: str | None | bool = True,
                 source: str = "") -> tuple[int, Any]:
        text, status = self._curl(method, path, args, self._auth(auth), timeout, False, source)
        return status, json.loads(text) if text.strip() else None

    def response(self, method: str, path: str, *args: str, timeout: int = 120, auth: str | None | bool = True,
                 source: str = "") -> EdgeResponse:
        text, status = self._curl(method, path, args, self._auth(auth), timeout, True, source)
        # lab.exec reads text with universal newlines: the CRLF of the header lines arrive as LF
        head, body = "", text.replace("\r\n", "\n")
        # header blocks until the final (non-1xx) response's; then the body
        while body.startswith("HTTP/"):
            head, _, body = body.partition("\n\n")
            if not head.split(" ", 2)[1].startswith("1"):
                break
        found: dict[str, str] = {}
        for line in head.split("\n")[1:]:
            name, _, value = line.partition(":")
            key = name.strip().lower()
            found[key] = f"{found[key]}\n{value.strip()}" if key in found else value.strip()
        try:
            parsed: Any = json.loads(body) if body.strip() else None
        except json.JSONDecodeError:
            parsed = body
        return EdgeResponse(status, found, parsed)

    def _auth(self, auth: str | None | bool) -> str | None:
        if auth is True:
            return self.token_header
        return auth or None

    def json_body(self, value: Any) -> tuple[str, ...]:
        """curl arguments sending `value` as the JSON body."""
        return ("-H 'Content-Type: application/json'", "--data-binary " + shlex.quote(json.dumps(value)))

    def cookie_jar(self) -> str:
        """A new, empty cookie file on the edge (curl's `-b <jar> -c <jar>` keeps the session)."""
        path = f"{AUTH_HEADER_DIR}/cookies-{uuid.uuid4().hex}"
        assert self.lab.exec(self.edge, f"umask 077 && mkdir -p {AUTH_HEADER_DIR} && : > {path}").returncode == 0
        return path


@pytest.fixture(scope="session")
def edge_api(lab: Lab, lab_token: str) -> EdgeApi:
    """The public API through the first edge, as `lab-tests` unless told otherwise (EdgeApi)."""
    return EdgeApi(lab, lab.groups["edge"][0], lab_token)
