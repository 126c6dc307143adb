"""Indexing pipeline: chunks -> embeddings -> Qdrant, all or nothing.

A document is either fully searchable or absent: if embedding or upserting
fails midway, the points already written for that document_id are deleted,
so a retried upload never produces duplicate or half-indexed documents.

The same pipeline serves uploads and ``querygpt-backend reindex``: its input is
an original already kept in the documents bucket, whose key, version id and
sha256 every point records. Once a version is fully indexed, the points of
earlier versions of the same key are removed, so the collection always equals
what a reindex of the bucket's current versions would rebuild.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from .chunking import Chunk, chunk_pages
from .config import Settings
from .documents import DocumentStore, StoredDocument
from .errors import QueryGPTError, UpstreamError
from .limits import Deadline
from .metrics import stage_timer
from .ollama import OllamaClient
from .pdf import PageText
from .vectorstore import StoredChunk, VectorStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IndexResult:
    document_id: str
    collection_name: str
    filename: str
    pages: int
    chunks: int
    source: StoredDocument
    #: A newer upload of the same filename became current while this one was indexed;
    #: this version's points were removed again in favour of it.
    superseded: bool = False


class Indexer:
    def __init__(
        self,
        settings: Settings,
        store: VectorStore,
        ollama: OllamaClient,
        documents: DocumentStore,
    ) -> None:
        self._settings = settings
        self._store = store
        self._ollama = ollama
        self._documents = documents

    @property
    def settings(self) -> Settings:
        return self._settings

    def index(
        self,
        collection: str,
        source: StoredDocument,
        pages: Sequence[PageText],
        deadline: Deadline | None = None,
    ) -> IndexResult:
        """Index ``pages`` of the original ``source`` (already in the bucket).

        With a ``deadline`` (an upload's), every embedding call gets the time that is left and
        no Qdrant write is tried (or retried on another peer) after it; running out rolls the document back like any other failure (a reindex has none).
        """
        s = self._settings
        filename = source.filename
        chunks = chunk_pages(pages, s.chunk_size, s.chunk_overlap, s.chunk_unit)
        document_id = source.document_id
        batches = [
            chunks[i : i + s.embed_batch_size] for i in range(0, len(chunks), s.embed_batch_size)
        ]
        # The first batch is embedded before touching Qdrant: its vectors
        # tell the dimension a new collection must be created with.
        first_vectors = self._embed(batches[0], deadline)
        dimension = len(first_vectors[0])
        created = self._store.ensure_collection(collection, dimension)
        # Reindexing a document that is already searchable rewrites its points with the
        # same ids and content; a failure midway must not make it unsearchable.
        keep = not created and self._store.count_document(collection, document_id) > 0
        try:
            for number, batch in enumerate(batches):
                vectors = first_vectors if number == 0 else self._embed(batch, deadline)
                if any(len(v) != dimension for v in vectors):
                    raise UpstreamError(
                        "ollama",
                        f"Model '{s.embed_model}' returned embeddings of differing sizes.",
                    )
                self._store.upsert(
                    collection,
                    [
                        StoredChunk(
                            document_id=document_id,
                            filename=filename,
                            page=chunk.page,
                            chunk=chunk.index,
                            text=chunk.text,
                            vector=vector,
                            s3_key=source.key,
                            s3_version_id=source.version_id,
                            sha256=source.sha256,
                        )
                        for chunk, vector in zip(batch, vectors, strict=True)
                    ],
                    deadline=deadline,
                )
        except QueryGPTError as exc:
            exc.detail = (
                exc.detail.rstrip(". ") + "." + self._rollback(collection, document_id, keep)
            )
            raise
        except Exception:
            self._rollback(collection, document_id, keep)
            raise
        superseded = self._settle(collection, source, len(chunks))
        log.info(
            "document indexed",
            extra={
                "document_id": document_id,
                "collection": collection,
                "doc_filename": filename,
                "s3_key": source.key,
                "s3_version_id": source.version_id,
                "pages": len(pages),
                "chunks": len(chunks),
                "superseded": superseded,
            },
        )
        return IndexResult(
            document_id, collection, filename, len(pages), len(chunks), source, superseded
        )

    def _settle(self, collection: str, source: StoredDocument, chunks: int) -> bool:
        """Leave only the current version of ``source.key`` in the collection.

        Normally this version is current and replaces the earlier ones. If a concurrent
        upload of the same filename became current meanwhile, this version steps aside
        (its points are removed) and the newer one replaces it when it finishes, so the
        outcome matches the bucket whatever the interleaving. True if superseded.
        """
        try:
            current = self._documents.is_current(source)
        except QueryGPTError as exc:  # S3 blip: the common case is that we are current
            log.warning(
                "could not check the current version; assuming this one",
                extra={"s3_key": source.key, "error": exc.operator_detail},
            )
            current = True
        try:
            if current:
                self._store.delete_replaced(collection, source.key, source.document_id, chunks)
            else:
                self._store.delete_document(collection, source.document_id)
        except QueryGPTError as exc:
            exc.detail = (
                f"'{source.filename}' was indexed, but replacing its other versions in "
                f"collection '{collection}' failed ({exc.detail.rstrip('. ')}); "
                "upload it again to finish."
            )
            raise
        return not current

    def _embed(self, batch: Sequence[Chunk], deadline: Deadline | None) -> list[list[float]]:
        with stage_timer("embed"):
            return self._ollama.embed(
                self._settings.embed_model, [c.text for c in batch], deadline=deadline
            )

    def _rollback(self, collection: str, document_id: str, keep: bool) -> str:
        """Delete the document's points (unless it was indexed before this attempt);
        return a sentence for the user."""
        if keep:
            log.warning(
                "reindexing failed; the document's earlier points were left in place",
                extra={"document_id": document_id, "collection": collection},
            )
            return " Its earlier indexing was left in place; run the reindex again."
        try:
            self._store.delete_document(collection, document_id)
        except Exception as exc:  # noqa: BLE001 - report, do not mask the cause
            log.error(
                "rollback of failed upload failed; partial points remain",
                extra={"document_id": document_id, "collection": collection, "error": str(exc)},
            )
            return (
                f" Removing the partial upload also failed; points with document_id "
                f"{document_id} may remain in collection '{collection}'."
            )
        log.warning(
            "upload failed; partial points removed",
            extra={"document_id": document_id, "collection": collection},
        )
        return (
            " Nothing from this upload was stored in the search index; try again"
            " (the original is kept in the documents bucket)."
        )
