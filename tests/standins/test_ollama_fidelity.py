"""Fidelity of the Ollama LAB STAND-IN (a test fixture, not Ollama): options, formats, context, HTTP framing.

Each behaviour is the one upstream v0.14 shows (sources named in the stand-in's
modules): num_predict and stop end an answer with "length" or "stop"; format
"json" or a JSON schema gives JSON that validates; num_ctx cuts prompts and
embedding inputs; and no answer, error or not, leaves a request body unread
on a kept-alive connection. Driven with the official `ollama` client where it
exposes the option, with raw HTTP where it does not.
"""

from __future__ import annotations

import json
import re
import socket
import sys
from typing import Any, Literal

import jsonschema
import ollama
import pydantic
import pytest
import requests
import test_ollama_standin as base
from test_ollama_standin import (
    GEN,
    LABEL,
    NO_PROXY,
    SCHEMA,
    STANDIN,
    Server,
    chat_messages,
)

mirror = base.mirror  # the module-scoped fixtures, shared rather than copied
shared = base.shared

PROMPT = f"{SCHEMA}\nQuestion: list customer names"
ANSWER = f"{LABEL}\nSELECT name FROM customers LIMIT 100;"
PIECES = re.findall(r"\S+\s*", ANSWER)  # the stand-in streams one word (with its whitespace) per token


def post(server: Server, path: str, body: Any) -> requests.Response:
    return requests.post(server.url + path, json=body, timeout=10, proxies=NO_PROXY)


# ---------------------------------------------------------------- num_predict
def test_num_predict_caps_generate_with_length(shared: Server) -> None:
    client = shared.client()
    whole = client.generate(model=GEN, prompt=PROMPT, options={"num_predict": 3})
    assert (whole.done_reason, whole.eval_count) == ("length", 3)
    assert whole.response == "".join(PIECES[:3])
    parts = list(client.generate(model=GEN, prompt=PROMPT, options={"num_predict": 3}, stream=True))
    assert [p.response for p in parts[:-1]] == PIECES[:3]
    assert (parts[-1].done_reason, parts[-1].eval_count) == ("length", 3)


def test_num_predict_caps_chat_and_a_roomy_limit_changes_nothing(shared: Server) -> None:
    client = shared.client()
    messages = chat_messages("list customer names")
    capped = client.chat(model=GEN, messages=messages, options={"num_predict": 2})
    assert (capped.message.content, capped.done_reason, capped.eval_count) == ("-- QueryGPT ", "length", 2)
    free = client.chat(model=GEN, messages=messages, options={"num_predict": 100})
    assert free.message.content == ANSWER and free.done_reason == "stop"
    # The end-of-sequence token counts in eval_count, as upstream's runner counts it.
    assert free.eval_count == len(PIECES) + 1


def test_option_of_wrong_type_is_refused_like_upstream(shared: Server) -> None:
    resp = post(shared, "/api/generate", {"model": GEN, "prompt": "x", "options": {"num_predict": "3"}})
    assert (resp.status_code, resp.json()) == (500, {"error": 'option "num_predict" must be of type integer'})
    resp = post(shared, "/api/chat", {"model": GEN, "messages": [{"role": "user", "content": "x"}],
                                      "options": {"stop": "FROM"}})
    assert (resp.status_code, resp.json()) == (500, {"error": 'option "stop" must be of type array'})


# ---------------------------------------------------------------- stop
def test_stop_cuts_before_the_first_stop_sequence(shared: Server) -> None:
    client = shared.client()
    whole = client.generate(model=GEN, prompt=PROMPT, options={"stop": [" LIMIT", "FROM"]})
    assert whole.response == f"{LABEL}\nSELECT name "
    assert whole.done_reason == "stop"
    assert whole.eval_count == PIECES.index("FROM ") + 1  # up to the token that completed the stop
    parts = list(client.generate(model=GEN, prompt=PROMPT, options={"stop": ["FROM"]}, stream=True))
    assert "".join(p.response for p in parts) == whole.response


