"""Lab test fixture: which models count as "loaded", for /api/ps and load timings.

Nothing is really loaded, but the role and app check /api/ps and keep_alive
semantics (default OLLAMA_KEEP_ALIVE, per-request keep_alive, 0 = unload,
negative = forever), so the stand-in tracks a fake residency with expiry times.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from dataclasses import dataclass

from ollama_standin.store import LocalModel


@dataclass(frozen=True)
class Loaded:
    """A resident model and when it would be unloaded."""

    model: LocalModel
    expires_at: float
    num_ctx: int = 0  # the runner's window, which /api/ps reports as context_length


class Runtime:
    """Thread-safe table of resident models keyed by display name."""

    def __init__(self) -> None:
        self._loaded: dict[str, Loaded] = {}
        self._lock = threading.Lock()

    def touch(self, model: LocalModel, keep_alive: float, num_ctx: int = 0) -> bool:
        """Mark model used now; return True if it had to be "loaded" first (or reloaded for a new num_ctx)."""
        key = model.name.display
        now = time.time()
        with self._lock:
            current = self._loaded.get(key)
            was_loaded = (
                current is not None
                and current.expires_at > now
                and current.model.digest == model.digest
                and current.num_ctx == num_ctx
            )
            if keep_alive <= 0:
                self._loaded.pop(key, None)
            else:
                self._loaded[key] = Loaded(model, now + keep_alive, num_ctx)
        return not was_loaded

    def unload(self, key: str) -> None:
        """Forget a model (deleted, or keep_alive 0)."""
        with self._lock:
            self._loaded.pop(key, None)

    def running(self) -> list[Loaded]:
        """Unexpired models, longest remaining first (upstream's /api/ps order)."""
        now = time.time()
        with self._lock:
            alive = [entry for entry in self._loaded.values() if entry.expires_at > now]
        return sorted(alive, key=lambda entry: entry.expires_at, reverse=True)


def rfc3339(timestamp: float) -> str:
    """Timestamps in the format Go's encoding/json uses (UTC, with fraction)."""
    moment = dt.datetime.fromtimestamp(min(timestamp, 253402300799.0), dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
