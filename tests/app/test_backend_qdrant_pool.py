"""The Qdrant peers (QUERYGPT_QDRANT_URLS, issue 14), designed like the Ollama pool: an
operation moves on to the next peer after a connection failure or a 5xx (never after a 4xx or
a read timeout), a failed peer cools down, and a failure of every peer is the same 503/502 as
with one peer, naming no address; /ready is ready while one peer answers.

Each peer is an in-memory qdrant-client (local mode) behind a wrapper that can fail the way a
peer does over REST (qdrant-client's own exceptions), or a real REST client to a closed port
(connection refused); time for cool-downs is a fake clock, so nothing here sleeps for it.

The connect timeout and the deadline are tested over real sockets on 127.0.0.1, each test in
well under 5 s: a *blackhole* peer is a listening socket whose accept queue is full, so the
kernel drops further SYNs as a stopped host does (no refusal comes back); a *silent* peer
accepts connections (the kernel does, into the queue) and never answers; a *stub* peer is a
tiny HTTP server that answers like Qdrant.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY
from qdrant_client import QdrantClient
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse
from querygpt.errors import DeadlineExceeded, UpstreamError, UpstreamUnavailable
from querygpt.limits import Deadline
from querygpt.ollama import host_label
from querygpt.vectorstore import ApiKeys, ConnectTimeoutCap, StoredChunk, VectorStore
from querygpt_testkit import upload

A = "http://10.30.0.1:6333"
B = "http://qdrant-b.internal:6333"
C = "http://10.30.0.3:6333"
DIM = 4
DOC = str(uuid.UUID(int=7))


class Peer:
    """One peer: an in-memory Qdrant holding the cluster's data (shared by every peer, as a
    cluster's peers serve the same collections), failing on demand with ``failure``:
    "refused" or "reset" (qdrant-client's ResponseHandlingException around httpx's error),
    "timeout" (a read timeout), or an HTTP status (UnexpectedResponse)."""

    def __init__(self, data: QdrantClient) -> None:
        self.data = data
        self.failure: str | int | None = None
        self.calls = 0
        self.on_call: Callable[[], None] = lambda: None  # runs before each call (time passing)

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.data, name)
        if name == "close":
            return method

        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            self.on_call()
            request = httpx.Request("POST", "http://peer/collections")
            if self.failure == "refused":
                cause = httpx.ConnectError("[Errno 111] Connection refused", request=request)
                raise ResponseHandlingException(cause)
            if self.failure == "reset":
                cause = httpx.ReadError("[Errno 104] Connection reset by peer", request=request)
                raise ResponseHandlingException(cause)
            if self.failure == "timeout":
                raise ResponseHandlingException(httpx.ReadTimeout("timed out", request=request))
            if isinstance(self.failure, int):
                raise UnexpectedResponse(
                    status_code=self.failure,
                    reason_phrase="Injected",
                    content=b'{"status": {"error": "injected failure"}, "time": 0}',
                    headers=httpx.Headers(),
                )
            return method(*args, **kwargs)

        return call


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def cluster(*urls: str, clock: Clock | None = None) -> tuple[VectorStore, list[Peer]]:
    data = QdrantClient(":memory:")
    peers = [Peer(data) for _ in urls]
    store = VectorStore(peers, location=list(urls), cooldown=10.0, clock=clock or Clock())  # type: ignore[arg-type]
    store.ensure_collection("docs", DIM)
    for peer in peers:
        peer.calls = 0
    return store, peers


def chunk(n: int) -> StoredChunk:
    return StoredChunk(
        document_id=DOC,
        filename="schema.pdf",
        page=1,
        chunk=n,
        text=f"chunk {n}",
        vector=[float(n + 1), 1.0, 0.5, 0.25],
        s3_key="documents/schema.pdf",
        s3_version_id=None,
        sha256="0" * 64,
    )


def count(url: str, outcome: str) -> float:
    value = REGISTRY.get_sample_value(
        "querygpt_qdrant_requests_total", {"peer": host_label(url), "outcome": outcome}
    )
    return value or 0.0


def retries() -> float:
    return REGISTRY.get_sample_value("querygpt_qdrant_retries_total") or 0.0


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- moving on to the next peer ---------------------------------------------------------------


def test_operations_go_round_robin_over_the_peers() -> None:
    store, peers = cluster(A, B, C)
    for _ in range(3):
        store.collection_exists("docs")
    assert [p.calls for p in peers] == [1, 1, 1]


@pytest.mark.parametrize("failure", ["refused", "reset"])
def test_a_dead_first_peer_costs_nothing_and_cools_down(failure: str) -> None:
    clock = Clock()
    store, (a, b) = cluster(A, B, clock=clock)
    a.failure = failure
    before_retries, before_failed = retries(), count(A, "connect_error")
    store.upsert("docs", [chunk(0), chunk(1)])  # tried on A, done on B
    assert store.count_document("docs", DOC) == 2
    assert (a.calls, b.calls) == (1, 2)
    assert retries() == before_retries + 1
    assert count(A, "connect_error") == before_failed + 1
    # During the cool-down A is passed over: no more retries.
    for _ in range(4):
        assert len(store.search("docs", [1.0, 1.0, 0.5, 0.25], 5)) == 2
    assert a.calls == 1 and retries() == before_retries + 1
    # Once it is over, A is tried again; back, it ends its cool-down and takes its share.
    clock.now += 10.5
    a.failure = None
    for _ in range(4):
        store.collection_exists("docs")
    assert a.calls == 3 and b.calls == 8


def test_a_real_refused_connection_moves_on_to_the_next_peer() -> None:
    # qdrant-client's own REST client to a closed port, as after kill -9 of the peer.
    dead = QdrantClient(url=f"http://127.0.0.1:{_closed_port()}", check_compatibility=False, timeout=5)
    alive = QdrantClient(":memory:")
    dead_url = str(dead._client.rest_uri)  # noqa: SLF001 - the URL the client was built with
    store = VectorStore([dead, alive], location=[dead_url, B])
    before = count(dead_url, "connect_error")
    assert store.ensure_collection("docs", DIM) is True
    store.upsert("docs", [chunk(0)])
    assert [h.chunk for h in store.search("docs", [1.0, 1.0, 0.5, 0.25], 3)] == [0]
    assert count(dead_url, "connect_error") == before + 1  # then cooling down
    store.close()


def test_a_5xx_is_tried_again_on_another_peer() -> None:
    store, (a, b) = cluster(A, B)
    a.failure = 500
    before = retries()
    before_5xx = count(A, "http_5xx")
    store.upsert("docs", [chunk(0)])
    assert (a.calls, b.calls) == (1, 1)
    assert retries() == before + 1 and count(A, "http_5xx") == before_5xx + 1
    assert store.count_document("docs", DOC) == 1


def test_a_4xx_is_not_tried_again() -> None:
    store, (a, b) = cluster(A, B)
    a.failure = b.failure = 400
    before = retries()
    before_4xx = count(A, "http_4xx")
    with pytest.raises(UpstreamError) as failed:
        store.upsert("docs", [chunk(0)])
    assert not isinstance(failed.value, UpstreamUnavailable)
    assert failed.value.status_code == 502
    assert (a.calls, b.calls) == (1, 0) and retries() == before
    assert count(A, "http_4xx") == before_4xx + 1
    assert "HTTP 400 injected failure" in failed.value.detail
    assert "Tried" not in failed.value.detail or "1 Qdrant peer" in failed.value.detail
    # A 4xx says nothing about the peer's health: no cool-down.
    a.failure = b.failure = None
    store.collection_exists("docs")
    store.collection_exists("docs")
    assert a.calls == 2


def test_a_read_timeout_is_not_tried_again() -> None:
    store, (a, b) = cluster(A, B)
    a.failure = "timeout"
    with pytest.raises(UpstreamUnavailable) as failed:
        store.search("docs", [1.0, 0, 0, 0], 3)
    assert (a.calls, b.calls) == (1, 0)
    assert failed.value.status_code == 503
    assert "Tried 1 Qdrant peer." in failed.value.detail


def test_every_peer_down_is_a_503_without_addresses() -> None:
    store, peers = cluster(A, B, C)
    for peer in peers:
        peer.failure = "refused"
    before = retries()
    with pytest.raises(UpstreamUnavailable) as failed:
        store.search("docs", [1.0, 0, 0, 0], 3)
    error = failed.value
    assert error.status_code == 503
    assert error.detail == (
        "Qdrant is unreachable (ConnectError); could not search. Tried 3 Qdrant peers."
    )
    for address in ("10.30.0", "qdrant-b", "6333", "http"):
        assert address not in error.detail
    assert sorted(error.where.split(", ")) == sorted((A, B, C))  # for operators' logs only
    assert [p.calls for p in peers] == [1, 1, 1] and retries() == before + 2
    # Every peer cooling down: an operation still tries them (the first to recover first).
    peers[1].failure = None
    assert store.collection_exists("docs") is True


def test_a_5xx_wins_over_a_connection_failure_when_every_peer_failed() -> None:
    store, (a, b) = cluster(A, B)
    a.failure, b.failure = 503, "refused"
    with pytest.raises(UpstreamError) as failed:
        store.delete_document("docs", DOC)
    assert not isinstance(failed.value, UpstreamUnavailable)
    assert failed.value.status_code == 502
    assert failed.value.detail.endswith("Tried 2 Qdrant peers.")


# --- through the API -------------------------------------------------------------------------


def test_the_app_survives_a_dead_first_peer(make_client, schema_pdf) -> None:
    data = QdrantClient(":memory:")
    dead, alive = Peer(data), Peer(data)
    dead.failure = "refused"
    before = retries()
    client = make_client(qdrant=[dead, alive], qdrant_urls=(A, B))  # its first count retries
    assert upload(client, schema_pdf).status_code == 200
    for _ in range(3):
        response = client.post("/query", json={"query": "customers"})
        assert response.status_code == 200, response.text
    assert dead.calls == 1 and alive.calls > 3  # passed over while it cools down
    assert retries() == before + 1


def test_every_peer_down_through_the_api_is_the_usual_503(make_client, schema_pdf) -> None:
    data = QdrantClient(":memory:")
    peers = [Peer(data), Peer(data)]
    client = make_client(qdrant=peers, qdrant_urls=(A, B))
    assert upload(client, schema_pdf).status_code == 200
    for peer in peers:
        peer.failure = "refused"
    response = client.post("/query", json={"query": "customers"})
    assert response.status_code == 503
    assert "Tried 2 Qdrant peers" in response.json()["detail"]
    for address in ("10.30.0.1", "qdrant-b", "6333", "http"):
        assert address not in response.text


def test_ready_while_one_peer_answers_and_each_peer_is_reported(make_client, fake_ollama) -> None:
    client = make_client(qdrant_urls=(A, B, C))
    fake_ollama.qdrant_down_hosts.update({"10.30.0.1", "10.30.0.3"})
    response = client.get("/ready")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["checks"] == {"qdrant": "ok", "ollama": "ok", "database": "ok"}
    assert body["qdrant_peers"] == {
        "qdrant-1": "unreachable: ConnectError",
        "qdrant-2": "ok",
        "qdrant-3": "unreachable: ConnectError",
    }
    assert "qdrant-b.internal" not in response.text and "10.30.0" not in response.text

    fake_ollama.qdrant_down_hosts.add("qdrant-b.internal")
    response = client.get("/ready")
    assert response.status_code == 503
    body = response.json()
    assert body["failed"] == ["qdrant"]
    assert body["checks"]["qdrant"] == "not ready: none of the 3 Qdrant peers answered (see qdrant_peers)"
    assert set(body["qdrant_peers"]) == {"qdrant-1", "qdrant-2", "qdrant-3"}
    assert "qdrant-b.internal" not in response.text and "10.30.0" not in response.text


def test_peer_metrics_are_exported_per_peer_from_the_start(make_client) -> None:
    client = make_client(qdrant_urls=(C,))
    text = client.get("/metrics").text
    for outcome in ("ok", "connect_error", "http_5xx", "http_4xx", "timeout"):
        assert f'querygpt_qdrant_requests_total{{outcome="{outcome}",peer="{host_label(C)}"}}' in text \
            or f'querygpt_qdrant_requests_total{{peer="{host_label(C)}",outcome="{outcome}"}}' in text
    assert "querygpt_qdrant_retries_total" in text


# --- a peer that does not answer, and the request's deadline ---------------------------------

#: The read timeout in these tests: what a try would cost without a connect timeout of its own.
READ_TIMEOUT = 30.0
CONNECT_TIMEOUT = 0.5


def _deadline(seconds: float) -> Deadline:
    return Deadline("query", seconds, "QUERYGPT_QUERY_DEADLINE_SECONDS")


def _deadline_exceeded(stage: str) -> float:
    return REGISTRY.get_sample_value(
        "querygpt_deadline_exceeded_total", {"endpoint": "query", "stage": stage}
    ) or 0.0


@pytest.fixture
def sockets() -> Iterator[list[socket.socket]]:
    """Sockets the test opens, closed after it."""
    opened: list[socket.socket] = []
    yield opened
    for sock in opened:
        sock.close()


def _listener(sockets: list[socket.socket], backlog: int) -> tuple[socket.socket, str]:
    server = socket.socket()
    sockets.append(server)
    server.bind(("127.0.0.1", 0))
    server.listen(backlog)
    return server, f"http://127.0.0.1:{server.getsockname()[1]}"


@pytest.fixture
def blackhole(sockets: list[socket.socket]) -> Callable[[], str]:
    """Makes peers that drop SYNs: a listener with backlog 0 that never accepts, its queue
    filled, so Linux drops every further SYN (a stopped host: no RST, connect just waits)."""

    def make() -> str:
        server, url = _listener(sockets, 0)
        for _ in range(4):
            filler = socket.socket()
            sockets.append(filler)
            filler.settimeout(0.2)
            try:
                filler.connect(server.getsockname())
            except TimeoutError:
                return url  # this SYN was dropped: so will the client's be
        pytest.skip("this kernel does not drop SYNs to a full accept queue")

    return make


@pytest.fixture
def silent(sockets: list[socket.socket]) -> str:
    """A peer that accepts the connection (the kernel does) and never answers."""
    return _listener(sockets, 16)[1]


class _StubServer(ThreadingHTTPServer):
    requests = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _QdrantStub(BaseHTTPRequestHandler):
    """Answers like a Qdrant peer holding an empty collection "docs"; counts requests."""

    server: _StubServer

    def _reply(self) -> None:
        self.server.requests += 1
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        result: Any = {"points": []} if self.path.split("?")[0].endswith("/points/query") else {
            "exists": True
        }
        body = json.dumps({"result": result, "status": "ok", "time": 0}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _reply

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def stub() -> Iterator[_StubServer]:
    server = _StubServer(("127.0.0.1", 0), _QdrantStub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _store(*urls: str, connect_timeout: float = CONNECT_TIMEOUT) -> VectorStore:
    """The service's store (VectorStore.connect: real REST clients) with a long read timeout."""
    return VectorStore.connect(
        list(urls), None, READ_TIMEOUT, connect_timeout=connect_timeout
    )


