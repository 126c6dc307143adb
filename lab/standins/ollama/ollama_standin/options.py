"""Lab test fixture: the request `options` the stand-in honours, checked with upstream's rules.

Only num_ctx, num_keep, num_predict and stop change what the stand-in answers;
the other upstream options are type-checked like api.Options.FromMap does (an
option of the wrong type fails the request) and otherwise ignored, as unknown
names are upstream. Defaults are upstream's: num_keep 4, num_predict -1, and
num_ctx from OLLAMA_CONTEXT_LENGTH, whose default depends on the release the
stand-in impersonates (2048 before 0.6.7, 4096 since; from 0.16 the default
follows free VRAM, and a machine without a GPU gets 4096).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

DEFAULT_NUM_KEEP = 4
DEFAULT_NUM_PREDICT = -1

# Upstream api.Options and api.Runner (v0.14): JSON name -> Go kind.
_KINDS = {
    "num_ctx": "integer", "num_batch": "integer", "num_gpu": "integer", "main_gpu": "integer",
    "use_mmap": "boolean", "num_thread": "integer", "num_keep": "integer", "seed": "integer",
    "num_predict": "integer", "top_k": "integer", "top_p": "float32", "min_p": "float32",
    "typical_p": "float32", "repeat_last_n": "integer", "temperature": "float32",
    "repeat_penalty": "float32", "presence_penalty": "float32", "frequency_penalty": "float32",
    "stop": "array",
}


class OptionError(Exception):
    """A request option upstream would reject; message and HTTP status are upstream's."""

    def __init__(self, message: str, status: int = 500) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


@dataclass(frozen=True)
class Options:
    """The options that shape a stand-in answer."""

    num_ctx: int
    num_keep: int = DEFAULT_NUM_KEEP
    num_predict: int = DEFAULT_NUM_PREDICT
    stop: tuple[str, ...] = ()


def default_num_ctx(version: str, env: Mapping[str, str]) -> int:
    """OLLAMA_CONTEXT_LENGTH if set to a positive number, else the release's default."""
    value = env.get("OLLAMA_CONTEXT_LENGTH", "").strip()
    if value.isdigit() and int(value) > 0:
        return int(value)
    parts = tuple(int(p) for p in re.findall(r"\d+", version)[:3])
    return 2048 if parts < (0, 6, 7) else 4096


def _checked(key: str, value: Any) -> Any:
    kind = _KINDS[key]
    if kind == "integer":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise OptionError(f'option "{key}" must be of type integer')
        return int(value)  # Go converts a JSON float to int by truncation
    if kind == "float32":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise OptionError(f'option "{key}" must be of type float32')
        return float(value)
    if kind == "boolean":
        if not isinstance(value, bool):
            raise OptionError(f'option "{key}" must be of type boolean')
        return value
    if not isinstance(value, list):
        raise OptionError(f'option "{key}" must be of type array')
    if not all(isinstance(item, str) for item in value):
        raise OptionError(f'option "{key}" must be of an array of strings')
    return tuple(value)


def parse_options(raw: Any, num_ctx: int) -> Options:
    """Options from a request's `options` object; num_ctx is the server's default."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        kind = {str: "string", list: "array", bool: "bool"}.get(type(raw), "number")
        raise OptionError(
            f"json: cannot unmarshal {kind} into Go struct field .options of type map[string]interface {{}}", 400
        )
    values = {key: _checked(key, value) for key, value in raw.items() if key in _KINDS and value is not None}
    return Options(
        num_ctx=values.get("num_ctx", num_ctx),
        num_keep=values.get("num_keep", DEFAULT_NUM_KEEP),
        num_predict=values.get("num_predict", DEFAULT_NUM_PREDICT),
        stop=values.get("stop", ()),
    )
