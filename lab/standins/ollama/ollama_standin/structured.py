"""Lab test fixture: `format` ("json" or a JSON schema) as upstream accepts and rejects it.

Clients that ask for structured output parse the reply, so the stand-in must
answer with JSON that fits the schema, and must refuse the schemas Ollama
refuses. Upstream (llm/server.go Completion, v0.14) treats null and "" as no
format, "json" as any JSON object, an object as a JSON schema compiled to a
grammar by llama.cpp's json-schema-to-grammar, and anything else as an error.
check() reproduces the cases in which that compiler gives up (an unknown
"type", a schema that is not an object, an unresolvable or non-local "$ref", a
"pattern" without ^...$, a non-numeric length or item count); instance()
builds the smallest value the grammar allows: required properties only, the
first enum/const/anyOf/oneOf choice, minItems items, bounds respected.
Strings are the stand-in's SQL when the property's name says sql or query,
else the stand-in's label, so the reply still shows it is not a model.
"""

from __future__ import annotations

import json
import re
from typing import Any

INVALID_SCHEMA = "invalid JSON schema in format"
_PRIMITIVES = {"boolean", "number", "integer", "value", "object", "array", "string", "null",
               "uuid", "char", "decimal-part", "integral-part"}
_FORMATS = {"date": "2000-01-01", "time": "00:00:00Z", "date-time": "2000-01-01T00:00:00Z"}
_UUID = re.compile(r"uuid[1-5]?")
_SQLISH = re.compile(r"sql|query|statement", re.IGNORECASE)


class FormatError(Exception):
    """Upstream's error for an unusable `format` (answered with HTTP 500)."""


def parse_format(value: Any) -> str | dict[str, Any] | None:
    """None (no format), "json", or a schema; raises FormatError like upstream."""
    if value is None or value == "":
        return None
    if value == "json":
        return "json"
    if isinstance(value, dict):
        check(value)
        return value
    raw = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    quoted = json.dumps(raw, ensure_ascii=False)  # close to Go's %q for these values
    raise FormatError(f'invalid format: {quoted}; expected "json" or a valid JSON Schema object')


def _resolve(root: dict[str, Any], ref: Any) -> Any:
    if not isinstance(ref, str) or not ref.startswith("#/"):
        raise FormatError(INVALID_SCHEMA)  # llama.cpp: "Unsupported ref" (remote refs fetch nothing)
    target: Any = root
    for sel in ref[2:].split("/"):
        if isinstance(target, dict) and sel in target:
            target = target[sel]
        elif isinstance(target, list) and sel.isdigit() and int(sel) < len(target):
            target = target[int(sel)]
        else:
            raise FormatError(INVALID_SCHEMA)  # "Error resolving ref"
    return target


def _int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise FormatError(INVALID_SCHEMA)  # nlohmann get<int> throws
    return int(value)


def _type(schema: dict[str, Any]) -> Any:
    return schema.get("type")


def _object_like(schema: dict[str, Any]) -> bool:
    return _type(schema) in (None, "object") and (
        "properties" in schema or ("additionalProperties" in schema and schema["additionalProperties"] is not True)
    )


def check(schema: Any, root: Any = None, depth: int = 0) -> None:
    """Raise FormatError where llama.cpp's converter reports an error."""
    root = schema if root is None else root
    if depth > 64:
        return  # recursive refs: the grammar handles them; so does instance() by its own bound
    if not isinstance(schema, dict):
        if schema in ({}, [], None) or schema is True:
            return
        raise FormatError(INVALID_SCHEMA)
    if "format" in schema and not isinstance(schema["format"], str):
        raise FormatError(INVALID_SCHEMA)
    kind = _type(schema)
    if "$ref" in schema:
        check(_resolve(root, schema["$ref"]), root, depth + 1)
    elif "oneOf" in schema or "anyOf" in schema:
        alternatives = schema.get("oneOf", schema.get("anyOf"))
        if not isinstance(alternatives, list):
            raise FormatError(INVALID_SCHEMA)
        for alternative in alternatives:
            check(alternative, root, depth + 1)
    elif isinstance(kind, list):
        for each in kind:
            check({**schema, "type": each}, root, depth + 1)
    elif "const" in schema or "enum" in schema:
        return
    elif _object_like(schema):
        properties = schema.get("properties", {})
        if not isinstance(properties, dict):
            raise FormatError(INVALID_SCHEMA)
        for sub in properties.values():
            check(sub, root, depth + 1)
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            check(extra, root, depth + 1)
    elif kind in (None, "object", "string") and "allOf" in schema:
        return  # llama.cpp merges the components' properties and enums without checking them
    elif kind in (None, "array") and ("items" in schema or "prefixItems" in schema):
        items = schema.get("items", schema.get("prefixItems"))
        for item in items if isinstance(items, list) else [items]:
            check(item, root, depth + 1)
        if "minItems" in schema:
            _int(schema["minItems"])
    elif kind in (None, "string") and "pattern" in schema:
        pattern = schema["pattern"]
        if not isinstance(pattern, str) or not (pattern.startswith("^") and pattern.endswith("$")):
            raise FormatError(INVALID_SCHEMA)
    elif kind in (None, "string") and (_UUID.fullmatch(schema.get("format", "")) or
                                       schema.get("format") in _FORMATS):
        return
    elif kind == "string" and ("minLength" in schema or "maxLength" in schema):
        for key in ("minLength", "maxLength"):
            if key in schema:
                _int(schema[key])
    elif kind == "integer" and any(k in schema for k in ("minimum", "exclusiveMinimum", "maximum",
                                                            "exclusiveMaximum")):
        for key in ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"):
            if key in schema:
                _int(schema[key])
    elif not schema or kind == "object":
        return
    elif not isinstance(kind, str) or kind not in _PRIMITIVES:
        raise FormatError(INVALID_SCHEMA)  # "Unrecognized schema"