@pytest.mark.parametrize("operation", ["check collection", "search"])
def test_a_peer_dropping_syns_costs_the_connect_timeout_not_the_read_timeout(
    blackhole: Callable[[], str], stub: _StubServer, operation: str
) -> None:
    # search sends qdrant-client's per-request timeout (here what the deadline leaves, 30 s),
    # which replaces the client's own for every phase: the cap must hold there too.
    dead = blackhole()
    store = _store(dead, stub.url)
    before, before_retries = count(dead, "connect_error"), retries()
    started = time.monotonic()
    if operation == "search":
        assert store.search("docs", [1.0, 0, 0, 0], 3, deadline=_deadline(READ_TIMEOUT)) == []
    else:
        assert store.collection_exists("docs") is True
    elapsed = time.monotonic() - started
    store.close()
    assert CONNECT_TIMEOUT * 0.9 <= elapsed < CONNECT_TIMEOUT + 2.0  # not READ_TIMEOUT
    assert count(dead, "connect_error") == before + 1  # a connection failure: it cools down
    assert retries() == before_retries + 1
    assert stub.requests == 1


def test_the_connect_timeout_leaves_the_read_timeout_alone() -> None:
    seen: dict[str, float] = {}

    def record(request: httpx.Request) -> httpx.Response:
        seen.update(request.extensions["timeout"])
        return httpx.Response(200, json={"result": {"exists": True}, "status": "ok", "time": 0})

    client = QdrantClient(
        url="http://qdrant-a.internal:6333",
        timeout=30,
        check_compatibility=False,
        transport=ConnectTimeoutCap(2.0, httpx.MockTransport(record)),
    )
    assert VectorStore(client, location="http://qdrant-a.internal:6333").collection_exists("x")
    assert seen["connect"] == 2.0 and seen["read"] == 30 and seen["write"] == 30
    client.close()


