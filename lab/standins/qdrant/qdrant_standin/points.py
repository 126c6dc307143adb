"""Point ids, vectors, distances, payload filters and selectors.

LAB TEST FIXTURE (QueryGPT Qdrant stand-in, NOT Qdrant).

Why: the app's retrieval quality tests need real nearest-neighbour ranking, so
search is an exact brute-force scan with upstream's scoring rules (cosine on
normalised vectors, dot, euclid/manhattan distance ascending). Filters support
the conditions our code uses; anything else is rejected with a 400 instead of
being silently ignored.
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from .errors import ApiError, bad_input, unsupported

PointId = int | str
DISTANCES = ("Cosine", "Euclid", "Dot", "Manhattan")
_ASCENDING = ("Euclid", "Manhattan")


@dataclass
class Point:
    """One stored point; ``version`` is the operation id of its last write."""

    id: PointId
    vector: list[float]
    payload: dict[str, Any]
    version: int


def parse_point_id(raw: Any) -> PointId:
    """Accept unsigned integers and UUIDs (normalised to lowercase hyphenated form)."""
    if isinstance(raw, bool):
        raise bad_input(f"Unable to parse point id: {raw!r}")
    if isinstance(raw, int):
        if raw < 0:
            raise bad_input(f"Unable to parse point id: {raw}")
        return raw
    if isinstance(raw, str):
        if raw.isdigit():
            return int(raw)
        try:
            return str(uuid.UUID(raw))
        except ValueError:
            raise bad_input(f"Unable to parse UUID: {raw}") from None
    raise bad_input(f"Unable to parse point id: {raw!r}")


def id_sort_key(point_id: PointId) -> tuple[int, int | str]:
    """Upstream orders numeric ids before UUIDs."""
    return (0, point_id) if isinstance(point_id, int) else (1, point_id)


def parse_vector(raw: Any, size: int) -> list[float]:
    """Validate a dense vector for the collection's single unnamed vector."""
    if isinstance(raw, dict):
        if set(raw) != {""}:
            raise unsupported("Named vectors")
        raw = raw[""]
    if not isinstance(raw, list) or not all(
        isinstance(x, (int, float)) and not isinstance(x, bool) for x in raw
    ):
        raise bad_input("vector must be a list of numbers")
    if len(raw) != size:
        raise bad_input(f"Vector dimension error: expected dim: {size}, got {len(raw)}")
    return [float(x) for x in raw]


def prepare_vector(vector: list[float], distance: str) -> list[float]:
    """Upstream stores cosine vectors normalised, and returns them that way."""
    if distance != "Cosine":
        return vector
    norm = math.sqrt(sum(x * x for x in vector))
    return vector if norm == 0 else [x / norm for x in vector]


def score(query: list[float], stored: list[float], distance: str) -> float:
    """Score of ``stored`` against an already prepared ``query`` vector."""
    if distance in ("Cosine", "Dot"):
        return sum(a * b for a, b in zip(query, stored))
    if distance == "Euclid":
        return math.sqrt(sum((a - b) ** 2 for a, b in zip(query, stored)))
    return sum(abs(a - b) for a, b in zip(query, stored))


def rank(
    points: Iterable[Point],
    query: list[float],
    distance: str,
    score_threshold: float | None,
) -> list[tuple[float, Point]]:
    """All points ordered best-first, after the optional score threshold."""
    ascending = distance in _ASCENDING
    scored = [(score(query, p.vector, distance), p) for p in points]
    if score_threshold is not None:
        scored = [
            (s, p) for s, p in scored if (s <= score_threshold if ascending else s >= score_threshold)
        ]
    scored.sort(key=lambda sp: (sp[0] if ascending else -sp[0], id_sort_key(sp[1].id)))
    return scored


# -- filters -----------------------------------------------------------------


def payload_values(payload: dict[str, Any], key: str) -> list[Any]:
    """Values at a dotted key; arrays match if any element matches, as upstream."""
    nodes: list[Any] = [payload]
    for part in key.split("."):
        next_nodes: list[Any] = []
        for node in nodes:
            if isinstance(node, dict) and part in node:
                next_nodes.append(node[part])
        nodes = next_nodes
    values: list[Any] = []
    for node in nodes:
        values.extend(node if isinstance(node, list) else [node])
    return values


