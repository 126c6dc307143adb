"""Readiness: can we reach the two services every real request needs?

Kept separate from ``/health`` (liveness): a load balancer should stop
sending traffic while Qdrant or Ollama is down, but systemd should not
restart a healthy process because a dependency is.

Ollama is a pool (QUERYGPT_OLLAMA_URLS): the backend is ready when Qdrant and at least one
Ollama host answer. Every host is asked (in parallel, so a hung host costs one probe timeout,
not one per host), and its answer is reported under its position in the list (``ollama-1``,
``ollama-2``, ...), never its address: the body names no internal address, as before.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import httpx

from .errors import UpstreamError
from .ollama import OllamaClient

# A probe must answer quickly even if a dependency hangs.
PROBE_TIMEOUT_SECONDS = 3.0


@dataclass(frozen=True)
class Readiness:
    #: "qdrant" and "ollama" (the pool: "ok" when at least one host answers): "ok" or why not.
    checks: dict[str, str]
    #: Each Ollama host by name (``ollama-1``, ...), in the same form as the checks.
    ollama_hosts: dict[str, str] = field(default_factory=dict)

    @property
    def ready(self) -> bool:
        return all(v == "ok" for v in self.checks.values())

    @property
    def failed(self) -> list[str]:
        return [name for name, v in self.checks.items() if v != "ok"]


class ReadinessProbe:
    def __init__(
        self,
        qdrant_url: str,
        qdrant_api_key: str | None,
        ollama: OllamaClient,
        *,
        timeout: float,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        headers = {"api-key": qdrant_api_key} if qdrant_api_key else {}
        self._timeout = min(timeout, PROBE_TIMEOUT_SECONDS)
        self._qdrant = httpx.Client(
            base_url=qdrant_url, headers=headers, timeout=self._timeout, transport=transport
        )
        self._ollama = ollama

    def close(self) -> None:
        self._qdrant.close()

    def check(self) -> Readiness:
        qdrant = self._check_qdrant()
        hosts = self._check_ollama_hosts()
        return Readiness({"qdrant": qdrant, "ollama": _pool_state(hosts)}, hosts)

    def _check_qdrant(self) -> str:
        try:
            response = self._qdrant.get("/readyz")
        except httpx.HTTPError as exc:
            return f"unreachable: {type(exc).__name__}"
        if response.status_code != 200:
            return f"not ready: /readyz answered HTTP {response.status_code}"
        return "ok"

    def _check_ollama_hosts(self) -> dict[str, str]:
        hosts = self._ollama.hosts
        if len(hosts) == 1:
            states = [self._check_ollama(0)]
        else:
            # Threads of this probe only: concurrent probes never queue behind a hung host.
            with ThreadPoolExecutor(len(hosts), thread_name_prefix="ollama-probe") as pool:
                states = list(pool.map(self._check_ollama, range(len(hosts))))
        return {host.name: state for host, state in zip(hosts, states, strict=True)}

    def _check_ollama(self, host: int) -> str:
        try:
            self._ollama.version(timeout=self._timeout, host=host)
        except UpstreamError as exc:
            return f"not ready: {exc.detail}"
        return "ok"


def _pool_state(hosts: dict[str, str]) -> str:
    """"ok" when at least one host answers; else, with one host, its own state."""
    states = list(hosts.values())
    if "ok" in states:
        return "ok"
    if len(states) == 1:
        return states[0]
    return f"not ready: none of the {len(hosts)} Ollama hosts answered (see ollama_hosts)"