def test_the_connect_timeout_never_exceeds_the_call_timeout(blackhole: Callable[[], str]) -> None:
    store = VectorStore.connect([blackhole()], None, 0.3, connect_timeout=60)
    started = time.monotonic()
    with pytest.raises(UpstreamUnavailable) as failed:
        store.collection_exists("docs")
    store.close()
    # qdrant-client rounds the call's timeout up to 1 s; the connect cap keeps the 0.3 s.
    assert time.monotonic() - started < 0.9
    assert failed.value.detail == (
        "Qdrant is unreachable (ConnectTimeout); could not check collection. Tried 1 Qdrant peer."
    )


def test_no_try_starts_once_the_deadline_is_spent(
    blackhole: Callable[[], str], stub: _StubServer
) -> None:
    # Two peers dropping SYNs, then a good one; 0.8 s left: the first try fails at 0.5 s, the
    # second starts (time is left) and fails at 1.0 s, the third must not start: 504.
    first, second = blackhole(), blackhole()
    store = _store(first, second, stub.url)
    before, before_504 = retries(), _deadline_exceeded("search")
    started = time.monotonic()
    with pytest.raises(DeadlineExceeded) as failed:
        store.search("docs", [1.0, 0, 0, 0], 3, deadline=_deadline(0.8))
    elapsed = time.monotonic() - started
    store.close()
    assert failed.value.status_code == 504
    assert "searching the collection" in failed.value.detail
    assert elapsed < 2 * CONNECT_TIMEOUT + 1.0
    assert retries() == before + 1  # two tries, not three
    assert stub.requests == 0
    assert _deadline_exceeded("search") == before_504 + 1


