"""Qdrant access through the official qdrant-client (REST), over every peer of the cluster.

Only this module knows Qdrant's data model. It turns client exceptions into
UpstreamError/UpstreamUnavailable so the API can answer 502/503 with a reason,
and it never logs the API key (the clients are built here and kept private).

**The peers** (QUERYGPT_QDRANT_URLS, issue 14). In distributed mode every Qdrant peer serves
any request (it forwards to the peers holding the shards), so the backend may talk to any of
them; it must survive the one it talks to dying. One ``VectorStore`` holds one QdrantClient per
peer, and follows the Ollama pool's design (ollama.py) and vocabulary:

* **Pick**: round-robin over the peers that are not cooling down. Every peer can coordinate any
  operation, so there is nothing to choose between them but load: round-robin spreads the
  coordinating work (a search's fan-out to the shards and the merge of their answers) over the
  cluster instead of putting every backend's traffic on the first peer, and it needs no
  in-flight bookkeeping (a Qdrant call is short, unlike a generation).
* **Cool-down**: a peer that failed (a connection failure or a 5xx) is passed over for
  ``cooldown`` seconds (QUERYGPT_QDRANT_COOLDOWN_SECONDS). When every peer an operation may
  still try is cooling down, the one whose cool-down ends first is tried anyway: an operation
  is never refused without trying. A success ends a peer's cool-down.
* **Retry**: an operation tries each peer at most once, so it makes at most as many tries as
  there are peers. It moves on to the next peer after a
  connection failure (refused, connect timeout, reset or closed before an answer; qdrant-client
  wraps these in ResponseHandlingException) or a 5xx. It does **not** retry a 4xx (the request
  is wrong: every peer would say the same), nor a read timeout (the peer may still be working;
  the request's time is spent). **Retrying is safe**: every operation is idempotent. Upserts
  use deterministic point ids (StoredChunk.point_id), so a write repeated after a failure that
  may have applied it overwrites the same points; deletes are by filter; creating a collection
  that a failed attempt did create is the 409 ``ensure_collection`` already accepts.
* **Connect timeout**: a stopped host drops the SYN (no refusal comes back), so without a bound
  of its own each try would wait the whole read timeout (QUERYGPT_REQUEST_TIMEOUT, 120 s) before
  the next peer is tried. Every peer's client connects within ``connect_timeout`` seconds
  (QUERYGPT_QDRANT_CONNECT_TIMEOUT_SECONDS, 2 s) whatever read timeout the call has; see
  ConnectTimeoutCap for why this is a transport and not qdrant-client's ``timeout``.
* **Deadline**: an operation made for a request (``deadline``: a query's or an upload's, see
  limits.py) starts no try once the request's time is spent: it raises the request's 504
  instead, as the Ollama pool does; so does a read timeout that outlasted the deadline. A search
  asks Qdrant (and its HTTP wait) for at most the time that is left.
* **Errors**: when every peer failed, the same types as with one peer: UpstreamUnavailable
  (503) when no peer answered, UpstreamError (502) when one answered with a 5xx; the message
  says how many peers were tried and names no address (it reaches API clients); the addresses
  are in ``where``, which only logs and operator tools show.
* **Observability**: every attempt counts in ``querygpt_qdrant_requests_total{peer, outcome}``
  (peer = ``host:port``), every move to another peer in ``querygpt_qdrant_retries_total``, and
  each failed attempt is logged (``qdrant call failed``) with the peer and the reason.

Thread-safe: the bookkeeping is under one lock; qdrant-client's REST clients are thread-safe.
"""

from __future__ import annotations

import logging
import math
import ssl
import threading
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from time import monotonic
from typing import TYPE_CHECKING, Any, TypeVar

import httpx
from qdrant_client import QdrantClient, models
from qdrant_client.http.exceptions import ApiException, UnexpectedResponse

from .errors import DimensionMismatch, UpstreamError, UpstreamUnavailable
from .metrics import QDRANT_REQUESTS, QDRANT_RETRIES, export_qdrant_peer
from .ollama import host_label

if TYPE_CHECKING:
    from .config import Settings
    from .limits import Deadline