def test_stop_spanning_tokens_never_leaks_into_a_stream(shared: Server) -> None:
    client = shared.client()
    messages = chat_messages("list customer names")
    parts = list(client.chat(model=GEN, messages=messages, options={"stop": ["\nSEL"]}, stream=True))
    chunks = [p.message.content for p in parts[:-1]]
    assert "".join(chunks) == LABEL  # "LLM)\n" was held back until "SELECT" decided it
    assert not any(c.endswith("\n") for c in chunks)
    assert parts[-1].done_reason == "stop"


# ---------------------------------------------------------------- format
class Table(pydantic.BaseModel):
    name: str
    columns: list[str] = pydantic.Field(min_length=1)


class Answer(pydantic.BaseModel):
    sql: str
    kind: Literal["select", "count"]
    confidence: float
    rows: int = pydantic.Field(ge=1, le=10)
    tables: list[Table] = pydantic.Field(min_length=2)
    comment: str | None = None


def test_format_schema_from_pydantic_validates(shared: Server) -> None:
    client = shared.client()
    schema = Answer.model_json_schema()  # nested models become $defs and $ref
    reply = client.chat(model=GEN, messages=chat_messages("list customer names"), format=schema)
    answer = Answer.model_validate_json(reply.message.content)
    assert answer.sql == "SELECT name FROM customers LIMIT 100;"
    assert len(answer.tables) == 2 and 1 <= answer.rows <= 10
    parts = list(client.generate(model=GEN, prompt=PROMPT, format=schema, stream=True))
    Answer.model_validate_json("".join(p.response for p in parts))


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "object", "properties": {"query": {"type": "string", "maxLength": 12},
                                          "n": {"type": "integer", "exclusiveMinimum": 5},
                                          "when": {"type": "string", "format": "date-time"},
                                          "id": {"type": "string", "format": "uuid"},
                                          "code": {"type": "string", "pattern": "^[0-9]{3}$"}},
         "required": ["query", "n", "when", "id", "code"], "additionalProperties": False},
        {"type": "array", "items": {"enum": ["a", "b"]}, "minItems": 3},
        {"anyOf": [{"type": "null"}, {"type": "string"}]},
        {"type": ["integer", "string"], "minimum": 2},
        {"type": "object", "properties": {"pair": {"type": "array", "prefixItems": [{"type": "boolean"},
                                                                                    {"const": 7}]}},
         "required": ["pair"]},
    ],
)
def test_format_schema_instances_conform(shared: Server, schema: dict[str, Any]) -> None:
    reply = shared.client().generate(model=GEN, prompt=PROMPT, format=schema)
    jsonschema.validate(json.loads(reply.response), schema, format_checker=jsonschema.FormatChecker())


@pytest.mark.parametrize("schema", [{"type": "text"}, {"title": "no type"}, {"properties": {"a": "string"}},
                                    {"type": "string", "pattern": "[0-9]+"}, {"$ref": "#/$defs/Missing"}])
def test_invalid_schema_fails_like_upstream(shared: Server, schema: dict[str, Any]) -> None:
    client = shared.client()
    for stream in (False, True):
        with pytest.raises(ollama.ResponseError) as err:
            reply = client.generate(model=GEN, prompt=PROMPT, format=schema, stream=stream)
            if stream:
                list(reply)
        assert (err.value.status_code, err.value.error) == (500, "invalid JSON schema in format")


def test_format_neither_json_nor_schema_fails_like_upstream(shared: Server) -> None:
    resp = post(shared, "/api/chat", {"model": GEN, "messages": chat_messages("x"), "format": "xml",
                                      "stream": False})
    assert resp.status_code == 500
    assert resp.json() == {"error": 'invalid format: "\\"xml\\""; expected "json" or a valid JSON Schema object'}


# ---------------------------------------------------------------- num_ctx
def filler(n: int) -> str:
    return " ".join(f"w{i}" for i in range(n))


def words(text: str) -> int:
    """The stand-in's token count for ASCII text."""
    return len(re.findall(r"\w+", text))


