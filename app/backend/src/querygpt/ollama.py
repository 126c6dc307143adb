"""A minimal Ollama client over httpx: embed, chat and version.

We talk to the three REST endpoints directly rather than through the
``ollama`` package: it keeps the dependency set small, lets tests plug in an
``httpx.MockTransport``, and the lab stand-in only needs these endpoints.
Failures become UpstreamError/UpstreamUnavailable naming Ollama and, when
Ollama says why (e.g. "model not found"), its own words.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import httpx

from .errors import UpstreamError, UpstreamUnavailable

if TYPE_CHECKING:
    from .limits import Deadline

SERVICE = "ollama"
#: The stage each call is, in querygpt_deadline_exceeded_total.
_STAGES = {"/api/embed": "embed", "/api/chat": "generate"}


class OllamaClient:
    """Thread-safe; one instance per app, shared by all requests."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._http = httpx.Client(base_url=base_url, timeout=timeout, transport=transport)
        self.base_url = base_url
        self.timeout = timeout

    def close(self) -> None:
        self._http.close()

    def embed(
        self, model: str, texts: Sequence[str], *, deadline: Deadline | None = None
    ) -> list[list[float]]:
        """Embed ``texts`` in one ``POST /api/embed`` call, preserving order."""
        body = self._post("/api/embed", {"model": model, "input": list(texts)}, deadline)
        vectors = body.get("embeddings")
        if (
            not isinstance(vectors, list)
            or len(vectors) != len(texts)
            or not all(isinstance(v, list) and v for v in vectors)
        ):
            raise UpstreamError(
                SERVICE,
                f"Ollama returned {len(vectors) if isinstance(vectors, list) else 'no'} "
                f"embeddings for {len(texts)} inputs with model '{model}'.",
            )
        return [[float(x) for x in v] for v in vectors]

    def chat(
        self, model: str, system: str, user: str, *, deadline: Deadline | None = None
    ) -> str:
        """One non-streaming ``POST /api/chat`` turn; returns the reply text."""
        body = self._post(
            "/api/chat",
            {
                "model": model,
                "stream": False,
                "messages": [
                    {"role": "system", "content": system},
                    {"role": "user", "content": user},
                ],
                # SQL should be reproducible, not creative.
                "options": {"temperature": 0},
            },
            deadline,
        )
        message = body.get("message")
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(content, str):
            raise UpstreamError(SERVICE, f"Ollama returned no message from model '{model}'.")
        return content

    def version(self, timeout: float | None = None) -> str:
        """``GET /api/version``; used by the readiness probe."""
        try:
            response = self._http.get("/api/version", timeout=timeout or httpx.USE_CLIENT_DEFAULT)
            response.raise_for_status()
            return str(response.json().get("version", "unknown"))
        except httpx.HTTPError as exc:
            raise self._translate(exc) from exc
        except ValueError as exc:
            raise UpstreamError(SERVICE, "Ollama /api/version did not return JSON.") from exc

    def _post(
        self, path: str, payload: dict[str, Any], deadline: Deadline | None = None
    ) -> dict[str, Any]:
        """POST with the request's remaining time as the timeout (at most the per-call one).

        httpx's timeout bounds each network wait (connect, write, the wait for the response);
        Ollama sends a non-streamed answer in one piece once it is done, so the wait for the
        response is the call's duration and the deadline bounds it.
        """
        stage = _STAGES.get(path, path)
        timeout, by_deadline = (
            deadline.timeout(stage, self.timeout) if deadline else (self.timeout, False)
        )
        try:
            response = self._http.post(path, json=payload, timeout=timeout)
        except httpx.TimeoutException as exc:
            if deadline is not None and by_deadline:
                raise deadline.exceeded(stage) from exc
            raise self._translate(exc) from exc
        except httpx.HTTPError as exc:
            raise self._translate(exc) from exc
        if response.status_code >= 400:
            raise UpstreamError(
                SERVICE,
                f"Ollama {path} failed with HTTP {response.status_code}: {_reason(response)}",
            )
        try:
            body = response.json()
        except ValueError as exc:
            raise UpstreamError(SERVICE, f"Ollama {path} did not return JSON.") from exc
        if not isinstance(body, dict):
            raise UpstreamError(SERVICE, f"Ollama {path} returned unexpected JSON.")
        return body

    def _translate(self, exc: httpx.HTTPError) -> UpstreamError:
        if isinstance(exc, httpx.TimeoutException):
            return UpstreamUnavailable(
                SERVICE,
                "Ollama timed out; the model may still be loading, "
                "try again or raise QUERYGPT_REQUEST_TIMEOUT.",
                where=self.base_url,
            )
        if isinstance(exc, httpx.HTTPStatusError):
            return UpstreamError(
                SERVICE,
                f"Ollama answered HTTP {exc.response.status_code}: {_reason(exc.response)}",
            )
        return UpstreamUnavailable(
            SERVICE, f"Ollama is unreachable ({type(exc).__name__}).", where=self.base_url
        )


def _reason(response: httpx.Response) -> str:
    """Ollama reports errors as ``{"error": "..."}``; fall back to raw text."""
    try:
        body = response.json()
        if isinstance(body, dict) and body.get("error"):
            return str(body["error"])[:300]
    except ValueError:
        pass
    return response.text[:300] or response.reason_phrase
