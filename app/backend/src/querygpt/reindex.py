"""Rebuild collections from the originals in the documents bucket.

For the day Qdrant and its snapshots are lost (docs/backups.md): every current
object under ``<prefix>/<collection>/`` is downloaded, its sha256 checked
against the one recorded at upload, and it goes through the same extract ->
chunk -> embed -> upsert pipeline as an upload. Document and point ids derive
from the object's key, version id and sha256, so a second run rewrites the
same points instead of adding new ones.

Each document indexed is also recorded in the database (its documents row is created or
brought up to date), so a reindex also backfills the database for collections uploaded
before it existed.

A damaged object is never indexed: it is reported, the others still are, and
the command exits non-zero at the end so the operator looks at the report.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx
from qdrant_client import QdrantClient

from .config import Settings, is_valid_collection_name
from .database import Database
from .documents import DocumentStore
from .errors import QueryGPTError, UpstreamUnavailable
from .indexing import Indexer
from .ollama import OllamaClient
from .pdf_worker import extract_pages_isolated
from .vectorstore import VectorStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Failure:
    """One thing that was not indexed, and why (``key`` is None for a whole collection)."""

    collection: str
    key: str | None
    error: str
    version_id: str | None = None


@dataclass
class Summary:
    """What a run did; printed as JSON by the CLI."""

    bucket: str
    prefix: str
    collections: list[str] = field(default_factory=list)
    documents: int = 0
    points: int = 0
    failures: list[Failure] = field(default_factory=list)
    #: A service was unreachable, so the remaining documents were not attempted.
    stopped_early: bool = False

    @property
    def ok(self) -> bool:
        return not self.failures

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "bucket": self.bucket,
            "prefix": self.prefix,
            "collections": self.collections,
            "documents": self.documents,
            "points": self.points,
            "failures": [asdict(f) for f in self.failures],
            "stopped_early": self.stopped_early,
        }


class Reindexer:
    def __init__(
        self, documents: DocumentStore, indexer: Indexer, database: Database | None = None
    ) -> None:
        self._documents = documents
        self._indexer = indexer
        self._database = database

    def run(self, collections: list[str] | None) -> Summary:
        """Reindex ``collections``, or every collection folder in the bucket if None."""
        summary = Summary(self._documents.bucket, self._documents.prefix)
        if collections is None:
            try:
                collections = self._all_collections(summary)
            except QueryGPTError as exc:
                summary.failures.append(Failure("*", None, exc.operator_detail))
                return summary
        for collection in collections:
            if summary.stopped_early:
                break
            summary.collections.append(collection)
            self._collection(collection, summary)
        return summary

    def _all_collections(self, summary: Summary) -> list[str]:
        names = []
        for name in self._documents.collections():
            if is_valid_collection_name(name):
                names.append(name)
            else:
                summary.failures.append(
                    Failure(
                        name,
                        None,
                        f"folder '{self._documents.prefix}/{name}/' is not a valid collection "
                        "name (letters, digits, '_' or '-', at most 64); it was skipped.",
                    )
                )
        return names

    def _collection(self, collection: str, summary: Summary) -> None:
        try:
            keys = self._documents.keys(collection)
        except QueryGPTError as exc:
            summary.failures.append(Failure(collection, None, exc.operator_detail))
            return
        if not keys:
            summary.failures.append(
                Failure(
                    collection,
                    None,
                    f"no documents under {self._documents.uri(self._documents.prefix)}/"
                    f"{collection}/; check the collection name and QUERYGPT_DOCUMENTS_PREFIX.",
                )
            )
            return
        for key in keys:
            if summary.stopped_early:
                return
            self._document(collection, key, summary)

    def _document(self, collection: str, key: str, summary: Summary) -> None:
        version_id = None
        try:
            fetched = self._documents.fetch(key)
            version_id = fetched.stored.version_id
            if not fetched.intact:
                recorded = fetched.stored.sha256 or "none recorded"
                raise _Refused(
                    f"sha256 mismatch: the object's metadata says {recorded} but its bytes "
                    f"hash to {fetched.actual_sha256}; not indexed. Restore a good version "
                    f"(aws s3api list-object-versions --bucket {self._documents.bucket} "
                    f"--prefix '{key}') or upload the document again."
                )
            # The same bounds and child process as an upload: a stored original is no
            # more trusted than the upload it came from.
            pages = extract_pages_isolated(fetched.data, self._indexer.settings)
            result = self._indexer.index(collection, fetched.stored, pages)
            if self._database is not None and not result.superseded:
                self._database.record_document(
                    collection,
                    fetched.stored,
                    size=len(fetched.data),
                    chunks=result.chunks,
                    uploaded_at=fetched.last_modified,
                )
        except (QueryGPTError, _Refused) as exc:
            detail = exc.operator_detail if isinstance(exc, QueryGPTError) else str(exc)
            log.warning(
                "document not reindexed",
                extra={"collection": collection, "s3_key": key, "error": detail},
            )
            summary.failures.append(Failure(collection, key, detail, version_id))
            # Qdrant, Ollama or S3 not answering fails every other document the same
            # way: stop, and let the operator rerun once it is back (reruns are safe).
            summary.stopped_early = isinstance(exc, UpstreamUnavailable)
            return
        summary.documents += 1
        summary.points += result.chunks


class _Refused(Exception):
    """The original failed verification; it is reported, never indexed."""


def run(
    settings: Settings,
    collections: list[str] | None,
    *,
    qdrant_client: QdrantClient | None = None,
    http_transport: httpx.BaseTransport | None = None,
    s3_client: Any | None = None,
) -> Summary:
    """Build the clients the service would build from ``settings`` and reindex.

    The keyword arguments are the same seams ``create_app`` has, for tests.
    """
    documents = DocumentStore.connect(settings, s3_client)
    database = Database.connect(settings)
    store = VectorStore.from_settings(settings, qdrant_client)
    tls_verify = settings.tls_verify()
    ollama = OllamaClient(
        settings.ollama_urls,
        timeout=settings.request_timeout,
        cooldown=settings.ollama_cooldown_seconds,
        transport=http_transport,
        verify=tls_verify,
    )
    try:
        indexer = Indexer(settings, store, ollama, documents)
        return Reindexer(documents, indexer, database).run(collections)
    finally:
        database.close()
        ollama.close()
        if qdrant_client is None:
            store.close()