def test_default_num_ctx_follows_the_impersonated_release() -> None:
    sys.path.insert(0, str(STANDIN))
    from ollama_standin.options import default_num_ctx

    assert default_num_ctx("0.14.2", {}) == 4096
    assert default_num_ctx("0.6.6", {}) == 2048
    assert default_num_ctx("0.14.2", {"OLLAMA_CONTEXT_LENGTH": "8192"}) == 8192


def test_generate_keeps_num_keep_and_the_end_of_a_long_prompt(shared: Server) -> None:
    client = shared.client()
    customers, orders = SCHEMA.split("\n")
    prompt = f"{filler(10)}\n{customers}\n{filler(50)}\n{orders}\nQuestion: how many rows"
    full = client.generate(model=GEN, prompt=prompt)
    assert full.response.endswith("FROM customers;")  # both tables seen; the first wins a tie
    cut = client.generate(model=GEN, prompt=prompt, options={"num_ctx": 40})
    assert cut.prompt_eval_count == 40 and full.prompt_eval_count > 40
    assert cut.response.endswith("SELECT COUNT(*) FROM orders;")  # the customers table fell out


def test_default_window_is_4096_tokens(shared: Server) -> None:
    reply = shared.client().generate(model=GEN, prompt=filler(5000), options={"num_predict": 1})
    assert reply.prompt_eval_count == 4096


def test_chat_drops_oldest_turns_but_keeps_system_and_latest(shared: Server) -> None:
    system, question = chat_messages("how many customers")
    history = [system, {"role": "user", "content": filler(100)}, {"role": "assistant", "content": "ok"}, question]
    reply = shared.client().chat(model=GEN, messages=history, options={"num_ctx": 60})
    kept = words(system["content"]) + words("ok") + words(question["content"])
    assert reply.prompt_eval_count == kept <= 60  # the 100-word turn went, the newer "ok" stayed
    assert reply.message.content.endswith("SELECT COUNT(*) FROM customers;")
    whole = shared.client().chat(model=GEN, messages=history)
    assert whole.prompt_eval_count == kept + 100


def test_chat_whose_system_and_question_overflow_loses_the_system_message(shared: Server) -> None:
    # Upstream's chatPrompt only keeps system messages *before* the oldest turn it tried;
    # with [system, user] too long it sends the user turn alone. QueryGPT sends exactly that shape.
    system, question = chat_messages("how many customers")
    reply = shared.client().chat(model=GEN, messages=[system, question], options={"num_ctx": 10})
    assert "no table definitions" in reply.message.content
    assert reply.prompt_eval_count == words(question["content"])


def test_truncate_false_refuses_an_overlong_chat(shared: Server) -> None:
    resp = post(shared, "/api/chat", {"model": GEN, "messages": [{"role": "user", "content": filler(50)}],
                                      "options": {"num_ctx": 10}, "truncate": False, "stream": False})
    assert (resp.status_code, resp.json()) == (400, {"error": "the input length exceeds the context length"})


def test_ps_reports_the_runner_window(shared: Server) -> None:
    client = shared.client()
    client.generate(model=GEN, prompt="x", options={"num_ctx": 2048})
    assert {m.model: m.context_length for m in client.ps().models}[GEN] == 2048
    client.generate(model=GEN, prompt="x", options={"num_ctx": 1_000_000})  # clamped to the trained 32768
    assert {m.model: m.context_length for m in client.ps().models}[GEN] == 32768
    client.generate(model=GEN, prompt="x")
    assert {m.model: m.context_length for m in client.ps().models}[GEN] == 4096


def test_embed_truncates_to_the_window_unless_told_not_to(shared: Server) -> None:
    client = shared.client()
    long_text = filler(600)  # all-minilm's window is its trained 512 tokens
    cut = client.embed(model="all-minilm", input=long_text)
    assert cut.prompt_eval_count == 512
    assert cut.embeddings == client.embed(model="all-minilm", input=filler(512)).embeddings
    small = client.embed(model="all-minilm", input=long_text, options={"num_ctx": 8})
    assert small.prompt_eval_count == 8
    with pytest.raises(ollama.ResponseError) as err:
        client.embed(model="all-minilm", input=["short", long_text], truncate=False)
    assert (err.value.status_code, err.value.error) == (400, "the input length exceeds the context length")
    with pytest.raises(ollama.ResponseError) as err:
        client.embeddings(model="all-minilm", prompt=long_text)  # the legacy endpoint never truncates
    assert (err.value.status_code, err.value.error) == (500, "the input length exceeds the context length")


