"""Lab test fixture: the context window (num_ctx), truncated the way upstream truncates it.

A real model sees at most num_ctx tokens, and Ollama cuts longer input rather
than failing, so a RAG prompt that outgrows the window silently loses schema
documents. The stand-in reproduces that so tests can notice it. Tokens are the
stand-in's word tokens (the ones embedding.tokens counts; no special tokens),
kept here with their positions so truncated text can be cut out of the
original.

Upstream (v0.14) does it in three places, mirrored below:
* chat (server/prompt.go chatPrompt): walk back from the newest message and
  keep the longest suffix of messages that fits in num_ctx, together with the
  system messages before it; the newest message is always kept;
* the runner (runner/*/runner.go NewSequence): a prompt still longer than the
  window keeps its first num_keep tokens and its end, dropping the middle;
* embed (server/routes.go EmbedHandler): with `truncate` (the default) an
  input is cut to the window, otherwise the request fails.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

_WORD = re.compile(r"[A-Za-z0-9_]+")
MIN_NUM_CTX = 4  # the scheduler's floor (server/sched.go)
TOO_LONG = "the input length exceeds the context length"


def count(text: str) -> int:
    """Tokens in text, as the stand-in counts them."""
    return sum(1 for _ in _WORD.finditer(text))


def runner_num_ctx(requested: int, trained: int) -> int:
    """The window a runner gets: at least 4, at most what the model was trained with."""
    window = max(requested, MIN_NUM_CTX)
    return min(window, trained) if trained > 0 else window


@dataclass(frozen=True)
class Truncated:
    """Prompt text as the model sees it, and how many tokens that is."""

    text: str
    tokens: int
    truncated: bool


def truncate_prompt(text: str, num_ctx: int, num_keep: int) -> Truncated:
    """Keep the first num_keep tokens and the end of the prompt, as the runner does."""
    spans = [m.span() for m in _WORD.finditer(text)]
    if len(spans) <= num_ctx:
        return Truncated(text, len(spans), False)
    keep = len(spans) if num_keep < 0 else num_keep
    keep = min(keep, num_ctx - 1)  # at least one token must be discardable
    start = keep + len(spans) - num_ctx
    head = text[: spans[keep - 1][1]] + "\n" if keep > 0 else ""
    return Truncated(head + text[spans[start][0] :], keep + len(spans) - start, True)


def head(text: str, limit: int) -> Truncated:
    """The first limit tokens of text (embed truncation keeps the beginning)."""
    spans = [m.span() for m in _WORD.finditer(text)]
    if len(spans) <= limit:
        return Truncated(text, len(spans), False)
    return Truncated(text[: spans[limit - 1][1]] if limit > 0 else "", limit, True)


@dataclass(frozen=True)
class Message:
    """The parts of a chat message that matter for the window."""

    role: str
    content: str


def render(messages: Sequence[Message]) -> str:
    """The stand-in's chat template: message contents, one after another."""
    return "\n".join(m.content for m in messages)


def select_messages(messages: Sequence[Message], num_ctx: int) -> list[Message]:
    """chatPrompt's choice: newest messages that fit, plus earlier system messages."""
    last = len(messages) - 1
    first = last
    system: list[Message] = []
    for i in range(last - 1, -1, -1):
        # Like upstream, the system messages are those before index i, recomputed each step.
        system = [m for m in messages[:i] if m.role == "system"]
        if count(render([*system, *messages[i:]])) > num_ctx:
            break
        first = i
    return [*system, *messages[first:]]
