"""A minimal Ollama client over httpx: embed, chat and version, spread over a pool of hosts.

We talk to the three REST endpoints directly rather than through the
``ollama`` package: it keeps the dependency set small, lets tests plug in an
``httpx.MockTransport``, and the lab stand-in only needs these endpoints.
Failures become UpstreamError/UpstreamUnavailable naming Ollama and, when
Ollama says why (e.g. "model not found"), its own words.

**The pool** (QUERYGPT_OLLAMA_URLS, issue 14). One ``OllamaClient`` holds one httpx client per
host and spreads the embed and chat calls of this process over them:

* **Pick**: the host with the fewest calls in flight from this process; ties go round-robin,
  so without load the calls alternate. Counts are per process (each uvicorn worker has its own).
* **Cool-down**: a host that failed (a connection failure or a 5xx) is passed over for
  ``cooldown`` seconds. When every host a call may still try is cooling down, the one whose
  cool-down ends first is tried anyway: a call is never refused without trying. A success ends
  a host's cool-down.
* **Retry**: a call tries each host at most once. It moves on to another host after a
  connection failure (connect error or connect timeout, refused, reset, closed before an
  answer; nothing was produced) or a 5xx. It does **not** retry a 4xx (the request is wrong:
  every host would say the same, e.g. "model not found"), a read timeout (the host may still be
  generating; a second try would double a slow generation), nor an answer it could not use.
  Every attempt gets the time the request's Deadline leaves, and no attempt starts once it has
  run out (504). Responses are not streamed (``stream: false``), so no partial answer is ever
  retried either.
* **Errors**: when every attempt failed, the same types as with one host: UpstreamUnavailable
  (503) when no host answered, UpstreamError (502) when one answered with a 5xx; the message
  says how many hosts were tried and names no address (it reaches API clients); the addresses
  are in ``where``, which only logs and operator tools show.
* **Observability**: every attempt counts in ``querygpt_ollama_requests_total{host, outcome}``
  (host = ``host:port``), every move to another host in ``querygpt_ollama_retries_total``, and
  each failed attempt is logged (``ollama call failed``) with the host and the reason.
  ``version()`` (the readiness probe) is not counted and does not change a host's cool-down.

Thread-safe: one instance per app, shared by all requests (the routes run in Starlette's
threadpool); the pool's bookkeeping is under one lock, and httpx clients are thread-safe.
"""

from __future__ import annotations

import logging
import ssl
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from time import monotonic
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx

from .errors import UpstreamError, UpstreamUnavailable
from .metrics import OLLAMA_REQUESTS, OLLAMA_RETRIES, export_ollama_host

if TYPE_CHECKING:
    from .limits import Deadline

log = logging.getLogger(__name__)

SERVICE = "ollama"
#: The stage each call is, in querygpt_deadline_exceeded_total.
_STAGES = {"/api/embed": "embed", "/api/chat": "generate"}

#: Seconds a failed host is passed over (QUERYGPT_OLLAMA_COOLDOWN_SECONDS).
DEFAULT_COOLDOWN_SECONDS = 10.0
#: The most a call waits to *connect* to one host. Ollama is on the private network, where a
#: connection takes milliseconds; without this bound a host that drops packets (stopped
#: instance) would hold each call for the whole per-call timeout before the next host is tried.
CONNECT_TIMEOUT_SECONDS = 5.0


@dataclass(eq=False)
class OllamaHost:
    """One host of the pool and its bookkeeping (guarded by the client's lock)."""

    index: int  # position in QUERYGPT_OLLAMA_URLS, from 0
    base_url: str
    http: httpx.Client = field(repr=False)
    in_flight: int = 0
    cooldown_until: float = 0.0  # monotonic time; 0 when the host is not cooling down
    #: ``host:port``: the metrics label and what logs name.
    label: str = field(init=False)

    def __post_init__(self) -> None:
        self.label = host_label(self.base_url)

    @property
    def name(self) -> str:
        """``ollama-1``, ``ollama-2``, ...: the host's name where no address may appear
        (``/ready``'s body); the order is QUERYGPT_OLLAMA_URLS's."""
        return f"ollama-{self.index + 1}"


