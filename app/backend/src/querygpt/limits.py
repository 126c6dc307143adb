"""Limits: one deadline per request, a bounded GPU queue, and admission control.

Why these three:

* **Deadline.** A query makes up to three sequential upstream calls (embed, search, chat).
  Each used to get the full per-call timeout (QUERYGPT_REQUEST_TIMEOUT), so their sum could
  outlast the edge's ``proxy_read_timeout``: nginx answered 504 while the backend kept the
  GPU busy for nobody. Now every request has one deadline, started when it arrives; each
  upstream call gets the time that is left (capped by the per-call timeout), the pipeline
  checks it between stages, and when it runs out the work stops with a 504 that says so.
  The Ansible role checks that the deadline ends before the edge's timeout.
* **GPU queue.** Generation (``/api/chat``) is the expensive call. At most ``running`` run at
  once and at most ``waiting`` wait for a slot; one more is refused at once with 429 and a
  Retry-After, instead of stacking up in Ollama until every request times out. Embedding
  calls do not take a slot: they take milliseconds, an upload makes hundreds of them, and
  they are bounded by the endpoints' concurrency caps instead.
* **Admission.** Per endpoint (query, upload): a token bucket (requests per second with a
  burst) and a cap on requests in flight, checked by ``LimitsMiddleware`` on the event loop
  before the body is read, so a refused upload costs nothing. Buckets are kept per key; the
  key is ``"global"`` today, and a per-user limit adds the user's id as a second key.

Scope: everything here is per backend **process**. There is no shared store (no Redis), so
with QUERYGPT_WORKERS processes on a host the host-wide figures are the configured ones
times the workers, and the fleet-wide figures that times the backend hosts (the role's
README has the arithmetic).
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from time import monotonic
from typing import Any

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from .errors import DeadlineExceeded, TooManyRequests
from .metrics import DEADLINE_EXCEEDED, GPU_RUNNING, GPU_WAITING, REQUESTS_REJECTED

log = logging.getLogger(__name__)

#: The key of the global bucket; a per-user limit will add buckets keyed by user id.
GLOBAL = "global"

#: What a stage was doing, for the 504's sentence.
_STAGE_WORDS = {
    "queue": "waiting for the language model",
    "embed": "embedding the text",
    "search": "searching the collection",
    "generate": "the language model was writing the SQL",
    "extract": "reading the PDF",
    "store": "storing the chunks",
}


@dataclass
class Deadline:
    """The time one request may take, shared by every call it makes."""

    endpoint: str  # "query" or "upload": the metric label and the sentence
    seconds: float
    variable: str  # the setting that sets it, named in the 504
    start: float = field(default_factory=monotonic)

    def remaining(self) -> float:
        return self.seconds - (monotonic() - self.start)

    def check(self, stage: str) -> None:
        """Raise DeadlineExceeded if no time is left before ``stage``."""
        if self.remaining() <= 0:
            raise self.exceeded(stage)

    def timeout(self, stage: str, cap: float) -> tuple[float, bool]:
        """(timeout for the next call, whether the deadline rather than ``cap`` bounds it)."""
        self.check(stage)
        left = self.remaining()
        return (left, True) if left < cap else (cap, False)

    def exceeded(self, stage: str) -> DeadlineExceeded:
        """The 504 to raise; counted here, once per request that runs out."""
        DEADLINE_EXCEEDED.labels(endpoint=self.endpoint, stage=stage).inc()
        doing = _STAGE_WORDS.get(stage, stage)
        log.warning(
            "deadline exceeded",
            extra={"endpoint": self.endpoint, "stage": stage, "deadline_seconds": self.seconds},
        )
        if self.endpoint == "upload":
            detail = (
                f"The upload was not indexed within its {self.seconds:g} s deadline (it stopped "
                f"while {doing}); split the document into smaller PDFs, or upload it again when "
                f"the service is less busy (operators: {self.variable})."
            )
        else:
            detail = (
                f"The query did not finish within its {self.seconds:g} s deadline (it stopped "
                f"while {doing}); try again in a minute, or ask a narrower question "
                f"(operators: {self.variable})."
            )
        return DeadlineExceeded(detail, endpoint=self.endpoint, stage=stage)


def retry_after_seconds(estimate: float, ceiling: float) -> int:
    """A Retry-After value: whole seconds, at least 1, at most ``ceiling``."""
    return max(1, min(math.ceil(estimate), max(1, math.ceil(ceiling))))


class _Average:
    """Exponentially weighted mean of durations, for Retry-After estimates."""

    def __init__(self, initial: float) -> None:
        self.value = initial

    def add(self, seconds: float) -> None:
        self.value = 0.8 * self.value + 0.2 * seconds


class GpuQueue:
    """At most ``running`` generations at once, ``waiting`` more queued; thread-safe.

    Waiters wake in no guaranteed order (a new arrival may take a slot a waiter was
    woken for); each waits at most until its request's deadline.
    """

    def __init__(self, running: int, waiting: int, *, retry_ceiling: float) -> None:
        self.running_max = running
        self.waiting_max = waiting
        self._retry_ceiling = retry_ceiling
        self._cond = threading.Condition()
        self._running = 0
        self._waiting = 0
        self._duration = _Average(initial=5.0)

    @property
    def running(self) -> int:
        return self._running

    @property
    def waiting(self) -> int:
        return self._waiting

    def full(self) -> bool:
        with self._cond:
            return self._running >= self.running_max and self._waiting >= self.waiting_max

    def rejection(self, endpoint: str) -> TooManyRequests:
        """The 429 for a full queue; counted here."""
        # A slot frees about every (mean generation time / running) seconds; the queue ahead
        # of a new request is every waiter.
        estimate = self._duration.value * (self._waiting + 1) / self.running_max
        REQUESTS_REJECTED.labels(endpoint=endpoint, reason="gpu_queue_full").inc()
        return TooManyRequests(
            f"The language model is busy: {self.running_max} answers are being written and "
            f"{self.waiting_max} are waiting, the most this server queues; try again in a "
            "few seconds.",
            reason="gpu_queue_full",
            retry_after=retry_after_seconds(estimate, self._retry_ceiling),
        )

    @contextmanager
    def slot(self, deadline: Deadline) -> Iterator[None]:
        """Hold a generation slot for the body; wait for one until ``deadline``."""
        with self._cond:
            if self._running >= self.running_max:
                if self._waiting >= self.waiting_max:
                    raise self.rejection(deadline.endpoint)
                self._waiting += 1
                GPU_WAITING.inc()
                try:
                    while self._running >= self.running_max:
                        left = deadline.remaining()
                        if left <= 0:
                            raise deadline.exceeded("queue")
                        self._cond.wait(left)
                finally:
                    self._waiting -= 1
                    GPU_WAITING.dec()
            self._running += 1
            GPU_RUNNING.inc()
        started = monotonic()
        try:
            yield
        finally:
            with self._cond:
                self._running -= 1
                GPU_RUNNING.dec()
                self._duration.add(monotonic() - started)
                self._cond.notify()


class TokenBucket:
    """``rate`` tokens per second up to ``burst``; one token per request."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._stamp = monotonic()

    def take(self) -> float:
        """0 if a token was taken, else the seconds until one is available."""
        now = monotonic()
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now
        if self._tokens >= 1:
            self._tokens -= 1
            return 0.0
        return (1 - self._tokens) / self.rate