def _same(a: Any, b: Any) -> bool:
    """Equality that keeps ``true`` and ``1`` apart, as upstream's typed match does."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a is b
    return bool(a == b)


def _match(values: list[Any], match: Any) -> bool:
    if not isinstance(match, dict):
        raise bad_input("match must be an object")
    if "value" in match:
        return any(_same(v, match["value"]) for v in values)
    if "any" in match:
        if not isinstance(match["any"], list):
            raise bad_input("match.any must be a list")
        return any(_same(v, wanted) for v in values for wanted in match["any"])
    raise unsupported(f"Match condition {sorted(match)}")


def _range(values: list[Any], bounds: Any) -> bool:
    if not isinstance(bounds, dict):
        raise bad_input("range must be an object")
    checks: dict[str, Callable[[float, float], bool]] = {
        "gt": lambda v, b: v > b,
        "gte": lambda v, b: v >= b,
        "lt": lambda v, b: v < b,
        "lte": lambda v, b: v <= b,
    }
    numbers = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return any(
        all(checks[op](v, b) for op, b in bounds.items() if b is not None and op in checks)
        for v in numbers
    )


def _condition(point: Point, condition: Any) -> bool:
    if not isinstance(condition, dict):
        raise bad_input("filter condition must be an object")
    if {"must", "should", "must_not"} & set(condition):
        return matches(condition, point)
    if "has_id" in condition:
        wanted = {parse_point_id(x) for x in condition["has_id"]}
        return point.id in wanted
    if "key" in condition:
        values = payload_values(point.payload, str(condition["key"]))
        if condition.get("match") is not None:
            return _match(values, condition["match"])
        if condition.get("range") is not None:
            return _range(values, condition["range"])
        raise unsupported(f"Field condition on `{condition['key']}` without match/range")
    raise unsupported(f"Filter condition {sorted(condition)}")


def _conditions(raw: Any) -> list[Any]:
    """Upstream accepts one condition object or a list of them."""
    if raw is None:
        return []
    return raw if isinstance(raw, list) else [raw]


def matches(flt: Any, point: Point) -> bool:
    """Whether ``point`` passes a Qdrant filter (``None`` passes everything)."""
    if flt is None:
        return True
    if not isinstance(flt, dict):
        raise bad_input("filter must be an object")
    if not all(_condition(point, c) for c in _conditions(flt.get("must"))):
        return False
    should = _conditions(flt.get("should"))
    if should and not any(_condition(point, c) for c in should):
        return False
    return not any(_condition(point, c) for c in _conditions(flt.get("must_not")))


# -- selectors and rendering -------------------------------------------------


def select_payload(payload: dict[str, Any], selector: Any) -> dict[str, Any] | None:
    """Apply ``with_payload``: bool, list of keys, or {include}/{exclude}."""
    if selector is None or selector is False:
        return None
    if selector is True:
        return payload
    if isinstance(selector, list):
        return {k: v for k, v in payload.items() if k in selector}
    if isinstance(selector, dict) and "include" in selector:
        return {k: v for k, v in payload.items() if k in selector["include"]}
    if isinstance(selector, dict) and "exclude" in selector:
        return {k: v for k, v in payload.items() if k not in selector["exclude"]}
    raise ApiError(400, f"Wrong input: invalid with_payload selector: {selector!r}")


def select_vector(vector: list[float], selector: Any) -> list[float] | None:
    """Apply ``with_vector``: bool, or a list of vector names ("" is the unnamed one)."""
    if selector is True or (isinstance(selector, list) and "" in selector):
        return vector
    return None


def record(point: Point, with_payload: Any, with_vector: Any) -> dict[str, Any]:
    """Upstream's ``Record`` shape (retrieve, scroll)."""
    return {
        "id": point.id,
        "payload": select_payload(point.payload, with_payload),
        "vector": select_vector(point.vector, with_vector),
    }


def scored_point(
    point: Point, value: float, with_payload: Any, with_vector: Any
) -> dict[str, Any]:
    """Upstream's ``ScoredPoint`` shape (search, query)."""
    return {
        "id": point.id,
        "version": point.version,
        "score": value,
        "payload": select_payload(point.payload, with_payload),
        "vector": select_vector(point.vector, with_vector),
    }
