"""The Ollama pool (QUERYGPT_OLLAMA_URLS, issue 14): calls are spread over the hosts, moved to
another host after a connection failure or a 5xx (never after a 4xx or a read timeout), a
failed host cools down, every attempt stays within the request's deadline, and a failure of
every host is the same 503/502 as with one host, naming no address.

The hosts are httpx.MockTransport handlers told apart by the URL's host; time for cool-downs
is a fake clock, so nothing here sleeps for it.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from prometheus_client import REGISTRY
from querygpt.errors import DeadlineExceeded, UpstreamError, UpstreamUnavailable
from querygpt.limits import Deadline
from querygpt.ollama import CONNECT_TIMEOUT_SECONDS, OllamaClient, host_label
from querygpt_testkit import fake_embedding, upload

A = "http://10.20.0.1:11434"
B = "http://ollama-b.internal:11434"
C = "http://10.20.0.3:11434"

Behaviour = Callable[[httpx.Request], httpx.Response] | str


class Hosts:
    """A MockTransport handler playing several Ollama hosts, each with a behaviour:
    "ok", "refused", "reset", "closed" (disconnected before any response), "timeout",
    an HTTP status code, or a function of the request."""

    def __init__(self, **behaviour: Behaviour | int) -> None:
        self.behaviour: dict[str, Behaviour | int] = {}
        for name, value in behaviour.items():
            self.behaviour[{"a": A, "b": B, "c": C}[name]] = value
        self.calls: list[str] = []  # the base URL of every call, in order
        self.timeouts: list[dict[str, float | None]] = []
        self.lock = threading.Lock()

    def base(self, request: httpx.Request) -> str:
        return f"{request.url.scheme}://{request.url.host}:{request.url.port}"

    def count(self, url: str) -> int:
        return self.calls.count(url)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        url = self.base(request)
        with self.lock:
            self.calls.append(url)
            self.timeouts.append(dict(request.extensions.get("timeout") or {}))
        what = self.behaviour.get(url, "ok")
        if callable(what):
            return what(request)
        if what == "refused":
            raise httpx.ConnectError("[Errno 111] Connection refused", request=request)
        if what == "reset":
            raise httpx.ReadError("[Errno 104] Connection reset by peer", request=request)
        if what == "closed":
            raise httpx.RemoteProtocolError(
                "Server disconnected without sending a response.", request=request
            )
        if what == "timeout":
            raise httpx.ReadTimeout("timed out", request=request)
        if isinstance(what, int):
            return httpx.Response(what, json={"error": f"injected {what}"})
        return answer(request)


def answer(request: httpx.Request) -> httpx.Response:
    """What a healthy Ollama says."""
    if request.url.path == "/api/version":
        return httpx.Response(200, json={"version": "0.0.0-pool"})
    body = json.loads(request.content)
    if request.url.path == "/api/embed":
        return httpx.Response(200, json={"embeddings": [fake_embedding(t) for t in body["input"]]})
    return httpx.Response(200, json={"message": {"role": "assistant", "content": "SELECT 1;"}})


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def pool(hosts: Hosts, *urls: str, cooldown: float = 10.0, clock: Clock | None = None) -> OllamaClient:
    return OllamaClient(
        list(urls or (A, B)),
        timeout=30,
        cooldown=cooldown,
        transport=httpx.MockTransport(hosts),
        clock=clock or Clock(),
    )


def count(url: str, outcome: str) -> float:
    value = REGISTRY.get_sample_value(
        "querygpt_ollama_requests_total", {"host": host_label(url), "outcome": outcome}
    )
    return value or 0.0


def retries() -> float:
    return REGISTRY.get_sample_value("querygpt_ollama_retries_total") or 0.0


# --- spreading ----------------------------------------------------------------------------


def test_without_load_the_calls_alternate() -> None:
    hosts = Hosts()
    client = pool(hosts, A, B, C)
    for _ in range(3):
        client.embed("m", ["x"])
        client.chat("m", "s", "u")
    assert hosts.calls == [A, B, C] * 2


def test_a_busy_host_is_passed_over_for_an_idle_one() -> None:
    started, release = threading.Event(), threading.Event()

    def slow(request: httpx.Request) -> httpx.Response:
        started.set()
        release.wait(10)
        return answer(request)

    hosts = Hosts(a=slow)
    client = pool(hosts)
    with ThreadPoolExecutor(1) as executor:
        generating = executor.submit(client.chat, "m", "s", "u")  # takes A (round-robin)
        assert started.wait(5)
        # A has a call in flight, B none: B gets every call, not every other one.
        for _ in range(3):
            client.embed("m", ["x"])
        assert hosts.calls == [A, B, B, B]
        release.set()
        assert generating.result(5) == "SELECT 1;"
    assert [h.in_flight for h in client.hosts] == [0, 0]


def test_concurrent_calls_keep_the_books_straight() -> None:
    hosts = Hosts(c="refused")
    client = pool(hosts, A, B, C)
    with ThreadPoolExecutor(8) as executor:
        results = list(executor.map(lambda i: client.embed("m", [str(i)]), range(200)))
    assert len(results) == 200
    assert [h.in_flight for h in client.hosts] == [0, 0, 0]
    calls = Counter(hosts.calls)
    assert calls[A] + calls[B] >= 200 and calls[A] > 20 and calls[B] > 20


# --- what is retried, what is not ---------------------------------------------------------


@pytest.mark.parametrize("failure", ["refused", "reset", "closed"])
def test_a_connection_failure_is_retried_on_the_other_host(failure: str, caplog) -> None:
    hosts = Hosts(a=failure)
    client = pool(hosts)
    before = (count(A, "connect_error"), count(B, "ok"), retries())
    with caplog.at_level(logging.WARNING, logger="querygpt.ollama"):
        assert client.embed("m", ["x"]) == [fake_embedding("x")]
    assert hosts.calls == [A, B]
    assert (count(A, "connect_error"), count(B, "ok"), retries()) == (
        before[0] + 1,
        before[1] + 1,
        before[2] + 1,
    )
    [record] = [r for r in caplog.records if r.getMessage() == "ollama call failed"]
    assert record.ollama_host == "10.20.0.1:11434"
    assert record.outcome == "connect_error" and record.retrying is True
    assert record.path == "/api/embed" and "unreachable" in record.error


def test_a_5xx_is_retried_on_the_other_host() -> None:
    hosts = Hosts(a=500)
    client = pool(hosts)
    before = count(A, "http_5xx")
    assert client.chat("m", "s", "u") == "SELECT 1;"
    assert hosts.calls == [A, B]
    assert count(A, "http_5xx") == before + 1


@pytest.mark.parametrize("status", [400, 404])
def test_a_4xx_is_the_callers_error_and_not_retried(status: int) -> None:
    hosts = Hosts(a=lambda r: httpx.Response(status, json={"error": 'model "nope" not found'}))
    client = pool(hosts)
    before = (count(A, "http_4xx"), retries())
    with pytest.raises(UpstreamError) as info:
        client.chat("nope", "s", "u")
    assert not isinstance(info.value, UpstreamUnavailable)
    assert info.value.status_code == 502
    assert 'model "nope" not found' in info.value.detail
    assert hosts.calls == [A]
    assert (count(A, "http_4xx"), retries()) == (before[0] + 1, before[1])
    # The caller's mistake says nothing about the host: it is not cooling down.
    assert client.hosts[0].cooldown_until == 0


def test_a_read_timeout_is_not_retried() -> None:
    hosts = Hosts(a="timeout")
    client = pool(hosts)
    before = count(A, "timeout")
    with pytest.raises(UpstreamUnavailable) as info:
        client.chat("m", "s", "u")
    assert "Ollama timed out" in info.value.detail and "QUERYGPT_REQUEST_TIMEOUT" in info.value.detail
    assert hosts.calls == [A], "a second try would double a slow generation"
    assert count(A, "timeout") == before + 1
    assert client.hosts[0].cooldown_until == 0


def test_a_host_that_does_not_accept_is_given_up_on_quickly() -> None:
    def no_answer_to_syn(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectTimeout("timed out connecting", request=request)

    hosts = Hosts(a=no_answer_to_syn)
    client = OllamaClient([A, B], timeout=120, transport=httpx.MockTransport(hosts))
    assert client.embed("m", ["x"]) == [fake_embedding("x")]
    assert hosts.calls == [A, B]
    assert hosts.timeouts[0]["connect"] == CONNECT_TIMEOUT_SECONDS
    assert hosts.timeouts[0]["read"] == 120


def test_each_host_is_tried_once_then_the_error_says_how_many() -> None:
    hosts = Hosts(a="refused", b="closed", c="refused")
    client = pool(hosts, A, B, C)
    with pytest.raises(UpstreamUnavailable) as info:
        client.embed("m", ["x"])
    assert sorted(hosts.calls) == sorted([A, B, C])
    assert info.value.status_code == 503
    assert "Ollama is unreachable" in info.value.detail
    assert "Tried 3 Ollama hosts" in info.value.detail
    for url in (A, B, C):
        assert host_label(url).split(":")[0] not in info.value.detail
        assert url in info.value.operator_detail  # for the log, not the client


@pytest.mark.parametrize("behaviour", [{"a": "refused", "b": 503}, {"a": 503, "b": "refused"}])
def test_when_a_host_answered_5xx_the_error_is_a_502_with_its_reason(behaviour) -> None:
    hosts = Hosts(**behaviour)
    client = pool(hosts)
    with pytest.raises(UpstreamError) as info:
        client.embed("m", ["x"])
    assert info.value.status_code == 502
    assert "HTTP 503: injected 503" in info.value.detail and "Tried 2 Ollama hosts" in info.value.detail


# --- cool-down ----------------------------------------------------------------------------


def test_a_failed_host_is_passed_over_until_its_cool_down_ends() -> None:
    clock = Clock()
    hosts = Hosts(a="refused")
    client = pool(hosts, cooldown=10, clock=clock)
    client.embed("m", ["x"])
    assert hosts.calls == [A, B]
    hosts.behaviour[A] = "ok"  # back, but nobody knows yet
    for _ in range(4):
        client.embed("m", ["x"])
    assert hosts.calls[2:] == [B] * 4, "A is cooling down"
    clock.now += 10.01
    for _ in range(4):
        client.embed("m", ["x"])
    assert Counter(hosts.calls[6:]) == {A: 2, B: 2}, "A is back in the rotation"


def test_when_every_host_is_cooling_down_one_is_still_tried() -> None:
    clock = Clock()
    hosts = Hosts(a="refused", b="refused")
    client = pool(hosts, cooldown=10, clock=clock)
    with pytest.raises(UpstreamUnavailable):
        client.embed("m", ["x"])
    assert hosts.calls == [A, B]
    clock.now += 1
    hosts.behaviour[B] = "ok"
    # Both are cooling down; B's cool-down ends first (set by hand: the failures above
    # happened at the same fake time).
    client.hosts[0].cooldown_until = clock.now + 5
    client.hosts[1].cooldown_until = clock.now + 2
    assert client.embed("m", ["x"]) == [fake_embedding("x")]
    assert hosts.calls[2:] == [B], "the host whose cool-down ends first, and nothing refused"
    assert client.hosts[1].cooldown_until == 0, "a success ends the cool-down"


def test_a_cooling_host_is_still_a_retry_target_when_nothing_else_is_left() -> None:
    clock = Clock()
    hosts = Hosts(a="refused")
    client = pool(hosts, cooldown=10, clock=clock)
    client.embed("m", ["x"])  # A fails, cools down
    hosts.behaviour[A] = "ok"
    hosts.behaviour[B] = 500
    assert client.embed("m", ["x"]) == [fake_embedding("x")]
    assert hosts.calls[2:] == [B, A]


# --- the deadline ---------------------------------------------------------------------------


def refusal_after(deadline: Deadline, seconds: float) -> Behaviour:
    """A host that refuses after ``seconds`` have passed on ``deadline``'s clock (moved, not
    slept: the tests do not depend on the machine's speed)."""

    def refuse(request: httpx.Request) -> httpx.Response:
        deadline.start -= seconds
        raise httpx.ConnectError("refused", request=request)

    return refuse


