"""Prompt text for SQL generation, kept apart so it can be tuned and tested.

Like QueryGPT, the model is told to act as an SQL expert, to use only the
schema excerpts retrieved from the uploaded documentation, and to answer
with SQL only, so the result can be pasted into a database console.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from .vectorstore import Hit

SYSTEM_PROMPT = """\
You are QueryGPT, an expert SQL developer.
You are given excerpts from a database's schema documentation (tables, columns, \
keys and their descriptions) and a question written in plain English.
Write one SQL query that answers the question.
Rules:
- Use only tables and columns that appear in the schema context; never invent names.
- Prefer ANSI SQL; use explicit JOIN ... ON clauses and table aliases.
- Return only the SQL query, without explanations.
- If the schema context does not contain what the question needs, reply with a \
single SQL comment that starts with "-- Cannot answer:" and says what is missing."""


def build_user_prompt(question: str, hits: Sequence[Hit]) -> str:
    """The user turn: numbered schema excerpts followed by the question."""
    blocks = [
        f"[{i}] {hit.filename}, page {hit.page}:\n{hit.text}" for i, hit in enumerate(hits, 1)
    ]
    context = "\n\n".join(blocks) if blocks else "(no schema context found)"
    return f"Schema context:\n{context}\n\nQuestion: {question}\n\nSQL:"


_FENCE = re.compile(r"```[ \t]*(?:sql|SQL|postgresql|mysql)?[ \t]*\n(.*?)```", re.DOTALL)


def extract_sql(reply: str) -> str:
    """Strip a Markdown code fence if the model wrapped its SQL in one.

    Small models often do despite the instruction; the UI shows the query
    as-is, so the fence would only be noise.
    """
    match = _FENCE.search(reply)
    if match:
        return match.group(1).strip()
    return reply.strip()