log = logging.getLogger(__name__)

SERVICE = "qdrant"

#: Seconds a failed peer is passed over (QUERYGPT_QDRANT_COOLDOWN_SECONDS).
DEFAULT_COOLDOWN_SECONDS = 10.0
#: Seconds a try waits to connect to a peer (QUERYGPT_QDRANT_CONNECT_TIMEOUT_SECONDS).
DEFAULT_CONNECT_TIMEOUT_SECONDS = 2.0

T = TypeVar("T")


@dataclass(frozen=True)
class StoredChunk:
    """One chunk with its vector, ready to upsert.

    ``s3_key``, ``s3_version_id`` and ``sha256`` name the original in the documents
    bucket the chunk was made from, so the collection can be rebuilt from the bucket.
    """

    document_id: str
    filename: str
    page: int
    chunk: int
    text: str
    vector: list[float]
    s3_key: str
    s3_version_id: str | None
    sha256: str

    @property
    def point_id(self) -> str:
        # Deterministic per (document, chunk): a retried upsert overwrites
        # instead of duplicating.
        return str(uuid.uuid5(uuid.UUID(self.document_id), str(self.chunk)))


@dataclass(frozen=True)
class Hit:
    """A retrieved chunk and its cosine similarity to the question."""

    document_id: str
    filename: str
    page: int
    chunk: int
    text: str
    score: float
    #: The original it came from (history records it, so an erasure finds older versions).
    s3_key: str = ""


@dataclass(frozen=True)
class CollectionLayout:
    """How a new collection is spread over Qdrant's peers (upstream's collection parameters).

    ``shard_number`` shards, each kept on ``replication_factor`` peers; a write is
    acknowledged once ``write_consistency_factor`` copies have it. Qdrant fixes the shard
    count at creation; an existing collection keeps its layout (the runbooks change it).
    On a single node every value but 1 shard is accepted and has nothing to act on.
    """

    shard_number: int = 1
    replication_factor: int = 1
    write_consistency_factor: int = 1

    @classmethod
    def from_settings(cls, settings: Settings) -> CollectionLayout:
        return cls(
            shard_number=settings.qdrant_shard_number,
            replication_factor=settings.qdrant_replication_factor,
            write_consistency_factor=settings.qdrant_write_consistency_factor,
        )


class ApiKeys(httpx.BaseTransport):
    """httpx transport that sends Qdrant's ``api-key`` header, with a second key during a
    rotation (playbooks/runbooks/rotate_secrets.yml).

    Qdrant holds one full-access key. While the peers move from the old key to the new one,
    one at a time, this client holds both: a request answered 401 (a key the peer does not
    hold) is sent again with the next key, and the key that worked is tried first from then
    on, so each peer costs one extra request per switch, never a failed call. Only 401 moves
    on: 403 (a key that lacks the right) and everything else is the answer. Request bodies
    are qdrant-client's JSON (bytes), so sending one again is safe. No key: no header.
    """

    def __init__(self, keys: str | Sequence[str] | None, inner: httpx.BaseTransport) -> None:
        given = (keys,) if isinstance(keys, str) or keys is None else tuple(keys)
        self.keys = tuple(dict.fromkeys(key for key in given if key))
        self._inner = inner
        self._first = 0  # the key that last worked

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if not self.keys:
            return self._inner.handle_request(request)
        first = self._first
        for step in range(len(self.keys)):
            index = (first + step) % len(self.keys)
            request.headers["api-key"] = self.keys[index]
            response = self._inner.handle_request(request)
            if response.status_code != 401 or step == len(self.keys) - 1:
                if response.status_code != 401:
                    self._first = index
                return response
            response.read()
            response.close()
        raise AssertionError("unreachable")  # pragma: no cover

    def close(self) -> None:
        self._inner.close()