def query_deadline(seconds: float) -> Deadline:
    return Deadline("query", seconds, "QUERYGPT_QUERY_DEADLINE_SECONDS")


def test_no_attempt_starts_after_the_deadline() -> None:
    deadline = query_deadline(60)
    hosts = Hosts(a=refusal_after(deadline, 61))
    client = pool(hosts)
    with pytest.raises(DeadlineExceeded) as info:
        client.embed("m", ["x"], deadline=deadline)
    assert info.value.stage == "embed"
    assert hosts.calls == [A], "B was not tried once the deadline had passed"


def test_a_deadline_passed_during_the_last_attempt_is_not_a_504() -> None:
    # Every host was tried: the outage is the answer, not the deadline.
    deadline = query_deadline(60)
    hosts = Hosts(a="refused", b=refusal_after(deadline, 61))
    client = pool(hosts)
    with pytest.raises(UpstreamUnavailable, match="Tried 2 Ollama hosts"):
        client.embed("m", ["x"], deadline=deadline)


def test_every_attempt_gets_what_is_left_of_the_deadline() -> None:
    deadline = query_deadline(20)
    hosts = Hosts(a=refusal_after(deadline, 8))
    client = pool(hosts)
    client.chat("m", "s", "u", deadline=deadline)
    first, second = (t["read"] for t in hosts.timeouts)
    assert first is not None and second is not None
    assert 19 < first <= 20 and 11 < second <= 12, (first, second)