@dataclass(frozen=True)
class EndpointPolicy:
    """The limits of one endpoint (per process)."""

    endpoint: str  # "query" or "upload"
    rate: float  # requests per second, refilled continuously
    burst: int  # requests accepted at once above the rate
    concurrency: int  # requests in flight
    deadline_seconds: float
    deadline_variable: str
    uses_gpu: bool = False  # refuse at once when the GPU queue is full


class EndpointLimiter:
    """Rate and concurrency admission for one endpoint; thread-safe."""

    def __init__(self, policy: EndpointPolicy) -> None:
        self.policy = policy
        self._lock = threading.Lock()
        self._buckets: dict[str, TokenBucket] = {}
        self._in_flight = 0
        self._duration = _Average(initial=policy.deadline_seconds / 10)

    def admit(self, key: str = GLOBAL) -> TooManyRequests | None:
        """None if the request may start (it then holds a place until ``release``)."""
        p = self.policy
        with self._lock:
            if self._in_flight >= p.concurrency:
                estimate = self._duration.value
                reason = "concurrency"
                detail = (
                    f"Too many {p.endpoint} requests are in progress ({p.concurrency} at once "
                    "is the most this server runs); try again shortly."
                )
            else:
                bucket = self._buckets.setdefault(key, TokenBucket(p.rate, p.burst))
                estimate = bucket.take()
                if estimate == 0:
                    self._in_flight += 1
                    return None
                reason = "rate"
                detail = (
                    f"Too many {p.endpoint} requests: this server accepts {p.rate:g} per "
                    f"second (bursts of {p.burst}); slow down and try again."
                )
        REQUESTS_REJECTED.labels(endpoint=p.endpoint, reason=reason).inc()
        return TooManyRequests(
            detail,
            reason=reason,
            retry_after=retry_after_seconds(estimate, p.deadline_seconds),
        )

    def cancel(self) -> None:
        """Give back an admitted place that was not used."""
        with self._lock:
            self._in_flight -= 1

    def release(self, seconds: float) -> None:
        with self._lock:
            self._in_flight -= 1
            self._duration.add(seconds)

    def deadline(self) -> Deadline:
        p = self.policy
        return Deadline(p.endpoint, p.deadline_seconds, p.deadline_variable)


