"""Lab test fixture: a deterministic, clearly labelled "answer" instead of an LLM.

QueryGPT asks the model to turn a question plus retrieved schema documents
into SQL. End-to-end tests need an answer that provably used the retrieved
context, so this picks the CREATE TABLE (or "table X") whose name and columns
best match the question's words and builds a plausible SELECT from it. The
first line always says it is the stand-in, so nobody mistakes it for a model.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from ollama_standin.embedding import tokens

LABEL = "-- QueryGPT lab stand-in (not an LLM)"
_CREATE = re.compile(r"create\s+table\s+(?:if\s+not\s+exists\s+)?([`\"\[]?[\w.]+[`\"\]]?)\s*\(", re.I)
_TABLE_MENTION = re.compile(r"\btable\s*:?\s+[`\"']?([A-Za-z_][\w.]*)", re.I)
_QUESTION = re.compile(r"question\s*:", re.I)
_CONSTRAINT_WORDS = {"primary", "foreign", "constraint", "unique", "check", "index", "key", "exclude"}
_COUNT_PHRASES = ("how many", "count", "number of")


@dataclass(frozen=True)
class Table:
    """A table found in the prompt context."""

    name: str
    columns: tuple[str, ...]


def _stems(text: str) -> set[str]:
    words: set[str] = set()
    for token in tokens(text):
        for word in {token, *token.split("_")}:
            if word:
                words.add(word[:-1] if len(word) > 3 and word.endswith("s") else word)
    return words


def _body(text: str, start: int) -> str:
    """Text inside the parenthesis opened just before start (balanced)."""
    depth = 1
    for i in range(start, len(text)):
        depth += {"(": 1, ")": -1}.get(text[i], 0)
        if depth == 0:
            return text[start:i]
    return text[start:]


def _split_top_level(body: str) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    depth = 0
    for ch in body:
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if ch == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return parts


def find_tables(context: str) -> list[Table]:
    """CREATE TABLE statements in order; falls back to "table X" mentions."""
    tables: dict[str, Table] = {}
    for match in _CREATE.finditer(context):
        name = match.group(1).strip('`"[]')
        columns = []
        for definition in _split_top_level(_body(context, match.end())):
            words = definition.split()
            if words and words[0].strip('`"').lower() not in _CONSTRAINT_WORDS:
                columns.append(words[0].strip('`"[]'))
        tables.setdefault(name.lower(), Table(name, tuple(columns)))
    if not tables:
        for match in _TABLE_MENTION.finditer(context):
            tables.setdefault(match.group(1).lower(), Table(match.group(1), ()))
    return list(tables.values())


def question_of(text: str) -> str:
    """The part of a prompt that is the user's question ("Question: ..." if marked)."""
    starts = [match.end() for match in _QUESTION.finditer(text)]
    return text[starts[-1] :].strip() if starts else text


def build_sql(context: str, question: str) -> str:
    """A plausible SQL statement for question using tables found in context."""
    tables = find_tables(context)
    if not tables:
        return "SELECT 1; -- no table definitions found in the provided context"
    wanted = _stems(question)

    def score(table: Table) -> int:
        return 3 * len(_stems(table.name) & wanted) + sum(1 for c in table.columns if _stems(c) & wanted)

    table = max(tables, key=score)  # max() keeps the first of equal scores
    if any(phrase in question.lower() for phrase in _COUNT_PHRASES):
        return f"SELECT COUNT(*) FROM {table.name};"
    columns = [c for c in table.columns if _stems(c) & wanted] or ["*"]
    return f"SELECT {', '.join(columns)} FROM {table.name} LIMIT 100;"


def answer(context: str, question: str, json_format: bool) -> str:
    """The full labelled answer text (JSON when the request asked for a format)."""
    sql = build_sql(context, question)
    if json_format:
        return json.dumps({"sql": sql, "note": LABEL.lstrip("- ")})
    return f"{LABEL}\n{sql}"


def chunks(text: str) -> list[str]:
    """Stream pieces (word plus trailing whitespace), standing in for tokens."""
    return re.findall(r"\s*\S+\s*", text) or [text]