class ConnectTimeoutCap(httpx.BaseTransport):
    """httpx transport that connects within ``seconds``, whatever timeout the request carries.

    qdrant-client takes one whole-second ``timeout`` and gives it to httpx for every phase
    (connect, write, read, pool); worse, most operations send it again per request (the
    ``timeout`` query parameter Qdrant honours server-side becomes the request's httpx timeout,
    replacing the client's), so an ``httpx.Timeout(..., connect=2)`` set on the client would be
    overridden. A transport sees the request's final timeouts (``request.extensions``, httpx's
    documented place for them) just before it connects, so lowering ``connect`` there holds for
    every operation; the read timeout is left as the call set it. qdrant-client passes the
    transport to its httpx.Client (its ``**kwargs`` go to the REST client).
    """

    def __init__(self, seconds: float, inner: httpx.BaseTransport | None = None) -> None:
        self.seconds = seconds
        self._inner = inner if inner is not None else httpx.HTTPTransport()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        timeouts = dict(request.extensions.get("timeout") or {})
        connect = timeouts.get("connect")
        timeouts["connect"] = self.seconds if connect is None else min(connect, self.seconds)
        request.extensions["timeout"] = timeouts
        return self._inner.handle_request(request)

    def close(self) -> None:
        self._inner.close()


@dataclass(eq=False)
class QdrantPeer:
    """One peer of the cluster and its bookkeeping (guarded by the store's lock)."""

    index: int  # position in QUERYGPT_QDRANT_URLS, from 0
    url: str
    client: QdrantClient = field(repr=False)
    cooldown_until: float = 0.0  # monotonic time; 0 when the peer is not cooling down
    #: ``host:port``: the metrics label and what logs name.
    label: str = field(init=False)

    def __post_init__(self) -> None:
        self.label = host_label(self.url)

    @property
    def name(self) -> str:
        """``qdrant-1``, ``qdrant-2``, ...: the peer's name where no address may appear
        (``/ready``'s body); the order is QUERYGPT_QDRANT_URLS's."""
        return f"qdrant-{self.index + 1}"