@dataclass(frozen=True)
class _Route:
    """Stands in for the matched route on a refused request, so the HTTP metrics and the
    access log name ``/query`` rather than ``<unmatched>`` (routing never ran)."""

    path: str


def too_many_requests_response(exc: TooManyRequests) -> JSONResponse:
    return JSONResponse(
        {"detail": exc.detail, "reason": exc.reason},
        status_code=exc.status_code,
        headers={"Retry-After": str(exc.retry_after)},
    )


class LimitsMiddleware:
    """Admit or refuse ``POST`` on the limited paths before the body is read.

    Runs inside RequestContextMiddleware (request id, access log, HTTP metrics). An admitted
    request gets its Deadline in ``scope["state"]["deadline"]`` (``request.state.deadline``),
    started now, so time spent waiting for a worker thread counts against it too.
    """

    def __init__(
        self, app: ASGIApp, *, limiters: dict[str, EndpointLimiter], gpu: GpuQueue
    ) -> None:
        self.app = app
        self.limiters = limiters
        self.gpu = gpu

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        limiter = (
            self.limiters.get(scope["path"])
            if scope["type"] == "http" and scope["method"] == "POST"
            else None
        )
        if limiter is None:
            await self.app(scope, receive, send)
            return
        refused = limiter.admit()
        if refused is None and limiter.policy.uses_gpu and self.gpu.full():
            limiter.cancel()
            refused = self.gpu.rejection(limiter.policy.endpoint)
        if refused is not None:
            scope["route"] = _Route(scope["path"])
            log.info(
                "request refused",
                extra={"endpoint": limiter.policy.endpoint, "reason": refused.reason},
            )
            await too_many_requests_response(refused)(scope, receive, send)
            return
        state: dict[str, Any] = scope.setdefault("state", {})
        state["deadline"] = limiter.deadline()
        started = monotonic()
        try:
            await self.app(scope, receive, send)
        finally:
            limiter.release(monotonic() - started)


@dataclass(frozen=True)
class UserPolicy:
    """The limits of one endpoint for each user (per process; docs/access-control.md)."""

    endpoint: str  # "query" or "upload"
    per_minute: int  # token bucket: this many per minute, bursts of as many
    concurrency: int  # requests in flight per user
    rate_variable: str
    concurrency_variable: str


class UserLimiter:
    """Per-user admission for one endpoint, keyed by user id: a TokenBucket per user (a
    minute's worth of burst) and a cap on that user's requests in flight; thread-safe.

    Checked in the endpoint, after the principal is known (LimitsMiddleware's global limits
    ran before); a refusal is the same 429 + Retry-After, with reason ``user_rate`` or
    ``user_concurrency``.
    """

    def __init__(self, policy: UserPolicy) -> None:
        self.policy = policy
        self._lock = threading.Lock()
        self._buckets: dict[str, TokenBucket] = {}
        self._in_flight: dict[str, int] = {}
        self._duration = _Average(initial=5.0)

    def admit(self, key: str) -> TooManyRequests | None:
        p = self.policy
        with self._lock:
            if self._in_flight.get(key, 0) >= p.concurrency:
                estimate = self._duration.value
                reason = "user_concurrency"
                detail = (
                    f"You have {p.concurrency} {p.endpoint} request(s) in progress, the most "
                    f"one user may run at once ({p.concurrency_variable}); wait for them to "
                    "finish."
                )
            else:
                bucket = self._buckets.setdefault(key, TokenBucket(p.per_minute / 60, p.per_minute))
                estimate = bucket.take()
                if estimate == 0:
                    self._in_flight[key] = self._in_flight.get(key, 0) + 1
                    return None
                reason = "user_rate"
                detail = (
                    f"Too many {p.endpoint} requests from you: {p.per_minute} per minute is the "
                    f"most one user may send ({p.rate_variable}); slow down and try again."
                )
        REQUESTS_REJECTED.labels(endpoint=p.endpoint, reason=reason).inc()
        log.info("request refused", extra={"endpoint": p.endpoint, "reason": reason})
        return TooManyRequests(detail, reason=reason, retry_after=retry_after_seconds(estimate, 60))

    def release(self, key: str, seconds: float) -> None:
        with self._lock:
            left = self._in_flight.get(key, 1) - 1
            if left > 0:
                self._in_flight[key] = left
            else:
                self._in_flight.pop(key, None)
            self._duration.add(seconds)

    @contextmanager
    def hold(self, key: str) -> Iterator[None]:
        """Admit ``key``'s request for the body, or raise the 429."""
        refused = self.admit(key)
        if refused is not None:
            raise refused
        started = monotonic()
        try:
            yield
        finally:
            self.release(key, monotonic() - started)
