"""Payload edits (set, overwrite, delete keys, clear) and payload index schemas.

LAB TEST FIXTURE (QueryGPT Qdrant stand-in, NOT Qdrant).

Why: operators and later code edit payloads in place and create payload indexes
(`payload_schema` in the collection info is how they check one exists), so the
stand-in follows upstream's rules: a top-level set merges keys and a `null` value
removes the key; `key` sets below a dotted path, turning non-objects on the way
into objects; an index reports its type and how many points hold a value of that
type. Array indices in paths (`a[0]`, `a[]`) are not emulated and are refused with
a 400 rather than guessed at. An index changes no result here: filters always scan.
"""

from __future__ import annotations

import copy
import uuid
from datetime import datetime
from typing import Any

from .errors import ApiError, bad_input, unsupported

SCHEMA_TYPES = ("keyword", "integer", "float", "geo", "text", "bool", "datetime", "uuid")


def parse_path(raw: Any) -> list[str]:
    """A payload key as upstream's JsonPath, limited to plain dotted object keys."""
    if not isinstance(raw, str) or not raw:
        raise bad_input(f"Invalid payload key path {raw!r}")
    if any(c in raw for c in '[]"'):
        raise unsupported(f"Payload key path `{raw}` (array indices and quoted keys)")
    parts = raw.split(".")
    if not all(parts):
        raise bad_input(f"Invalid payload key path {raw!r}")
    return parts


def merge(dest: dict[str, Any], src: dict[str, Any]) -> None:
    """Upstream's merge_map: each key replaces the old value, and ``null`` removes it."""
    for key, value in src.items():
        if value is None:
            dest.pop(key, None)
        else:
            dest[key] = copy.deepcopy(value)


def set_at(payload: dict[str, Any], path: list[str] | None, src: dict[str, Any]) -> None:
    """Merge ``src`` into the object at ``path`` (created, or replacing a non-object)."""
    node = payload
    for part in path or []:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    merge(node, src)


def remove_at(payload: dict[str, Any], path: list[str]) -> None:
    node: Any = payload
    for part in path[:-1]:
        node = node.get(part) if isinstance(node, dict) else None
    if isinstance(node, dict):
        node.pop(path[-1], None)


def parse_field_schema(raw: Any) -> str | dict[str, Any]:
    """A PayloadFieldSchema: a type name, or an object of index params with a ``type``."""
    if raw is None:
        # upstream answers this in do_create_index, before anything is submitted
        raise ApiError(400, "Bad request: Can't auto-detect field type, please specify `field_schema` in the request")
    kind = raw.get("type") if isinstance(raw, dict) else raw
    if not isinstance(kind, str) or kind not in SCHEMA_TYPES:
        raise ApiError(400, f"Json deserialize error: unknown variant `{kind}`, expected one of "
                       + ", ".join(f"`{t}`" for t in SCHEMA_TYPES))
    return copy.deepcopy(raw) if isinstance(raw, dict) else kind


def _is_datetime(value: str) -> bool:
    try:
        datetime.fromisoformat(value.replace(" ", "T", 1))
    except ValueError:
        return False
    return True


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def indexable(value: Any, kind: str) -> bool:
    """Whether upstream's index of ``kind`` would take this value (others are skipped)."""
    def is_number(x: Any) -> bool:
        return isinstance(x, (int, float)) and not isinstance(x, bool)
    if kind in ("keyword", "text"):
        return isinstance(value, str)
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "float":
        return is_number(value)
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "datetime":
        return isinstance(value, str) and _is_datetime(value)
    if kind == "uuid":
        return isinstance(value, str) and _is_uuid(value)
    return (isinstance(value, dict) and is_number(value.get("lon")) and is_number(value.get("lat"))
            and -180 <= value["lon"] <= 180 and -90 <= value["lat"] <= 90)


def index_info(schema: str | dict[str, Any], points: int) -> dict[str, Any]:
    """Upstream's PayloadIndexInfo: params only when the index was created with them."""
    if isinstance(schema, dict):
        return {"data_type": schema["type"], "params": schema, "points": points}
    return {"data_type": schema, "points": points}
