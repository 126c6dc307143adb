"""Query pipeline: embed the question, retrieve schema chunks, ask the LLM.

Each stage is timed separately (querygpt_rag_stage_duration_seconds) because
their costs differ by orders of magnitude and are tuned by different knobs:
the embedding model, top-k/Qdrant, and the LLM.
"""

from __future__ import annotations

from dataclasses import dataclass

from .config import Settings
from .errors import CollectionNotFound
from .metrics import stage_timer
from .ollama import OllamaClient
from .prompts import SYSTEM_PROMPT, build_user_prompt, extract_sql
from .vectorstore import Hit, VectorStore


@dataclass(frozen=True)
class Answer:
    result: str
    sources: list[Hit]


class Answerer:
    def __init__(self, settings: Settings, store: VectorStore, ollama: OllamaClient) -> None:
        self._settings = settings
        self._store = store
        self._ollama = ollama

    def answer(self, collection: str, question: str) -> Answer:
        # Checked first: a typo in the collection name should not cost an
        # embedding call and must be a clear 404, not a Qdrant error.
        if not self._store.collection_exists(collection):
            raise CollectionNotFound(
                f"Collection '{collection}' does not exist; upload a schema PDF into it first."
            )
        with stage_timer("embed"):
            vector = self._ollama.embed(self._settings.embed_model, [question])[0]
        with stage_timer("search"):
            hits = self._store.search(collection, vector, self._settings.top_k)
        if not hits:
            raise CollectionNotFound(
                f"Collection '{collection}' has no indexed documents; upload a schema PDF first."
            )
        with stage_timer("generate"):
            reply = self._ollama.chat(
                self._settings.llm_model, SYSTEM_PROMPT, build_user_prompt(question, hits)
            )
        return Answer(result=extract_sql(reply), sources=hits)
