"""Readiness: can we reach the two services every real request needs?

Kept separate from ``/health`` (liveness): a load balancer should stop
sending traffic while Qdrant or Ollama is down, but systemd should not
restart a healthy process because a dependency is.
"""

from __future__ import annotations

from dataclasses import dataclass

import httpx

from .errors import UpstreamError
from .ollama import OllamaClient

# A probe must answer quickly even if a dependency hangs.
PROBE_TIMEOUT_SECONDS = 3.0


@dataclass(frozen=True)
class Readiness:
    checks: dict[str, str]

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
        return Readiness({"qdrant": self._check_qdrant(), "ollama": self._check_ollama()})

    def _check_qdrant(self) -> str:
        try:
            response = self._qdrant.get("/readyz")
        except httpx.HTTPError as exc:
            return f"unreachable: {type(exc).__name__}"
        if response.status_code != 200:
            return f"not ready: /readyz answered HTTP {response.status_code}"
        return "ok"

    def _check_ollama(self) -> str:
        try:
            self._ollama.version(timeout=self._timeout)
        except UpstreamError as exc:
            return f"not ready: {exc.detail}"
        return "ok"
