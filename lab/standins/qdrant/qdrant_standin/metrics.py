"""Prometheus text exposition for ``GET /metrics``.

LAB TEST FIXTURE (QueryGPT Qdrant stand-in, NOT Qdrant).

Why: the monitoring role scrapes Qdrant with an API key and its alert rules and
dashboards reference upstream metric names (app_info, collections_total,
collections_vector_total, rest_responses_*); the stand-in exposes those names
with upstream's labels so scrape configs and rules can be tested end to end.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from .storage import Store


@dataclass
class _Stats:
    count: int = 0
    total_seconds: float = 0.0


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(pairs: dict[str, str]) -> str:
    if not pairs:
        return ""
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in pairs.items()) + "}"


def _number(value: float) -> str:
    """Whole numbers in full (timestamps, counts), others as ``%g``."""
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


class RequestMetrics:
    """Per (method, route pattern, status) counters of REST responses."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._stats: dict[tuple[str, str, int], _Stats] = {}

    def observe(self, method: str, endpoint: str, status: int, seconds: float) -> None:
        with self._lock:
            stats = self._stats.setdefault((method, endpoint, status), _Stats())
            stats.count += 1
            stats.total_seconds += seconds

    def render(self, store: Store, version: str, cluster: dict[str, Any] | None = None) -> str:
        """``cluster`` (cluster mode): collection names, this peer's local point counts and
        the raft_info numbers of GET /cluster, rendered under upstream's metric names."""
        if cluster is None:
            with store.lock:
                collections = len(store.collections)
                vectors = sum(len(c.points) for c in store.collections.values())
                per_collection = {name: len(c.points) for name, c in store.collections.items()}
        else:
            collections = len(cluster["collections"])
            per_collection = dict(cluster["collections"])
            vectors = sum(per_collection.values())
        with self._lock:
            snapshot = sorted(self._stats.items())
        families: list[tuple[str, str, str, list[tuple[dict[str, str], float]]]] = [
            ("app_info", "information about qdrant server", "gauge",
             [({"name": "qdrant", "version": version}, 1)]),
            ("app_status_recovery_mode", "features enabled in qdrant server", "gauge", [({}, 0)]),
            ("collections_total", "number of collections", "gauge", [({}, collections)]),
            ("collections_vector_total", "total number of vectors in all collections", "gauge",
             [({}, vectors)]),
            ("collection_points", "approximate amount of points per collection", "gauge",
             [({"id": name}, count) for name, count in sorted(per_collection.items())]),
            ("cluster_enabled", "is cluster support enabled", "gauge", [({}, 0 if cluster is None else 1)]),
        ]
        if cluster is not None:
            peer = {"peer_id": str(cluster["peer_id"])}
            families += [
                ("cluster_peers_total", "total number of cluster peers", "gauge", [({}, cluster["peers"])]),
                ("cluster_term", "current cluster term", "counter", [({}, cluster["term"])]),
                ("cluster_commit", "index of last committed (finalized) operation cluster peer is aware of",
                 "counter", [(peer, cluster["commit"])]),
                ("cluster_pending_operations_total", "total number of pending operations for cluster peer",
                 "gauge", [({}, 0)]),
                ("cluster_voter", "is cluster peer a voter or learner", "gauge", [({}, 1)]),
                ("cluster_last_update_timestamp_seconds", "unix timestamp of last update", "counter",
                 [({}, cluster["last_update"])]),
                ("cluster_working_state", "working state of the cluster", "gauge",
                 [({"state": "working"}, 1), ({"state": "stopped"}, 0)]),
            ]
        labels = [
            ({"method": m, "endpoint": e, "status": str(s)}, stats) for (m, e, s), stats in snapshot
        ]
        families += [
            ("rest_responses_total", "total number of responses", "counter",
             [(lbl, st.count) for lbl, st in labels]),
            ("rest_responses_avg_duration_seconds", "average response duration", "gauge",
             [(lbl, st.total_seconds / st.count) for lbl, st in labels]),
        ]
        lines: list[str] = []
        for name, help_text, kind, samples in families:
            if not samples:
                continue
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
            lines += [f"{name}{_labels(lbl)} {_number(value)}" for lbl, value in samples]
        return "\n".join(lines) + "\n"