def test_a_silent_peer_costs_at_most_the_deadline_and_is_not_retried(
    silent: str, stub: _StubServer
) -> None:
    # Connected but no answer: a read timeout, not retried (the peer may still be working).
    # The search asked for what the deadline left (1 s), so it ends with the deadline's 504.
    store = _store(silent, stub.url)
    before = count(silent, "timeout")
    started = time.monotonic()
    with pytest.raises(DeadlineExceeded):
        store.search("docs", [1.0, 0, 0, 0], 3, deadline=_deadline(1.0))
    elapsed = time.monotonic() - started
    store.close()
    assert 0.9 <= elapsed < 3.0  # the deadline, not READ_TIMEOUT
    assert count(silent, "timeout") == before + 1
    assert stub.requests == 0


def test_a_spent_deadline_stops_the_retries_of_a_write() -> None:
    store, (a, b) = cluster(A, B)
    deadline = Deadline("upload", 60, "QUERYGPT_UPLOAD_DEADLINE_SECONDS")

    def time_passes() -> None:
        deadline.start -= 61  # the try took the rest of the request's time

    a.failure, a.on_call = "refused", time_passes
    before = REGISTRY.get_sample_value(
        "querygpt_deadline_exceeded_total", {"endpoint": "upload", "stage": "store"}
    )
    with pytest.raises(DeadlineExceeded) as failed:
        store.upsert("docs", [chunk(0)], deadline=deadline)
    assert (a.calls, b.calls) == (1, 0)
    assert "storing the chunks" in failed.value.detail
    assert REGISTRY.get_sample_value(
        "querygpt_deadline_exceeded_total", {"endpoint": "upload", "stage": "store"}
    ) == (before or 0.0) + 1


