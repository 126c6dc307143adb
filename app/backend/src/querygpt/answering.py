"""Query pipeline: embed the question, retrieve schema chunks, ask the LLM.

Each stage is timed separately (querygpt_rag_stage_duration_seconds) because
their costs differ by orders of magnitude and are tuned by different knobs:
the embedding model, top-k/Qdrant, and the LLM.

All stages share the request's Deadline (limits.py): each call gets the time
that is left, and generation first takes a slot in the GPU queue.
"""

from __future__ import annotations

from dataclasses import dataclass

from .config import Settings
from .errors import CollectionNotFound
from .limits import Deadline, GpuQueue
from .metrics import stage_timer
from .ollama import OllamaClient
from .prompts import SYSTEM_PROMPT, build_user_prompt, extract_sql
from .vectorstore import Hit, VectorStore


@dataclass(frozen=True)
class Answer:
    result: str
    sources: list[Hit]


class Answerer:
    def __init__(
        self, settings: Settings, store: VectorStore, ollama: OllamaClient, gpu: GpuQueue
    ) -> None:
        self._settings = settings
        self._store = store
        self._ollama = ollama
        self._gpu = gpu

    def answer(self, collection: str, question: str, deadline: Deadline) -> Answer:
        # Checked first: a typo in the collection name should not cost an
        # embedding call and must be a clear 404, not a Qdrant error.
        if not self._store.collection_exists(collection, deadline=deadline):
            raise CollectionNotFound(
                f"Collection '{collection}' does not exist; upload a schema PDF into it first."
            )
        with stage_timer("embed"):
            vectors = self._ollama.embed(self._settings.embed_model, [question], deadline=deadline)
        vector = vectors[0]
        deadline.check("search")
        with stage_timer("search"):
            hits = self._store.search(collection, vector, self._settings.top_k, deadline=deadline)
        deadline.check("search")
        if not hits:
            raise CollectionNotFound(
                f"Collection '{collection}' has no indexed documents; upload a schema PDF first."
            )
        prompt = build_user_prompt(question, hits)
        with self._gpu.slot(deadline), stage_timer("generate"):
            reply = self._ollama.chat(
                self._settings.llm_model, SYSTEM_PROMPT, prompt, deadline=deadline
            )
        return Answer(result=extract_sql(reply), sources=hits)