def _string(schema: dict[str, Any], preferred: str) -> str:
    fmt = schema.get("format", "")
    if _UUID.fullmatch(fmt):
        return "00000000-0000-0000-0000-000000000000"
    if fmt in _FORMATS:
        return _FORMATS[fmt]
    if "pattern" in schema:
        pattern = schema["pattern"][1:-1]
        candidates = [preferred] + [c * n for n in range(9) for c in "a0A"]
        for candidate in candidates:
            try:
                if re.fullmatch(pattern, candidate):
                    return candidate
            except re.error:
                break
        return preferred  # not conforming: the stand-in cannot invert every regex (README)
    low = _int(schema.get("minLength", 0))
    high = _int(schema["maxLength"]) if "maxLength" in schema else None
    text = preferred[:high] if high is not None else preferred
    return text + "x" * max(low - len(text), 0)


def _number(schema: dict[str, Any], integer: bool) -> int | float:
    value: int | float = 0
    if "minimum" in schema:
        value = max(value, schema["minimum"])
    elif "exclusiveMinimum" in schema:
        value = max(value, schema["exclusiveMinimum"] + 1)
    if "maximum" in schema:
        value = min(value, schema["maximum"])
    elif "exclusiveMaximum" in schema:
        value = min(value, schema["exclusiveMaximum"] - 1)
    return int(value) if integer else value


def instance(schema: Any, sql: str, note: str, root: Any = None, name: str = "", depth: int = 0) -> Any:
    """The smallest value schema allows (check() must have passed)."""
    root = schema if root is None else root
    if not isinstance(schema, dict) or depth > 32:
        return {}
    preferred = sql if (not name or _SQLISH.search(name)) else note
    kind = _type(schema)
    if "$ref" in schema:
        return instance(_resolve(root, schema["$ref"]), sql, note, root, name, depth + 1)
    if "oneOf" in schema or "anyOf" in schema:
        first = (schema.get("oneOf") or schema.get("anyOf") or [{}])[0]
        return instance(first, sql, note, root, name, depth + 1)
    if isinstance(kind, list):
        return instance({**schema, "type": kind[0]} if kind else {}, sql, note, root, name, depth + 1)
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        choices = schema["enum"]
        return (choices[0] if choices else None) if isinstance(choices, list) else choices
    if _object_like(schema) or (kind in (None, "object", "string") and "allOf" in schema):
        properties: dict[str, Any] = dict(schema.get("properties", {}))
        required = {r for r in schema.get("required", []) if isinstance(r, str)} \
            if isinstance(schema.get("required"), list) else set()
        for part in schema.get("allOf", []):
            part = _resolve(root, part["$ref"]) if isinstance(part, dict) and "$ref" in part else part
            if isinstance(part, dict) and isinstance(part.get("properties"), dict):
                properties.update(part["properties"])
                required.update(part["properties"])
        return {key: instance(sub, sql, note, root, key, depth + 1)
                for key, sub in properties.items() if key in required}
    if kind in (None, "array") and ("items" in schema or "prefixItems" in schema):
        items = schema.get("items", schema.get("prefixItems"))
        if isinstance(items, list):
            return [instance(item, sql, note, root, name, depth + 1) for item in items]
        return [instance(items, sql, note, root, name, depth + 1)] * _int(schema.get("minItems", 0))
    if kind in (None, "string") and ("pattern" in schema or "format" in schema) or kind == "string":
        return _string(schema, preferred)
    if kind in ("integer", "number"):
        return _number(schema, kind == "integer")
    if kind == "boolean":
        return False
    if kind == "array":
        return []
    if kind in ("null", "value"):
        return None
    return {}


def render(schema: dict[str, Any], sql: str, note: str) -> str:
    """The reply text for a schema format: its smallest instance, as JSON."""
    return json.dumps(instance(schema, sql, note))