class VectorStore:
    """The handful of Qdrant operations QueryGPT needs, over the cluster's peers.

    ``clients`` is one QdrantClient or one per peer, ``location`` their URLs in the same
    order (metrics labels and ``where``); ``cooldown`` is the seconds a failed peer is passed
    over; ``timeout`` the most a deadline-bound search asks for (the per-call timeout, None:
    whatever the deadline leaves); ``clock`` is for tests.
    """

    def __init__(
        self,
        clients: QdrantClient | Sequence[QdrantClient],
        *,
        location: str | Sequence[str] = "http://qdrant:6333",
        layout: CollectionLayout = CollectionLayout(),
        cooldown: float = DEFAULT_COOLDOWN_SECONDS,
        timeout: float | None = None,
        clock: Callable[[], float] = monotonic,
    ) -> None:
        clients = (clients,) if isinstance(clients, QdrantClient) else tuple(clients)
        locations = (location,) if isinstance(location, str) else tuple(location)
        if not clients or len(clients) != len(locations):
            raise ValueError("VectorStore needs one location per client, and at least one")
        self._layout = layout
        self.cooldown = cooldown
        self.timeout = timeout
        self._clock = clock
        self._lock = threading.Lock()
        self._next = 0  # round-robin position
        self.peers: tuple[QdrantPeer, ...] = tuple(
            QdrantPeer(index, url, client)
            for index, (url, client) in enumerate(zip(locations, clients, strict=True))
        )
        for peer in self.peers:
            export_qdrant_peer(peer.label)

    @classmethod
    def from_settings(
        cls, settings: Settings, client: QdrantClient | Sequence[QdrantClient] | None = None
    ) -> VectorStore:
        """The store the service uses: a REST client to each peer of QUERYGPT_QDRANT_URLS, or
        ``client`` (tests): one client standing for the first URL, or one per URL."""
        layout = CollectionLayout.from_settings(settings)
        if client is None:
            return cls.connect(
                settings.qdrant_urls,
                settings.qdrant_api_keys,
                settings.request_timeout,
                layout=layout,
                cooldown=settings.qdrant_cooldown_seconds,
                connect_timeout=settings.qdrant_connect_timeout_seconds,
                verify=settings.tls_verify(),
            )
        clients = (client,) if isinstance(client, QdrantClient) else tuple(client)
        return cls(
            clients,
            location=settings.qdrant_urls[: len(clients)],
            layout=layout,
            cooldown=settings.qdrant_cooldown_seconds,
            timeout=settings.request_timeout,
        )

    @classmethod
    def connect(
        cls,
        urls: str | Sequence[str],
        api_key: str | Sequence[str] | None,
        timeout: float,
        *,
        layout: CollectionLayout = CollectionLayout(),
        cooldown: float = DEFAULT_COOLDOWN_SECONDS,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT_SECONDS,
        verify: ssl.SSLContext | bool = True,
    ) -> VectorStore:
        """Build one REST client per peer URL. No network traffic happens here.

        ``api_key``: one key, or the current and the previous one during a key rotation
        (ApiKeys sends them). ``verify`` checks an https peer's certificate: a context trusting the internal CA
        (``Settings.tls_verify``), or True for the system's CAs. It is given to the transport
        itself, since qdrant-client's own ``verify`` does not reach a custom transport.

        ``timeout`` bounds every wait of a call (qdrant-client rounds it up to whole seconds);
        ``connect_timeout`` bounds the connection to a peer on its own (ConnectTimeoutCap).
        ``check_compatibility=False`` avoids a version call at construction, so the app starts
        (and reports not-ready) while Qdrant is down.
        """
        locations = (urls,) if isinstance(urls, str) else tuple(urls)
        clients = [
            QdrantClient(
                url=url,
                # the key travels in the transport's header (ApiKeys), one or two of them
                api_key=None,
                timeout=max(1, math.ceil(timeout)),
                check_compatibility=False,
                transport=ApiKeys(
                    api_key,
                    ConnectTimeoutCap(
                        min(connect_timeout, timeout), httpx.HTTPTransport(verify=verify)
                    ),
                ),
            )
            for url in locations
        ]
        return cls(
            clients, location=locations, layout=layout, cooldown=cooldown, timeout=timeout
        )

    @property
    def urls(self) -> tuple[str, ...]:
        return tuple(peer.url for peer in self.peers)

    def close(self) -> None:
        for peer in self.peers:
            peer.client.close()

    def collection_exists(self, name: str, *, deadline: Deadline | None = None) -> bool:
        return self._run(
            "check collection",
            lambda c: bool(c.collection_exists(name)),
            deadline=deadline,
            stage="search",
        )

    def ensure_collection(self, name: str, dimension: int) -> bool:
        """Create ``name`` (Cosine, ``dimension``) if missing; True if created.

        An existing collection must have the same dimension, otherwise the
        embedding model was changed and mixing vectors would be meaningless.
        """
        created = self._run("prepare collection", lambda c: self._prepare(c, name, dimension))
        if not created:
            return False
        self._create_indexes(name)
        log.info(
            "created collection",
            extra={
                "collection": name,
                "dimension": dimension,
                "shard_number": self._layout.shard_number,
                "replication_factor": self._layout.replication_factor,
                "write_consistency_factor": self._layout.write_consistency_factor,
            },
        )
        return True

    def _prepare(self, client: QdrantClient, name: str, dimension: int) -> bool:
        """One attempt of ensure_collection on one peer: True if it created ``name``.
        A retry after a failed create that did create it finds it (409 or exists)."""
        if client.collection_exists(name):
            self._check_dimension(client, name, dimension)
            return False
        try:
            client.create_collection(
                collection_name=name,
                vectors_config=models.VectorParams(size=dimension, distance=models.Distance.COSINE),
                shard_number=self._layout.shard_number,
                replication_factor=self._layout.replication_factor,
                write_consistency_factor=self._layout.write_consistency_factor,
            )
        except UnexpectedResponse as exc:
            # Another worker (or an earlier attempt) may have created it a moment ago.
            if exc.status_code == 409 or client.collection_exists(name):
                self._check_dimension(client, name, dimension)
                return False
            raise
        return True

    def upsert(
        self, name: str, chunks: Sequence[StoredChunk], *, deadline: Deadline | None = None
    ) -> None:
        points = [
            models.PointStruct(
                id=c.point_id,
                vector=c.vector,
                payload={
                    "document_id": c.document_id,
                    "filename": c.filename,
                    "page": c.page,
                    "chunk": c.chunk,
                    "text": c.text,
                    "s3_key": c.s3_key,
                    "s3_version_id": c.s3_version_id,
                    "sha256": c.sha256,
                },
            )
            for c in chunks
        ]
        # Deterministic ids: repeating the upsert on another peer overwrites, never duplicates.
        self._run(
            "store chunks",
            lambda c: c.upsert(collection_name=name, points=points, wait=True),
            deadline=deadline,
            stage="store",
        )

    def delete_document(self, name: str, document_id: str) -> None:
        """Remove every point of one document (rollback of a failed upload)."""
        self._run(
            "delete document",
            lambda c: c.delete(
                collection_name=name,
                points_selector=models.FilterSelector(filter=_document_filter(document_id)),
                wait=True,
            ),
        )

    def delete_replaced(self, name: str, s3_key: str, document_id: str, chunks: int) -> None:
        """Keep only ``document_id``'s first ``chunks`` points among those of ``s3_key``.

        Removes the points of earlier versions of the same original, and chunks of this
        very document left from an indexing with other chunk settings, so that the
        collection holds exactly what a reindex of the current versions would produce.
        """
        this_document = models.FieldCondition(
            key="document_id", match=models.MatchValue(value=document_id)
        )
        earlier_versions = models.Filter(
            must=[models.FieldCondition(key="s3_key", match=models.MatchValue(value=s3_key))],
            must_not=[this_document],
        )
        leftover_chunks = models.Filter(
            must=[this_document, models.FieldCondition(key="chunk", range=models.Range(gte=chunks))]
        )
        for selector in (earlier_versions, leftover_chunks):
            self._run(
                "remove replaced points",
                lambda c, selector=selector: c.delete(
                    collection_name=name,
                    points_selector=models.FilterSelector(filter=selector),
                    wait=True,
                ),
            )

    def erase_document(self, name: str, document_id: str, s3_key: str) -> int:
        """Remove every point of the document, and of any other version of its original
        (same ``s3_key``), from collection ``name``; return how many there were (0 if the
        collection does not exist). Safe to repeat."""
        if not self.collection_exists(name):
            return 0
        selector = models.Filter(
            should=[
                models.FieldCondition(key="document_id", match=models.MatchValue(value=document_id)),
                models.FieldCondition(key="s3_key", match=models.MatchValue(value=s3_key)),
            ]
        )
        found = self._run(
            "count document",
            lambda c: c.count(collection_name=name, count_filter=selector, exact=True).count,
        )
        if found:
            self._run(
                "erase document",
                lambda c: c.delete(
                    collection_name=name,
                    points_selector=models.FilterSelector(filter=selector),
                    wait=True,
                ),
            )
        return int(found)

    def count_document(self, name: str, document_id: str) -> int:
        return self._run(
            "count document",
            lambda c: c.count(
                collection_name=name, count_filter=_document_filter(document_id), exact=True
            ).count,
        )

    def search(
        self, name: str, vector: list[float], limit: int, *, deadline: Deadline | None = None
    ) -> list[Hit]:
        """With a ``deadline``, each try asks Qdrant to finish within the time the request has
        left (at most the per-call timeout; whole seconds, at least 1), and no try starts once
        it is spent."""
        response = self._run(
            "search",
            lambda c: c.query_points(
                collection_name=name,
                query=vector,
                limit=limit,
                with_payload=True,
                timeout=self._seconds_left(deadline),
            ),
            deadline=deadline,
            stage="search",
        )
        hits = []
        for point in response.points:
            payload: dict[str, Any] = point.payload or {}
            hits.append(
                Hit(
                    document_id=str(payload.get("document_id", "")),
                    filename=str(payload.get("filename", "")),
                    page=int(payload.get("page", 0) or 0),
                    chunk=int(payload.get("chunk", 0) or 0),
                    text=str(payload.get("text", "")),
                    score=float(point.score),
                    s3_key=str(payload.get("s3_key", "")),
                )
            )
        return hits

    def totals(self) -> tuple[int, int]:
        """(documents, chunks) across all collections.

        Cheap: one count per collection for points, and one filtered count
        for ``chunk == 0`` (every document has exactly one first chunk).
        """
        first_chunk = models.Filter(
            must=[models.FieldCondition(key="chunk", match=models.MatchValue(value=0))]
        )

        def count(client: QdrantClient) -> tuple[int, int]:
            documents = chunks = 0
            for collection in client.get_collections().collections:
                chunks += client.count(collection.name, exact=True).count
                documents += client.count(
                    collection.name, count_filter=first_chunk, exact=True
                ).count
            return documents, chunks

        return self._run("count points", count)

    # -- helpers -------------------------------------------------------------

    def _seconds_left(self, deadline: Deadline | None) -> int | None:
        """The timeout of a deadline-bound try: what the deadline leaves, at most the per-call
        timeout, in qdrant-client's whole seconds (at least 1); None without a deadline."""
        if deadline is None:
            return None
        left = deadline.remaining()
        if self.timeout is not None:
            left = min(left, self.timeout)
        return max(1, math.ceil(left))

    def _check_dimension(self, client: QdrantClient, name: str, dimension: int) -> None:
        info = client.get_collection(name)
        vectors = info.config.params.vectors
        size = vectors.size if isinstance(vectors, models.VectorParams) else None
        if size != dimension:
            raise DimensionMismatch(
                f"Collection '{name}' stores {size or 'named'}-dimensional vectors but the "
                f"embedding model produces {dimension}; use another collection_name or "
                "the embedding model the collection was built with."
            )

    def _create_indexes(self, name: str) -> None:
        """Payload indexes make rollback deletes and document counts cheap.

        Best effort: a Qdrant (or stand-in) without index support still works.
        """
        for field_name, schema in (
            ("document_id", models.PayloadSchemaType.KEYWORD),
            ("chunk", models.PayloadSchemaType.INTEGER),
            ("s3_key", models.PayloadSchemaType.KEYWORD),
        ):
            try:
                self._run(
                    "create payload index",
                    lambda c, field_name=field_name, schema=schema: c.create_payload_index(
                        collection_name=name, field_name=field_name, field_schema=schema, wait=True
                    ),
                )
            except Exception as exc:  # noqa: BLE001 - optional optimisation
                log.warning(
                    "could not create payload index",
                    extra={"collection": name, "field": field_name, "error": repr(exc)[:200]},
                )

    # --- the peers -----------------------------------------------------------------------

    def _pick(self, tried: set[int]) -> QdrantPeer:
        """The next peer for an operation that already tried ``tried`` (not every peer)."""
        with self._lock:
            untried = [p for p in self.peers if p.index not in tried]
            now = self._clock()
            ready = [p for p in untried if p.cooldown_until <= now]
            if ready:
                count = len(self.peers)
                peer = min(ready, key=lambda p: (p.index - self._next) % count)
                self._next = (peer.index + 1) % count
            else:  # every candidate is cooling down: try the one that recovers first
                peer = min(untried, key=lambda p: p.cooldown_until)
            return peer

    def _settle(self, peer: QdrantPeer, outcome: str) -> None:
        """Count the attempt; a connection failure or a 5xx starts the peer's cool-down, a
        success ends it, anything else says nothing about the peer's health."""
        failed = _PEER_FAILED.get(outcome)
        with self._lock:
            if failed:
                peer.cooldown_until = self._clock() + self.cooldown
            elif failed is False:
                peer.cooldown_until = 0.0
        QDRANT_REQUESTS.labels(peer=peer.label, outcome=outcome).inc()

    def _run(
        self,
        action: str,
        operation: Callable[[QdrantClient], T],
        *,
        deadline: Deadline | None = None,
        stage: str = "search",
    ) -> T:
        """Run ``operation`` (idempotent: see the module's docstring) on a peer; on a
        connection failure or a 5xx run it again on the next peer, each peer at most once.

        With a ``deadline`` no try starts once it is spent (its 504, counted under ``stage``),
        and a read timeout that ran past it is that 504 too, rather than a 503."""
        tried: set[int] = set()
        where: list[str] = []
        # The error to raise once every peer failed: a peer's 5xx (it answered: 502) rather
        # than a connection failure (503), as with one peer.
        unreachable: UpstreamError | None = None
        answered: UpstreamError | None = None
        while len(tried) < len(self.peers):
            if deadline is not None:
                deadline.check(stage)  # raises DeadlineExceeded: no try starts after it
            peer = self._pick(tried)
            if tried:
                QDRANT_RETRIES.inc()
            tried.add(peer.index)
            where.append(peer.url)
            try:
                result = operation(peer.client)
            except UnexpectedResponse as exc:
                error: UpstreamError = UpstreamError(
                    SERVICE,
                    f"Qdrant could not {action}: HTTP {exc.status_code} {_qdrant_reason(exc)}",
                    where=peer.url,
                )
                error.__cause__ = exc
                if exc.status_code < 500:
                    self._settle(peer, "http_4xx")
                    raise error from exc
                self._settle(peer, "http_5xx")
                answered, outcome, detail = error, "http_5xx", error.detail
            except (ApiException, httpx.HTTPError, OSError) as exc:
                outcome = _failure_outcome(exc)
                self._settle(peer, outcome)
                failure = UpstreamUnavailable(
                    SERVICE,
                    f"Qdrant is unreachable ({_cause_name(exc)}); could not {action}.",
                    where=peer.url,
                )
                failure.__cause__ = exc
                if outcome != "connect_error":  # a read timeout or an unusable answer
                    if outcome == "timeout" and deadline is not None and deadline.remaining() <= 0:
                        raise deadline.exceeded(stage) from exc
                    raise _with_tries(failure, len(tried), where) from exc
                unreachable, detail = failure, failure.detail
            else:
                self._settle(peer, "ok")
                return result
            log.warning(
                "qdrant call failed",
                extra={
                    "qdrant_peer": peer.label,
                    "action": action,
                    "outcome": outcome,
                    "error": detail,
                    "attempt": len(tried),
                    "peers": len(self.peers),
                    "retrying": len(tried) < len(self.peers),
                },
            )
        failed = answered or unreachable
        assert failed is not None
        raise _with_tries(failed, len(tried), where) from failed.__cause__