def host_label(url: str) -> str:
    """``host:port`` of ``url`` (the scheme's port when it has none)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:  # IPv6
        host = f"[{host}]"
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return f"{host}:{port}"


class OllamaClient:
    """Thread-safe; one instance per app, shared by all requests.

    ``base_urls`` is one URL or the pool's list (at least one). ``cooldown`` is the seconds a
    failed host is passed over; ``clock`` is for tests.
    """

    def __init__(
        self,
        base_urls: str | Sequence[str],
        *,
        timeout: float,
        cooldown: float = DEFAULT_COOLDOWN_SECONDS,
        transport: httpx.BaseTransport | None = None,
        clock: Callable[[], float] = monotonic,
        verify: ssl.SSLContext | bool = True,
    ) -> None:
        urls = (base_urls,) if isinstance(base_urls, str) else tuple(base_urls)
        if not urls:
            raise ValueError("OllamaClient needs at least one base URL")
        self.timeout = timeout
        self.cooldown = cooldown
        self._clock = clock
        self._lock = threading.Lock()
        self._next = 0  # round-robin position among equally loaded hosts
        self.hosts: tuple[OllamaHost, ...] = tuple(
            OllamaHost(
                index,
                url,
                httpx.Client(
                    base_url=url, timeout=_timeout(timeout), transport=transport, verify=verify
                ),
            )
            for index, url in enumerate(urls)
        )
        for host in self.hosts:
            export_ollama_host(host.label)

    @property
    def base_urls(self) -> tuple[str, ...]:
        return tuple(host.base_url for host in self.hosts)

    def close(self) -> None:
        for host in self.hosts:
            host.http.close()

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

    def version(self, timeout: float | None = None, *, host: int | None = None) -> str:
        """``GET /api/version`` of host number ``host`` (from 0), or of the first host that
        answers; the readiness probe asks each host. Not counted, no cool-down."""
        candidates = self.hosts if host is None else (self.hosts[host],)
        error: UpstreamError | None = None
        for candidate in candidates:
            try:
                response = candidate.http.get(
                    "/api/version",
                    timeout=_timeout(timeout) if timeout else httpx.USE_CLIENT_DEFAULT,
                )
                response.raise_for_status()
                return str(response.json().get("version", "unknown"))
            except httpx.HTTPError as exc:
                error = _translate(exc, candidate.base_url)
            except ValueError as exc:
                error = UpstreamError(
                    SERVICE, "Ollama /api/version did not return JSON.", where=candidate.base_url
                )
                error.__cause__ = exc
        assert error is not None
        raise error

    # --- the pool -----------------------------------------------------------------------

    def _acquire(self, tried: set[int]) -> OllamaHost:
        """The next host for a call that already tried ``tried`` (not every host); its
        in-flight count is taken (give it back with ``_release``)."""
        with self._lock:
            untried = [h for h in self.hosts if h.index not in tried]
            now = self._clock()
            ready = [h for h in untried if h.cooldown_until <= now]
            if ready:
                least = min(h.in_flight for h in ready)
                count = len(self.hosts)
                host = min(
                    (h for h in ready if h.in_flight == least),
                    key=lambda h: (h.index - self._next) % count,
                )
                self._next = (host.index + 1) % count
            else:  # every candidate is cooling down: try the one that recovers first
                host = min(untried, key=lambda h: h.cooldown_until)
            host.in_flight += 1
            return host

    def _release(self, host: OllamaHost, *, failed: bool | None) -> None:
        """Give back ``host``'s in-flight count; ``failed`` True starts its cool-down, False
        ends it, None (a timeout, a 4xx) leaves it as it is."""
        with self._lock:
            host.in_flight -= 1
            if failed:
                host.cooldown_until = self._clock() + self.cooldown
            elif failed is False:
                host.cooldown_until = 0.0

    def _post(
        self, path: str, payload: dict[str, Any], deadline: Deadline | None = None
    ) -> dict[str, Any]:
        """POST to the pool: each attempt gets the request's remaining time as its timeout (at
        most the per-call one); another host is tried after a connection failure or a 5xx.

        httpx's timeout bounds each network wait (connect, write, the wait for the response);
        Ollama sends a non-streamed answer in one piece once it is done, so the wait for the
        response is the call's duration and the deadline bounds it.
        """
        stage = _STAGES.get(path, path)
        tried: set[int] = set()
        where: list[str] = []
        # The error to raise once every host failed: a host's 5xx (it answered: 502) rather
        # than a connection failure (503), as with one host.
        unreachable: UpstreamError | None = None
        answered: UpstreamError | None = None
        while len(tried) < len(self.hosts):
            # Raises DeadlineExceeded when no time is left: no attempt starts after it.
            timeout, by_deadline = (
                deadline.timeout(stage, self.timeout) if deadline else (self.timeout, False)
            )
            host = self._acquire(tried)
            if tried:
                OLLAMA_RETRIES.inc()
            tried.add(host.index)
            where.append(host.base_url)
            outcome, failure, response = self._attempt(host, path, payload, timeout)
            if failure is None:
                assert response is not None
                return _json_body(path, response)
            if outcome == "timeout":
                if deadline is not None and by_deadline:
                    raise deadline.exceeded(stage) from failure.__cause__
                raise _with_tries(failure, len(tried), where)
            if outcome == "http_4xx":
                raise failure
            if outcome == "http_5xx":
                answered = failure
            else:
                unreachable = failure
            more = len(tried) < len(self.hosts)
            log.warning(
                "ollama call failed",
                extra={
                    "ollama_host": host.label,
                    "path": path,
                    "outcome": outcome,
                    "error": failure.detail,
                    "attempt": len(tried),
                    "hosts": len(self.hosts),
                    "retrying": more,
                },
            )
        failed = answered or unreachable
        assert failed is not None
        raise _with_tries(failed, len(tried), where)

    def _attempt(
        self, host: OllamaHost, path: str, payload: dict[str, Any], timeout: float
    ) -> tuple[str, UpstreamError | None, httpx.Response | None]:
        """One POST to ``host``: (outcome label, the error or None, the response if any).

        Counts the attempt and settles the host's in-flight count and cool-down, whatever
        happens (an unexpected exception releases the host without judging it).
        """
        outcome, error, response = "", None, None
        try:
            response = host.http.post(path, json=payload, timeout=_timeout(timeout))
        except httpx.TimeoutException as exc:
            # A connect timeout reached nothing: a connection failure like a refusal.
            outcome = "connect_error" if isinstance(exc, httpx.ConnectTimeout) else "timeout"
            error = _chained(_translate(exc, host.base_url), exc)
        except httpx.TransportError as exc:  # refused, reset, closed before an answer
            outcome = "connect_error"
            error = _chained(_translate(exc, host.base_url), exc)
        else:
            if response.status_code >= 500:
                outcome = "http_5xx"
            elif response.status_code >= 400:
                outcome = "http_4xx"
            else:
                outcome = "ok"
            if outcome != "ok":
                error = _http_error(path, response, host.base_url)
        finally:
            # ok ends a cool-down; a connection failure or 5xx starts one; a timeout or a
            # 4xx says nothing about the host's health.
            self._release(host, failed=_HOST_FAILED.get(outcome))
            if outcome:
                OLLAMA_REQUESTS.labels(host=host.label, outcome=outcome).inc()
        return outcome, error, response


#: What an attempt's outcome says about its host: True failed, False healthy, None nothing.
_HOST_FAILED: dict[str, bool | None] = {
    "ok": False,
    "connect_error": True,
    "http_5xx": True,
    "http_4xx": None,
    "timeout": None,
}


def _timeout(seconds: float) -> httpx.Timeout:
    """``seconds`` for every network wait, but at most CONNECT_TIMEOUT_SECONDS to connect."""
    return httpx.Timeout(seconds, connect=min(seconds, CONNECT_TIMEOUT_SECONDS))


def _chained(error: UpstreamError, cause: BaseException) -> UpstreamError:
    error.__cause__ = cause
    return error


def _http_error(path: str, response: httpx.Response, where: str) -> UpstreamError:
    return UpstreamError(
        SERVICE,
        f"Ollama {path} failed with HTTP {response.status_code}: {_reason(response)}",
        where=where,
    )


def _json_body(path: str, response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError as exc:
        raise UpstreamError(SERVICE, f"Ollama {path} did not return JSON.") from exc
    if not isinstance(body, dict):
        raise UpstreamError(SERVICE, f"Ollama {path} returned unexpected JSON.")
    return body


def _with_tries(error: UpstreamError, tried: int, where: list[str]) -> UpstreamError:
    """``error`` saying how many hosts the call tried (no address: the detail reaches API
    clients), with every address tried in ``where`` (logs only)."""
    hosts = "1 Ollama host" if tried == 1 else f"{tried} Ollama hosts"
    error.detail = f"{error.detail.rstrip('.')}. Tried {hosts}."
    error.args = (error.detail,)
    error.where = ", ".join(where)
    return error


def _translate(exc: httpx.HTTPError, where: str) -> UpstreamError:
    if isinstance(exc, httpx.TimeoutException) and not isinstance(exc, httpx.ConnectTimeout):
        return UpstreamUnavailable(
            SERVICE,
            "Ollama timed out; the model may still be loading, "
            "try again or raise QUERYGPT_REQUEST_TIMEOUT.",
            where=where,
        )
    if isinstance(exc, httpx.HTTPStatusError):
        return UpstreamError(
            SERVICE,
            f"Ollama answered HTTP {exc.response.status_code}: {_reason(exc.response)}",
            where=where,
        )
    if _certificate_failure(exc):
        # Said plainly: an operator meets this after a CA rotation or a wrong CA file.
        return UpstreamUnavailable(
            SERVICE,
            "Ollama's TLS certificate did not verify against QUERYGPT_INTERNAL_CA_FILE "
            "(CERTIFICATE_VERIFY_FAILED).",
            where=where,
        )
    return UpstreamUnavailable(
        SERVICE, f"Ollama is unreachable ({type(exc).__name__}).", where=where
    )


def _certificate_failure(exc: BaseException) -> bool:
    """Whether a connection failed on the server's certificate (httpx wraps ssl's error)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _reason(response: httpx.Response) -> str:
    """Ollama reports errors as ``{"error": "..."}``; fall back to raw text."""
    try:
        body = response.json()
        if isinstance(body, dict) and body.get("error"):
            return str(body["error"])[:300]
    except ValueError:
        pass
    return response.text[:300] or response.reason_phrase