def test_a_timeout_set_by_the_deadline_is_a_504_and_not_retried() -> None:
    hosts = Hosts(a="timeout")
    client = pool(hosts)
    deadline = query_deadline(5)
    with pytest.raises(DeadlineExceeded) as info:
        client.chat("m", "s", "u", deadline=deadline)
    assert info.value.stage == "generate"
    assert hosts.calls == [A]


# --- through the API ----------------------------------------------------------------------


@pytest.fixture
def two_hosts(make_client, fake_ollama, schema_pdf):
    """The app with two Ollama hosts (the fake answers for both), a schema uploaded."""
    client = make_client(ollama_urls=(A, B))
    assert upload(client, schema_pdf).status_code == 200
    return client


def _ollama_hosts_called(fake_ollama) -> Counter[str]:
    return Counter(
        f"{r.url.host}:{r.url.port}" for r in fake_ollama.requests if r.url.path.startswith("/api/")
        and r.url.path != "/api/version"
    )


def test_the_app_spreads_its_calls_over_the_pool(two_hosts, fake_ollama) -> None:
    for _ in range(2):
        assert two_hosts.post("/query", json={"query": "customers"}).status_code == 200
    called = _ollama_hosts_called(fake_ollama)
    assert called[host_label(A)] >= 2 and called[host_label(B)] >= 2, called


