"""Reading what `ansible-inventory --list` prints (the lab's tests and the inventory tests)."""

from __future__ import annotations

from typing import Any


def unwrap_unsafe(value: Any) -> Any:
    """ansible-inventory --list marks templated values {"__ansible_unsafe": v}; unwrap them."""
    if isinstance(value, dict):
        if set(value) == {"__ansible_unsafe"}:
            return value["__ansible_unsafe"]
        return {k: unwrap_unsafe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [unwrap_unsafe(v) for v in value]
    return value
