"""Readiness: can we reach the two services every real request needs?

Kept separate from ``/health`` (liveness): a load balancer should stop
sending traffic while Qdrant or Ollama is down, but systemd should not
restart a healthy process because a dependency is.

The database (QUERYGPT_DATABASE_HOSTS) must answer too, with its schema at least at the
revision this code needs: the application never migrates by itself, so "schema behind" here
means `querygpt-backend migrate` has not run yet for this release.

Ollama is a pool (QUERYGPT_OLLAMA_URLS) and Qdrant a cluster (QUERYGPT_QDRANT_URLS, one URL
per peer): the backend is ready when at least one Qdrant peer answers ``/readyz`` and at least
one Ollama host answers, since an operation moves on to the next peer or host when one fails.
Every peer and host is asked (in parallel, so a hung one costs one probe timeout, not one
each), and its answer is reported under its position in its list (``qdrant-1``, ...,
``ollama-1``, ...), never its address: the body names no internal address, as before.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import httpx

from .database import Database
from .errors import UpstreamError
from .ollama import OllamaClient
from .vectorstore import ApiKeys

# A probe must answer quickly even if a dependency hangs.
PROBE_TIMEOUT_SECONDS = 3.0


@dataclass(frozen=True)
class Readiness:
    #: "qdrant" and "ollama" ("ok" when at least one peer / host answers): "ok" or why not.
    checks: dict[str, str]
    #: Each Ollama host by name (``ollama-1``, ...), in the same form as the checks.
    ollama_hosts: dict[str, str] = field(default_factory=dict)
    #: Each Qdrant peer by name (``qdrant-1``, ...), in the same form as the checks.
    qdrant_peers: dict[str, str] = field(default_factory=dict)

    @property
    def ready(self) -> bool:
        return all(v == "ok" for v in self.checks.values())

    @property
    def failed(self) -> list[str]:
        return [name for name, v in self.checks.items() if v != "ok"]


class ReadinessProbe:
    def __init__(
        self,
        qdrant_urls: str | Sequence[str],
        qdrant_api_key: str | Sequence[str] | None,
        ollama: OllamaClient,
        *,
        timeout: float,
        transport: httpx.BaseTransport | None = None,
        verify: ssl.SSLContext | bool = True,
        database: Database | None = None,
        schema_head: Callable[[], str | None] | None = None,
    ) -> None:
        self._database = database
        self._schema_head = schema_head
        self._timeout = min(timeout, PROBE_TIMEOUT_SECONDS)
        urls = (qdrant_urls,) if isinstance(qdrant_urls, str) else tuple(qdrant_urls)
        self._qdrant = tuple(
            httpx.Client(
                base_url=url,
                timeout=self._timeout,
                # the api-key header, or two keys during a rotation (vectorstore.ApiKeys)
                transport=ApiKeys(qdrant_api_key, transport or httpx.HTTPTransport(verify=verify)),
            )
            for url in urls
        )
        self._ollama = ollama

    def close(self) -> None:
        for client in self._qdrant:
            client.close()

    def check(self) -> Readiness:
        # The database is asked while the Qdrant peers and Ollama hosts are.
        with ThreadPoolExecutor(1, thread_name_prefix="database-probe") as pool:
            database = pool.submit(self._check_database) if self._database else None
            peers = self._check_qdrant_peers()
            hosts = self._check_ollama_hosts()
            checks = {
                "qdrant": _pool_state(peers, "none of the {} Qdrant peers answered (see qdrant_peers)"),
                "ollama": _pool_state(hosts, "none of the {} Ollama hosts answered (see ollama_hosts)"),
            }
            if database is not None:
                checks["database"] = database.result()
        return Readiness(checks, hosts, peers)

    def _check_database(self) -> str:
        """"ok", or why not; the reason names no address (the driver's message may)."""
        assert self._database is not None
        try:
            revision = self._database.schema_revision()
        except UpstreamError as exc:
            # Logged with the address by nobody else: readiness failures are polled often,
            # so only the class of the failure is reported.
            reason = "unreachable" if exc.status_code == 503 else "error"
            cause = exc.__cause__
            name = type(getattr(cause, "orig", None) or cause).__name__ if cause else "error"
            return f"{reason}: {name}"
        if revision is None:
            return "not ready: schema not created; run `querygpt-backend migrate`"
        head = self._schema_head() if self._schema_head else None
        if head and revision != head and revision in _older(head):
            return (
                f"not ready: schema behind (database at revision {revision}, this release needs "
                f"{head}); run `querygpt-backend migrate`"
            )
        return "ok"

    def _check_qdrant_peers(self) -> dict[str, str]:
        states = _each(self._check_qdrant, len(self._qdrant), "qdrant-probe")
        return {f"qdrant-{index + 1}": state for index, state in enumerate(states)}

    def _check_qdrant(self, peer: int) -> str:
        try:
            response = self._qdrant[peer].get("/readyz")
        except httpx.HTTPError as exc:
            return f"unreachable: {type(exc).__name__}"
        if response.status_code != 200:
            return f"not ready: /readyz answered HTTP {response.status_code}"
        return "ok"

    def _check_ollama_hosts(self) -> dict[str, str]:
        hosts = self._ollama.hosts
        states = _each(self._check_ollama, len(hosts), "ollama-probe")
        return {host.name: state for host, state in zip(hosts, states, strict=True)}

    def _check_ollama(self, host: int) -> str:
        try:
            self._ollama.version(timeout=self._timeout, host=host)
        except UpstreamError as exc:
            return f"not ready: {exc.detail}"
        return "ok"


def _each(check: Callable[[int], str], count: int, name: str) -> list[str]:
    """``check`` of each of ``count`` members, in parallel when there are several."""
    if count == 1:
        return [check(0)]
    # Threads of this probe only: concurrent probes never queue behind a hung member.
    with ThreadPoolExecutor(count, thread_name_prefix=name) as pool:
        return list(pool.map(check, range(count)))


def _pool_state(members: dict[str, str], none_answered: str) -> str:
    """"ok" when at least one member answers; else, with one member, its own state."""
    states = list(members.values())
    if "ok" in states:
        return "ok"
    if len(states) == 1:
        return states[0]
    return "not ready: " + none_answered.format(len(states))


def _older(head: str) -> frozenset[str]:
    """Revisions before ``head`` that this code knows (a newer, unknown one is fine:
    expand/contract keeps an older release working on a newer schema)."""
    from .migrate import known_revisions

    return known_revisions() - {head}