# ---------------------------------------------------------------- request bodies and keep-alive
def test_copy_then_show_on_one_client(shared: Server) -> None:
    client = shared.client()
    with pytest.raises(ollama.ResponseError) as err:
        client.copy(GEN, "my-copy")  # the stand-in has no /api/copy: a 404 that ignores the body
    assert err.value.status_code == 404
    assert client.show(GEN).capabilities == ["completion"]


def read_response(reader: Any) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 response from a socket file (Content-Length or chunked)."""
    status = int(reader.readline().split()[1])
    headers: dict[str, str] = {}
    while (line := reader.readline()) not in (b"\r\n", b""):
        key, _, value = line.decode().partition(":")
        headers[key.strip().lower()] = value.strip()
    if headers.get("transfer-encoding") == "chunked":
        body = b""
        while size := int(reader.readline().strip(), 16):
            body += reader.read(size)
            reader.readline()
        reader.readline()
        return status, headers, body
    return status, headers, reader.read(int(headers.get("content-length", 0)))


def chunked(data: bytes) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in (data[:5], data[5:])) + b"0\r\n\r\n"


BODY = json.dumps({"source": GEN, "destination": "my-copy"}).encode()


@pytest.mark.parametrize(
    ("first", "status"),
    [
        (b"POST /api/copy HTTP/1.1\r\nHost: localhost\r\nContent-Length: %d\r\n\r\n%s" % (len(BODY), BODY), 404),
        (b"POST /api/version HTTP/1.1\r\nHost: localhost\r\nContent-Length: %d\r\n\r\n%s" % (len(BODY), BODY), 405),
        (b"POST /api/show HTTP/1.1\r\nHost: evil.example\r\nContent-Length: %d\r\n\r\n%s" % (len(BODY), BODY), 403),
        (b"POST /api/copy HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked(BODY), 404),
        (b"POST /api/show HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked(BODY), 400),
        (b"GET /api/tags HTTP/1.1\r\nHost: localhost\r\nContent-Length: %d\r\n\r\n%s" % (len(BODY), BODY), 200),
    ],
    ids=["404", "405", "403", "404-chunked", "handler-chunked", "get-with-body"],
)
def test_kept_alive_connection_survives_any_answer(shared: Server, first: bytes, status: int) -> None:
    with socket.create_connection(("127.0.0.1", shared.port), timeout=5) as sock:
        reader = sock.makefile("rb")
        sock.sendall(first)
        assert read_response(reader)[0] == status
        sock.sendall(b"GET /api/version HTTP/1.1\r\nHost: localhost\r\n\r\n")
        code, _, body = read_response(reader)
        assert (code, json.loads(body)) == (200, {"version": "0.14.2"})


def test_body_too_large_to_discard_closes_the_connection(shared: Server) -> None:
    with socket.create_connection(("127.0.0.1", shared.port), timeout=5) as sock:
        reader = sock.makefile("rb")
        sock.sendall(b"POST /api/copy HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1048576\r\n\r\n")
        code, headers, _ = read_response(reader)
        assert (code, headers.get("connection")) == (404, "close")
        assert reader.read() == b""  # closed instead of parsing the body as requests


def test_malformed_chunked_body_is_refused_and_closes(shared: Server) -> None:
    with socket.create_connection(("127.0.0.1", shared.port), timeout=5) as sock:
        reader = sock.makefile("rb")
        sock.sendall(b"POST /api/show HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n")
        code, headers, body = read_response(reader)
        assert (code, headers.get("connection")) == (400, "close")
        assert json.loads(body) == {"error": "malformed chunked request body"}
        assert reader.read() == b""  # not left waiting for a body it can no longer frame
