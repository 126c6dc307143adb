"""Upload pipeline: chunks -> embeddings -> Qdrant, all or nothing.

A document is either fully searchable or absent: if embedding or upserting
fails midway, the points already written for that document_id are deleted,
so a retried upload never produces duplicate or half-indexed documents.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from .chunking import Chunk, chunk_pages
from .config import Settings
from .errors import QueryGPTError, UpstreamError
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


class Indexer:
    def __init__(self, settings: Settings, store: VectorStore, ollama: OllamaClient) -> None:
        self._settings = settings
        self._store = store
        self._ollama = ollama

    def index(self, collection: str, filename: str, pages: Sequence[PageText]) -> IndexResult:
        s = self._settings
        chunks = chunk_pages(pages, s.chunk_size, s.chunk_overlap, s.chunk_unit)
        document_id = str(uuid.uuid4())
        batches = [
            chunks[i : i + s.embed_batch_size] for i in range(0, len(chunks), s.embed_batch_size)
        ]
        # The first batch is embedded before touching Qdrant: its vectors
        # tell the dimension a new collection must be created with.
        first_vectors = self._embed(batches[0])
        dimension = len(first_vectors[0])
        self._store.ensure_collection(collection, dimension)
        try:
            for number, batch in enumerate(batches):
                vectors = first_vectors if number == 0 else self._embed(batch)
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
                        )
                        for chunk, vector in zip(batch, vectors, strict=True)
                    ],
                )
        except QueryGPTError as exc:
            exc.detail = exc.detail.rstrip(". ") + "." + self._rollback(collection, document_id)
            raise
        except Exception:
            self._rollback(collection, document_id)
            raise
        log.info(
            "document indexed",
            extra={
                "document_id": document_id,
                "collection": collection,
                "doc_filename": filename,
                "pages": len(pages),
                "chunks": len(chunks),
            },
        )
        return IndexResult(document_id, collection, filename, len(pages), len(chunks))

    def _embed(self, batch: Sequence[Chunk]) -> list[list[float]]:
        with stage_timer("embed"):
            return self._ollama.embed(self._settings.embed_model, [c.text for c in batch])

    def _rollback(self, collection: str, document_id: str) -> str:
        """Delete the document's points; return a sentence for the user."""
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
        return " Nothing from this upload was stored; try again."
