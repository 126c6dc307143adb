"""Qdrant access through the official qdrant-client (REST).

Only this module knows Qdrant's data model. It turns client exceptions into
UpstreamError/UpstreamUnavailable so the API can answer 502/503 with a reason,
and it never logs the API key (the client is built here and kept private).
"""

from __future__ import annotations

import logging
import math
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx
from qdrant_client import QdrantClient, models
from qdrant_client.http.exceptions import ApiException, UnexpectedResponse

from .errors import DimensionMismatch, UpstreamError, UpstreamUnavailable

if TYPE_CHECKING:
    from .config import Settings

log = logging.getLogger(__name__)

SERVICE = "qdrant"


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


class VectorStore:
    """The handful of Qdrant operations QueryGPT needs."""

    def __init__(
        self,
        client: QdrantClient,
        *,
        location: str = "qdrant",
        layout: CollectionLayout = CollectionLayout(),
    ) -> None:
        self._client = client
        self._location = location
        self._layout = layout

    @classmethod
    def from_settings(
        cls, settings: Settings, client: QdrantClient | None = None
    ) -> VectorStore:
        """The store the service uses: ``client`` (tests) or a REST client to QUERYGPT_QDRANT_URL."""
        layout = CollectionLayout.from_settings(settings)
        if client is None:
            return cls.connect(
                settings.qdrant_url,
                settings.qdrant_api_key,
                settings.request_timeout,
                layout=layout,
            )
        return cls(client, location=settings.qdrant_url, layout=layout)

    @classmethod
    def connect(
        cls,
        url: str,
        api_key: str | None,
        timeout: float,
        *,
        layout: CollectionLayout = CollectionLayout(),
    ) -> VectorStore:
        """Build a REST client. No network traffic happens here.

        ``check_compatibility=False`` avoids a version call at construction,
        so the app starts (and reports not-ready) while Qdrant is down.
        """
        client = QdrantClient(
            url=url,
            api_key=api_key,
            timeout=max(1, math.ceil(timeout)),
            check_compatibility=False,
        )
        return cls(client, location=url, layout=layout)

    def close(self) -> None:
        self._client.close()

    def collection_exists(self, name: str) -> bool:
        with self._errors("check collection"):
            return bool(self._client.collection_exists(name))

    def ensure_collection(self, name: str, dimension: int) -> bool:
        """Create ``name`` (Cosine, ``dimension``) if missing; True if created.

        An existing collection must have the same dimension, otherwise the
        embedding model was changed and mixing vectors would be meaningless.
        """
        with self._errors("prepare collection"):
            if self._client.collection_exists(name):
                self._check_dimension(name, dimension)
                return False
            try:
                self._client.create_collection(
                    collection_name=name,
                    vectors_config=models.VectorParams(
                        size=dimension, distance=models.Distance.COSINE
                    ),
                    shard_number=self._layout.shard_number,
                    replication_factor=self._layout.replication_factor,
                    write_consistency_factor=self._layout.write_consistency_factor,
                )
            except UnexpectedResponse as exc:
                # Another worker may have created it a moment ago.
                if exc.status_code == 409 or self._client.collection_exists(name):
                    self._check_dimension(name, dimension)
                    return False
                raise
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

    def upsert(self, name: str, chunks: Sequence[StoredChunk]) -> None:
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
        with self._errors("store chunks"):
            self._client.upsert(collection_name=name, points=points, wait=True)

    def delete_document(self, name: str, document_id: str) -> None:
        """Remove every point of one document (rollback of a failed upload)."""
        with self._errors("delete document"):
            self._client.delete(
                collection_name=name,
                points_selector=models.FilterSelector(filter=_document_filter(document_id)),
                wait=True,
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
        with self._errors("remove replaced points"):
            for selector in (earlier_versions, leftover_chunks):
                self._client.delete(
                    collection_name=name,
                    points_selector=models.FilterSelector(filter=selector),
                    wait=True,
                )

    def count_document(self, name: str, document_id: str) -> int:
        with self._errors("count document"):
            return self._client.count(
                collection_name=name, count_filter=_document_filter(document_id), exact=True
            ).count

    def search(
        self, name: str, vector: list[float], limit: int, *, timeout: float | None = None
    ) -> list[Hit]:
        """``timeout``: seconds Qdrant may spend on the search (whole seconds, at least 1)."""
        with self._errors("search"):
            response = self._client.query_points(
                collection_name=name,
                query=vector,
                limit=limit,
                with_payload=True,
                timeout=None if timeout is None else max(1, math.ceil(timeout)),
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
                )
            )
        return hits

    def totals(self) -> tuple[int, int]:
        """(documents, chunks) across all collections.

        Cheap: one count per collection for points, and one filtered count
        for ``chunk == 0`` (every document has exactly one first chunk).
        """
        documents = chunks = 0
        first_chunk = models.Filter(
            must=[models.FieldCondition(key="chunk", match=models.MatchValue(value=0))]
        )
        with self._errors("count points"):
            for collection in self._client.get_collections().collections:
                chunks += self._client.count(collection.name, exact=True).count
                documents += self._client.count(
                    collection.name, count_filter=first_chunk, exact=True
                ).count
        return documents, chunks

    # -- helpers -------------------------------------------------------------

    def _check_dimension(self, name: str, dimension: int) -> None:
        info = self._client.get_collection(name)
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
                self._client.create_payload_index(
                    collection_name=name, field_name=field_name, field_schema=schema, wait=True
                )
            except Exception as exc:  # noqa: BLE001 - optional optimisation
                log.warning(
                    "could not create payload index",
                    extra={"collection": name, "field": field_name, "error": repr(exc)[:200]},
                )

    @contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        try:
            yield
        except UnexpectedResponse as exc:
            raise UpstreamError(
                SERVICE,
                f"Qdrant could not {action}: HTTP {exc.status_code} {_qdrant_reason(exc)}",
            ) from exc
        except (ApiException, httpx.HTTPError, OSError) as exc:
            raise UpstreamUnavailable(
                SERVICE,
                f"Qdrant is unreachable ({_cause_name(exc)}); could not {action}.",
                where=self._location,
            ) from exc


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
