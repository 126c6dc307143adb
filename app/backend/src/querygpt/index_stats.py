"""Keep the documents/chunks gauges equal to what Qdrant actually holds.

Counting in Qdrant (instead of incrementing in memory) makes the numbers
survive restarts and agree across uvicorn workers. It is counted at a process's
first scrape (not at start-up, which must not wait for Qdrant) and after each
upload or delete; after a failure ``/metrics`` retries at most once per
``retry_seconds`` so scrapes stay cheap.
"""

from __future__ import annotations

import logging
import threading
from time import monotonic

from .metrics import set_index_totals
from .vectorstore import VectorStore

log = logging.getLogger(__name__)


class IndexStats:
    def __init__(self, store: VectorStore, *, retry_seconds: float = 30.0) -> None:
        self._store = store
        self._retry_seconds = retry_seconds
        self._lock = threading.Lock()
        self._fresh = False
        self._last_attempt = float("-inf")

    def refresh(self) -> bool:
        """Recount from Qdrant; on failure keep the old values and log."""
        with self._lock:
            self._last_attempt = monotonic()
            try:
                documents, chunks = self._store.totals()
            except Exception as exc:  # noqa: BLE001 - metrics must never break requests
                self._fresh = False
                log.warning("could not count indexed documents", extra={"error": str(exc)})
                return False
            set_index_totals(documents, chunks)
            self._fresh = True
            return True

    def refresh_if_stale(self) -> None:
        """Retry a failed refresh, rate-limited; no-op while the values are good."""
        if self._fresh or monotonic() - self._last_attempt < self._retry_seconds:
            return
        self.refresh()