def test_without_a_deadline_the_tries_are_bounded_by_the_peers() -> None:
    # reindex has no deadline: each peer is tried once, so at most len(peers) tries.
    store, peers = cluster(A, B, C)
    for peer in peers:
        peer.failure = 503
    with pytest.raises(UpstreamError):
        store.count_document("docs", DOC)
    assert [p.calls for p in peers] == [1, 1, 1]


class _KeyedPeer:
    """A peer holding one API key, as Qdrant does: 401 for any other; records what it got."""

    def __init__(self, key: str) -> None:
        self.key = key
        self.sent: list[tuple[str | None, bytes]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.sent.append((request.headers.get("api-key"), request.read()))
        if request.headers.get("api-key") != self.key:
            return httpx.Response(401, json={"status": {"error": "Invalid API key or JWT"}})
        return httpx.Response(200, json={"result": {"exists": True}, "status": "ok", "time": 0})


def _keyed_store(peer: _KeyedPeer, keys: tuple[str, ...]) -> VectorStore:
    client = QdrantClient(
        url="http://qdrant-a.internal:6333",
        check_compatibility=False,
        transport=ApiKeys(keys, httpx.MockTransport(peer)),
    )
    return VectorStore(client, location="http://qdrant-a.internal:6333")


def test_during_a_key_rotation_every_call_succeeds_while_the_peer_switches_keys() -> None:
    # The backend holds the new key and the old one (rotate_secrets.yml); the peer still has
    # the old one: one refused try, then the old key, and the old key first from then on.
    peer = _KeyedPeer("old")
    store = _keyed_store(peer, ("new", "old"))
    assert store.collection_exists("docs") and store.collection_exists("docs")
    assert [key for key, _ in peer.sent] == ["new", "old", "old"]
    # The peer restarts with the new key: one refused try again, then the new key only.
    peer.key, peer.sent = "new", []
    assert store.collection_exists("docs") and store.collection_exists("docs")
    assert [key for key, _ in peer.sent] == ["old", "new", "new"]
    store.close()


def test_a_request_sent_again_with_the_other_key_carries_the_same_body() -> None:
    peer = _KeyedPeer("old")
    transport = ApiKeys(["new", "old"], httpx.MockTransport(peer))
    with httpx.Client(transport=transport) as client:
        answer = client.post("http://qdrant-a.internal:6333/collections/docs/points/count",
                             json={"exact": True})
    assert answer.status_code == 200
    assert [body for _, body in peer.sent] == [b'{"exact":true}'] * 2


def test_a_key_no_peer_holds_is_a_401_after_one_try_of_each_key() -> None:
    peer = _KeyedPeer("another")
    with httpx.Client(transport=ApiKeys(("new", "old"), httpx.MockTransport(peer))) as client:
        assert client.get("http://qdrant-a.internal:6333/collections").status_code == 401
    assert [key for key, _ in peer.sent] == ["new", "old"]


def test_only_a_401_moves_to_the_next_key() -> None:
    sent: list[str | None] = []

    def read_only(request: httpx.Request) -> httpx.Response:
        sent.append(request.headers.get("api-key"))
        return httpx.Response(403, json={"status": {"error": "read-only key"}})

    with httpx.Client(transport=ApiKeys(("new", "old"), httpx.MockTransport(read_only))) as client:
        assert client.delete("http://qdrant-a.internal:6333/collections/docs").status_code == 403
    assert sent == ["new"]


@pytest.mark.parametrize("keys", [None, "", ()])
def test_no_key_sends_no_header(keys: Any) -> None:
    peer = _KeyedPeer("k")
    with httpx.Client(transport=ApiKeys(keys, httpx.MockTransport(peer))) as client:
        client.get("http://qdrant-a.internal:6333/collections")
    assert peer.sent == [(None, b"")]


def test_one_key_given_as_a_string_is_one_key() -> None:
    assert ApiKeys("secret", httpx.MockTransport(_KeyedPeer("k"))).keys == ("secret",)
