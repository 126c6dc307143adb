"""Lab test fixture: turning a canned answer into streamed tokens under num_predict and stop.

Clients rely on these limits (a capped answer length, a stop sequence that
ends a structured reply), so the stand-in applies them with the runner's
rules (runner/ollamarunner/runner.go, runner/common/stop.go in v0.14):
* one piece of the answer is one token; after the last piece the model emits
  an end-of-sequence token, which is counted in eval_count like upstream's;
* before each token, if num_predict > 0 tokens were already produced the
  answer ends with done_reason "length" (the server first caps num_predict at
  10 * num_ctx, and a negative one becomes that cap);
* after each token the pending text is searched for the stop strings, in the
  order given: the first one found cuts the text before it and ends the
  answer with done_reason "stop"; text that could be the start of a stop
  string is held back until it is decided, so a stop never leaks into a
  streamed chunk.

Each token takes time: pace() is called once per token (the end-of-sequence
token too), before it is produced, so a streamed answer trickles out and
fewer tokens (num_predict) take less time; see pacing.py.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field


@dataclass
class Outcome:
    """Filled in while decode() runs: why the answer ended and how many tokens it took."""

    done_reason: str = "stop"
    eval_count: int = 0
    text: list[str] = field(default_factory=list)


def _find_stop(pending: str, stops: Sequence[str]) -> str | None:
    for stop in stops:
        if stop in pending:
            return stop
    return None


def _could_start_stop(pending: str, stops: Sequence[str]) -> bool:
    return any(pending.endswith(stop[:i]) for stop in stops for i in range(1, len(stop) + 1))


def effective_num_predict(num_predict: int, num_ctx: int) -> int:
    """llm/server.go's guard against endless generation."""
    if num_predict < 0 or num_predict > 10 * num_ctx:
        return 10 * num_ctx
    return num_predict


def decode(
    pieces: Sequence[str],
    num_predict: int,
    stops: Sequence[str],
    outcome: Outcome,
    pace: Callable[[], None] | None = None,
) -> Iterator[str]:
    """Yield the chunks a client receives; outcome holds the final statistics afterwards.

    pace, if given, is called as each token is generated (it sleeps the token's time).
    """
    pending = ""
    tokens = iter(pieces)
    while True:
        if num_predict > 0 and outcome.eval_count >= num_predict:
            outcome.done_reason = "length"
            break
        outcome.eval_count += 1
        if pace is not None:
            pace()
        piece = next(tokens, None)
        if piece is None:  # the end-of-sequence token
            outcome.done_reason = "stop"
            break
        pending += piece
        stop = _find_stop(pending, stops)
        if stop is not None:
            pending = pending[: pending.index(stop)]
            outcome.done_reason = "stop"
            break
        if _could_start_stop(pending, stops):
            continue
        outcome.text.append(pending)
        yield pending
        pending = ""
    if pending:
        outcome.text.append(pending)
        yield pending
