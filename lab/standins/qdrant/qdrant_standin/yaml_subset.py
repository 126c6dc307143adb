"""Minimal YAML reader for the stand-in's config file.

LAB TEST FIXTURE (QueryGPT Qdrant stand-in, NOT Qdrant).

Why: the stand-in must run on a bare Debian host with only python3, so PyYAML
is unavailable. The config comes from our own Ansible template, which uses a
small YAML subset: nested block maps, block lists, scalars, quoted strings,
flat flow lists/maps and comments. Anything outside that subset raises
``YamlSubsetError`` rather than being guessed at.
"""

from __future__ import annotations

import re
from typing import Any, Iterator

_INT_RE = re.compile(r"^[-+]?[0-9]+$")
_FLOAT_RE = re.compile(r"^[-+]?([0-9]+\.[0-9]*|\.[0-9]+|[0-9]+)([eE][-+]?[0-9]+)?$")
_DOUBLE_QUOTE_ESCAPES = {"n": "\n", "t": "\t", '"': '"', "\\": "\\", "/": "/", "0": "\0"}


class YamlSubsetError(ValueError):
    """The text uses YAML outside the subset this reader understands."""


def _outside_quotes(text: str) -> Iterator[tuple[int, str]]:
    """Yield (index, char) for characters outside quoted scalars (quotes excluded)."""
    quote = ""
    escaped = False
    for index, char in enumerate(text):
        if quote:
            if escaped:
                escaped = False
            elif char == "\\" and quote == '"':
                escaped = True
            elif char == quote:
                quote = ""
        elif char in ("'", '"'):
            quote = char
        else:
            yield index, char


def _strip_comment(line: str) -> str:
    """Drop a trailing ``# comment`` that is not inside quotes."""
    for index, char in _outside_quotes(line):
        if char == "#" and (index == 0 or line[index - 1] in " \t"):
            return line[:index]
    return line


def _split_flow(text: str) -> list[str]:
    """Split the inside of a flat flow collection on commas outside quotes."""
    parts: list[str] = []
    start = 0
    for index, char in _outside_quotes(text):
        if char == ",":
            parts.append(text[start:index].strip())
            start = index + 1
        elif char in "[]{}":
            raise YamlSubsetError(f"nested flow collections are not supported: {text!r}")
    if text[start:].strip():
        parts.append(text[start:].strip())
    return parts


def _unquote_double(body: str) -> str:
    out = ""
    index = 0
    while index < len(body):
        char = body[index]
        if char == "\\" and index + 1 < len(body):
            escaped = body[index + 1]
            if escaped not in _DOUBLE_QUOTE_ESCAPES:
                raise YamlSubsetError(f"unsupported escape \\{escaped}")
            out += _DOUBLE_QUOTE_ESCAPES[escaped]
            index += 2
            continue
        out += char
        index += 1
    return out


def parse_scalar(text: str) -> Any:
    """Interpret one scalar the way YAML 1.2's core schema would."""
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] == '"':
        return _unquote_double(text[1:-1])
    if len(text) >= 2 and text[0] == text[-1] == "'":
        return text[1:-1].replace("''", "'")
    if text.startswith("[") and text.endswith("]"):
        return [parse_scalar(part) for part in _split_flow(text[1:-1])]
    if text.startswith("{") and text.endswith("}"):
        result: dict[str, Any] = {}
        for part in _split_flow(text[1:-1]):
            key, sep, value = part.partition(":")
            if not sep:
                raise YamlSubsetError(f"flow map entry without ':': {part!r}")
            result[str(parse_scalar(key))] = parse_scalar(value)
        return result
    if text in ("", "~", "null", "Null", "NULL"):
        return None
    if text in ("true", "True", "TRUE"):
        return True
    if text in ("false", "False", "FALSE"):
        return False
    if _INT_RE.match(text):
        return int(text)
    if _FLOAT_RE.match(text):
        return float(text)
    if text[0] in "&*!|>%@`":
        raise YamlSubsetError(f"unsupported YAML construct: {text!r}")
    return text


def _split_key(content: str) -> tuple[str, str]:
    """Split ``key: value`` at the first colon outside quotes."""
    for index, char in _outside_quotes(content):
        if char == ":" and (index + 1 == len(content) or content[index + 1] in " \t"):
            return str(parse_scalar(content[:index])), content[index + 1 :].strip()
    raise YamlSubsetError(f"expected 'key: value', got {content!r}")


class _Parser:
    def __init__(self, text: str) -> None:
        self.lines: list[tuple[int, str]] = []
        for raw in text.splitlines():
            if raw.strip() in ("---", "..."):
                continue
            if "\t" in raw[: len(raw) - len(raw.lstrip())]:
                raise YamlSubsetError("tabs are not allowed for indentation")
            stripped = _strip_comment(raw).rstrip()
            if stripped.strip():
                self.lines.append((len(stripped) - len(stripped.lstrip()), stripped.strip()))
        self.pos = 0

    def parse_block(self, indent: int) -> Any:
        if self.lines[self.pos][1].startswith("- ") or self.lines[self.pos][1] == "-":
            return self._parse_list(indent)
        return self._parse_map(indent)

    def _child(self, parent_indent: int, allow_same_indent_list: bool) -> Any:
        """Parse the nested block of a ``key:`` or ``-`` with nothing after it."""
        if self.pos >= len(self.lines):
            return None
        indent, content = self.lines[self.pos]
        if indent > parent_indent:
            return self.parse_block(indent)
        if allow_same_indent_list and indent == parent_indent and content.startswith("-"):
            return self._parse_list(indent)
        return None

    def _parse_map(self, indent: int) -> dict[str, Any]:
        result: dict[str, Any] = {}
        while self.pos < len(self.lines):
            line_indent, content = self.lines[self.pos]
            if line_indent < indent:
                break
            if line_indent > indent or content.startswith("- "):
                raise YamlSubsetError(f"unexpected indentation at {content!r}")
            key, value = _split_key(content)
            self.pos += 1
            result[key] = parse_scalar(value) if value else self._child(indent, True)
        return result

    def _parse_list(self, indent: int) -> list[Any]:
        result: list[Any] = []
        while self.pos < len(self.lines):
            line_indent, content = self.lines[self.pos]
            if line_indent < indent or not (content.startswith("- ") or content == "-"):
                break
            if line_indent > indent:
                raise YamlSubsetError(f"unexpected indentation at {content!r}")
            item = content[1:].strip()
            self.pos += 1
            if not item:
                result.append(self._child(indent, False))
            elif re.match(r"^[^'\"\[{].*?:(\s|$)", item):
                raise YamlSubsetError(f"maps inside list items are not supported: {item!r}")
            else:
                result.append(parse_scalar(item))
        return result


def load(text: str) -> Any:
    """Parse a document; an empty document yields ``None`` like PyYAML."""
    parser = _Parser(text)
    if not parser.lines:
        return None
    value = parser.parse_block(parser.lines[0][0])
    if parser.pos != len(parser.lines):
        raise YamlSubsetError(f"unexpected content at {parser.lines[parser.pos][1]!r}")
    return value