def test_every_host_down_is_the_usual_503_without_addresses(two_hosts, fake_ollama) -> None:
    fake_ollama.ollama_up = False
    response = two_hosts.post("/query", json={"query": "customers"})
    assert response.status_code == 503
    detail = response.json()["detail"]
    assert "Ollama is unreachable" in detail and "Tried 2 Ollama hosts" in detail
    for address in ("10.20.0.1", "ollama-b", "11434", "http"):
        assert address not in response.text


def test_ready_while_one_host_answers_and_each_host_is_reported(make_client, fake_ollama) -> None:
    client = make_client(ollama_urls=(A, B))
    fake_ollama.down_hosts.add("ollama-b.internal")
    response = client.get("/ready")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["checks"] == {"qdrant": "ok", "ollama": "ok", "database": "ok"}
    assert body["ollama_hosts"] == {
        "ollama-1": "ok",
        "ollama-2": "not ready: Ollama is unreachable (ConnectError).",
    }
    assert "ollama-b.internal" not in response.text and "10.20.0.1" not in response.text

    fake_ollama.ollama_up = False
    response = client.get("/ready")
    assert response.status_code == 503
    body = response.json()
    assert body["failed"] == ["ollama"]
    assert body["checks"]["ollama"] == "not ready: none of the 2 Ollama hosts answered (see ollama_hosts)"
    assert set(body["ollama_hosts"]) == {"ollama-1", "ollama-2"}
    assert "ollama-b.internal" not in response.text and "10.20.0.1" not in response.text


def test_pool_metrics_are_exported_per_host_from_the_start(make_client) -> None:
    client = make_client(ollama_urls=(A, C))
    text = client.get("/metrics").text
    for url in (A, C):
        for outcome in ("ok", "connect_error", "http_5xx", "http_4xx", "timeout"):
            assert (
                f'querygpt_ollama_requests_total{{host="{host_label(url)}",outcome="{outcome}"}}'
                in text
            )
    assert "querygpt_ollama_retries_total" in text