#: What an attempt's outcome says about its peer: True failed, False healthy, None nothing.
_PEER_FAILED: dict[str, bool | None] = {
    "ok": False,
    "connect_error": True,
    "http_5xx": True,
    "http_4xx": None,
    "timeout": None,
}


def _failure_outcome(exc: BaseException) -> str:
    """``connect_error`` when nothing was answered (refused, connect timeout, reset or
    closed before an answer), ``timeout`` for a read timeout; ``ok`` for an answer that came
    but could not be used (qdrant-client could not parse it): the peer answered, as the Ollama
    pool counts a 200 whose body it cannot use."""
    source = getattr(exc, "source", None) or exc
    if isinstance(source, httpx.TimeoutException):
        return "connect_error" if isinstance(source, httpx.ConnectTimeout) else "timeout"
    if isinstance(source, (httpx.TransportError, OSError)):
        return "connect_error"
    return "ok"


def _with_tries(error: UpstreamError, tried: int, where: list[str]) -> UpstreamError:
    """``error`` saying how many peers the operation tried (no address: the detail reaches
    API clients), with every address tried in ``where`` (logs only)."""
    peers = "1 Qdrant peer" if tried == 1 else f"{tried} Qdrant peers"
    error.detail = f"{error.detail.rstrip('.')}. Tried {peers}."
    error.args = (error.detail,)
    error.where = ", ".join(where)
    return error


def _document_filter(document_id: str) -> models.Filter:
    return models.Filter(
        must=[models.FieldCondition(key="document_id", match=models.MatchValue(value=document_id))]
    )


def _qdrant_reason(exc: UnexpectedResponse) -> str:
    """Qdrant errors look like ``{"status": {"error": "..."}}``."""
    try:
        body = exc.structured()
        error = body.get("status", {}).get("error") if isinstance(body, dict) else None
        if error:
            return str(error)[:300]
    except (ValueError, AttributeError):
        pass
    return exc.reason_phrase or ""


def _cause_name(exc: BaseException) -> str:
    source = getattr(exc, "source", None)
    return type(source or exc).__name__
