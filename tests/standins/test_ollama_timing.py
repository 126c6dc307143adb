"""Pacing of the Ollama LAB STAND-IN (a test fixture, not Ollama): answers take a GPU's time.

Lab rollouts under load must meet requests in flight, so the stand-in sleeps per
generated token, per prompt token and per embedding input (OLLAMA_STANDIN_*_SECONDS,
ollama_standin/pacing.py), reports the time taken in the *_duration fields, and
overlaps concurrent requests. The server here uses larger times than the defaults
so that the effects stand out; assertions are lower bounds (the stand-in keeps a
schedule, so it is never faster) and upper bounds with a wide margin, or
comparisons of server-side timestamps, because the machine running them is busy.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import test_ollama_standin as base
from test_ollama_standin import GEN, NO_PROXY, SCHEMA, Server, chat_messages, start_server

# importable once test_ollama_standin has put the stand-in on sys.path
from ollama_standin import decoding
from ollama_standin.config import TIMING_DEFAULTS, ConfigError, Settings, parse_seconds
from ollama_standin.pacing import Pacer

mirror = base.mirror  # the module-scoped fixture, shared rather than copied

TOKEN = 0.1  # seconds per generated token
PROMPT_TOKEN = 0.005  # seconds per prompt token
EMBED_INPUT = 0.1  # seconds per embedding input
EMBED = "nomic-embed-text:latest"  # word hashing: no model work to add to the pacing
VARIABLES = ("OLLAMA_STANDIN_TOKEN_SECONDS", "OLLAMA_STANDIN_PROMPT_TOKEN_SECONDS", "OLLAMA_STANDIN_EMBED_SECONDS")
NS = 1_000_000_000


@pytest.fixture(scope="module")
def paced(tmp_path_factory: pytest.TempPathFactory, mirror: Path) -> Iterator[Server]:
    server = start_server(
        tmp_path_factory.mktemp("paced") / "models",
        mirror,
        extra_env={
            "OLLAMA_STANDIN_TOKEN_SECONDS": str(TOKEN),
            "OLLAMA_STANDIN_PROMPT_TOKEN_SECONDS": str(PROMPT_TOKEN),
            "OLLAMA_STANDIN_EMBED_SECONDS": str(EMBED_INPUT),
        },
    )
    client = server.client()
    for name in (GEN, EMBED):
        assert client.pull(name, stream=False).status == "success"
    yield server
    server.stop()


def post(server: Server, path: str, body: dict[str, Any]) -> tuple[dict[str, Any], float]:
    """The JSON answer and the seconds the client waited for it."""
    began = time.perf_counter()
    resp = requests.post(server.url + path, json=body, proxies=NO_PROXY, timeout=60)
    waited = time.perf_counter() - began
    assert resp.status_code == 200, resp.text
    return resp.json(), waited


def stream(server: Server, body: dict[str, Any]) -> list[tuple[float, dict[str, Any]]]:
    """(arrival time, object) for each NDJSON line of a streamed /api/generate; time.time() clock."""
    with requests.post(server.url + "/api/generate", json={**body, "stream": True}, proxies=NO_PROXY,
                       timeout=60, stream=True) as resp:
        assert resp.status_code == 200, resp.text
        return [(time.time(), json.loads(line)) for line in resp.iter_lines(chunk_size=1) if line]


def created(obj: dict[str, Any]) -> float:
    return dt.datetime.fromisoformat(obj["created_at"].replace("Z", "+00:00")).timestamp()


# ---------------------------------------------------------------- configuration
def test_unset_variables_give_the_documented_defaults() -> None:
    """Near qwen2.5-coder:1.5b on a GPU, so the lab needs no variable of its own."""
    assert TIMING_DEFAULTS == {
        "OLLAMA_STANDIN_TOKEN_SECONDS": 0.015,
        "OLLAMA_STANDIN_PROMPT_TOKEN_SECONDS": 0.0002,
        "OLLAMA_STANDIN_EMBED_SECONDS": 0.002,
    }
    for env in ({}, dict.fromkeys(VARIABLES, ""), dict.fromkeys(VARIABLES, "  ")):
        settings = Settings.from_env(env)
        assert (settings.token_seconds, settings.prompt_token_seconds, settings.embed_seconds) == (
            0.015, 0.0002, 0.002)


def test_plain_seconds_and_zero_are_accepted() -> None:
    settings = Settings.from_env({"OLLAMA_STANDIN_TOKEN_SECONDS": "0", "OLLAMA_STANDIN_PROMPT_TOKEN_SECONDS": "1e-3",
                                  "OLLAMA_STANDIN_EMBED_SECONDS": " 0.25 "})
    assert (settings.token_seconds, settings.prompt_token_seconds, settings.embed_seconds) == (0.0, 0.001, 0.25)


@pytest.mark.parametrize("value", ["abc", "-0.1", "nan", "inf", "15ms"])
def test_parse_seconds_rejects_a_value_naming_the_variable(value: str) -> None:
    with pytest.raises(ConfigError, match="OLLAMA_STANDIN_EMBED_SECONDS"):
        parse_seconds({"OLLAMA_STANDIN_EMBED_SECONDS": value}, "OLLAMA_STANDIN_EMBED_SECONDS")


@pytest.mark.parametrize("variable", VARIABLES)
def test_serve_refuses_to_start_with_an_invalid_value(tmp_path: Path, variable: str) -> None:
    env = base.base_env()
    env.update({"OLLAMA_HOST": f"127.0.0.1:{base.free_port()}", "OLLAMA_MODELS": str(tmp_path), variable: "fast"})
    done = subprocess.run([sys.executable, "-m", "ollama_standin", "serve"], env=env, capture_output=True,
                          text=True, timeout=30)
    assert done.returncode == 1
    assert f"Error: invalid {variable}='fast': expected seconds" in done.stderr, done.stderr
    assert "Listening" not in done.stderr


# ---------------------------------------------------------------- units
def test_pacer_keeps_a_schedule_and_zero_never_sleeps() -> None:
    began = time.perf_counter()
    Pacer(0).step(10**9)
    assert time.perf_counter() - began < 1.0
    pacer = Pacer(0.02)
    for _ in range(5):
        pacer.step()
    pacer.step(5)
    assert time.perf_counter() - began >= 10 * 0.02
    assert pacer.units == 10


def test_decode_paces_every_generated_token_within_num_predict() -> None:
    pieces = ["SELECT ", "1 ", "FROM ", "t;"]
    for num_predict, tokens in ((2, 2), (-1, len(pieces) + 1), (100, len(pieces) + 1)):
        calls: list[int] = []
        outcome = decoding.Outcome()
        chunks = decoding.decode(pieces, num_predict, (), outcome, lambda: calls.append(outcome.eval_count))
        assert not calls  # lazily: each token's time passes as it is produced
        list(chunks)
        assert calls == list(range(1, tokens + 1)) and outcome.eval_count == tokens  # end-of-sequence too


# ---------------------------------------------------------------- the server
@pytest.mark.parametrize("endpoint", ["generate", "chat"])
def test_non_streaming_answer_takes_a_token_time_per_token(paced: Server, endpoint: str) -> None:
    n = 8
    body: dict[str, Any] = {"model": GEN, "stream": False, "options": {"num_predict": n}}
    if endpoint == "chat":
        body["messages"] = chat_messages("list customer names")
    else:
        body["prompt"] = f"{SCHEMA}\nQuestion: list customer names"
    answer, waited = post(paced, f"/api/{endpoint}", body)
    assert answer["eval_count"] == n and answer["done_reason"] == "length"
    assert waited >= n * TOKEN + answer["prompt_eval_count"] * PROMPT_TOKEN
    assert n * TOKEN * NS <= answer["eval_duration"] < 3 * n * TOKEN * NS
    assert answer["prompt_eval_duration"] >= answer["prompt_eval_count"] * PROMPT_TOKEN * NS
    parts = answer["load_duration"] + answer["prompt_eval_duration"] + answer["eval_duration"]
    assert parts <= answer["total_duration"] <= waited * NS


def test_fewer_tokens_take_less_time(paced: Server) -> None:
    body = {"model": GEN, "prompt": "list customer names", "stream": False}
    one, _ = post(paced, "/api/generate", {**body, "options": {"num_predict": 1}})
    many, _ = post(paced, "/api/generate", {**body, "options": {"num_predict": 10}})
    assert (one["eval_count"], many["eval_count"]) == (1, 10)
    assert TOKEN * NS <= one["eval_duration"] < 10 * TOKEN * NS <= many["eval_duration"]


def test_prompt_evaluation_takes_a_prompt_token_time_per_token(paced: Server) -> None:
    prompt = f"{SCHEMA}\n" + " ".join(f"note{i}" for i in range(100)) + "\nQuestion: list customer names"
    answer, waited = post(paced, "/api/generate",
                          {"model": GEN, "prompt": prompt, "stream": False, "options": {"num_predict": 1}})
    assert answer["prompt_eval_count"] > 100
    assert answer["prompt_eval_duration"] >= answer["prompt_eval_count"] * PROMPT_TOKEN * NS
    assert waited >= answer["prompt_eval_count"] * PROMPT_TOKEN + TOKEN


def test_streamed_chunks_are_spread_over_the_generation(paced: Server) -> None:
    n = 10
    sent = time.time()
    lines = stream(paced, {"model": GEN, "prompt": "list customer names", "options": {"num_predict": n}})
    tokens, final = lines[:-1], lines[-1][1]
    assert final["done"] and final["eval_count"] == n and len(tokens) == n
    # Each chunk leaves no earlier than its token is due (wall-clock timestamps, 10 ms of clock slack) ...
    for i, (_, obj) in enumerate(tokens):
        assert created(obj) >= sent + (i + 1) * TOKEN - 0.01, (i, obj)
    # ... and reach the client as they leave, not all together: ~0.9 s from the first to the last.
    assert tokens[-1][0] - tokens[0][0] >= 0.4 * (n - 1) * TOKEN
    assert final["eval_duration"] >= n * TOKEN * NS


def test_embed_time_scales_with_the_number_of_inputs(paced: Server) -> None:
    one, waited_one = post(paced, "/api/embed", {"model": EMBED, "input": ["customer names"]})
    six, waited_six = post(paced, "/api/embed", {"model": EMBED, "input": [f"table {i}" for i in range(6)]})
    assert len(one["embeddings"]) == 1 and len(six["embeddings"]) == 6
    assert EMBED_INPUT * NS <= one["total_duration"] < 6 * EMBED_INPUT * NS <= six["total_duration"]
    assert waited_one >= EMBED_INPUT and waited_six >= 6 * EMBED_INPUT
    legacy, waited = post(paced, "/api/embeddings", {"model": EMBED, "prompt": "customer names"})
    assert len(legacy["embedding"]) == 768 and waited >= EMBED_INPUT
    empty, _ = post(paced, "/api/embed", {"model": EMBED, "input": []})
    assert empty["embeddings"] == [] and empty["total_duration"] < 6 * EMBED_INPUT * NS


def test_concurrent_requests_overlap(paced: Server) -> None:
    """Two 1 s generations at once take about 1 s, not 2: no lock is held while sleeping."""
    n = 10
    barrier = threading.Barrier(2)
    results: list[list[tuple[float, dict[str, Any]]]] = []

    def run() -> None:
        barrier.wait()
        results.append(stream(paced, {"model": GEN, "prompt": "list customer names", "options": {"num_predict": n}}))

    threads = [threading.Thread(target=run) for _ in range(2)]
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    waited = time.perf_counter() - began
    assert len(results) == 2
    a, b = ([created(obj) for _, obj in lines] for lines in results)
    # Each started producing before the other finished: their generations ran side by side.
    assert a[0] < b[-1] and b[0] < a[-1]
    assert waited < 2 * n * TOKEN  # one after the other would take at least this long
