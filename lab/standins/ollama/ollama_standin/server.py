"""Lab test fixture: the HTTP server behind `ollama serve` (stdlib http.server).

Routes, JSON shapes, status codes and error strings follow upstream's
server/routes.go and docs/api.md closely enough for the official clients and
the ollama Ansible role. Every response carries `X-Lab-Standin: true` so a
probe can tell the fixture from real Ollama without breaking clients that
parse /api/version. Answers take about as long as a small model's on a GPU
(pacing.py); each request sleeps in its own thread, holding no lock, so
concurrent requests overlap.
"""

from __future__ import annotations

import hashlib
import json
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from ollama_standin import embedding, sqlgen, structured, window
from ollama_standin.config import Settings, parse_duration
from ollama_standin.decoding import Outcome, decode, effective_num_predict
from ollama_standin.hostcheck import local_addresses, request_allowed
from ollama_standin.httpbody import BodyError, RequestBody
from ollama_standin.names import InvalidName, parse_name
from ollama_standin.options import OptionError, Options, parse_options
from ollama_standin.pacing import Pacer
from ollama_standin.runtime import Runtime, rfc3339
from ollama_standin.store import LocalModel, Store, StoreError
from ollama_standin.version import MARKER, VERSION

STANDIN_HEADER = ("X-Lab-Standin", "true")


class ApiError(Exception):
    """An error answered as {"error": message} with an HTTP status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class StandinServer(ThreadingHTTPServer):
    """Shared state for all request threads."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store = Store(settings.models_dir)
        self.runtime = Runtime()
        self.hostname = socket.gethostname()
        self.local_ips = local_addresses()
        bind = settings.bind
        family = socket.AF_INET6 if ":" in bind.host else socket.AF_INET
        self.address_family = family
        super().__init__((bind.host, bind.port), Handler)


def _ns(start: int) -> int:
    return max(time.perf_counter_ns() - start, 1)


def _token_ids(texts: Iterable[str]) -> list[int]:
    """A deterministic stand-in for upstream's `context` token array."""
    return [
        int.from_bytes(hashlib.blake2b(t.encode(), digest_size=4).digest(), "little") % 151936
        for text in texts
        for t in embedding.tokens(text)
    ]


class Handler(BaseHTTPRequestHandler):
    """One request; routing table in ROUTES."""

    server: StandinServer
    protocol_version = "HTTP/1.1"
    server_version = "ollama-lab-standin"

    # ---- plumbing -----------------------------------------------------
    def log_message(self, format: str, *args: Any) -> None:
        sys.stderr.write(f"[ollama-standin] {self.address_string()} {format % args}\n")

    def _start(self, status: int, content_type: str, length: int | None) -> None:
        # Before any answer, leave the connection where the next request starts (httpbody.py).
        settled = self._request_body.settle()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header(*STANDIN_HEADER)
        if not settled:
            self.send_header("Connection", "close")  # also sets close_connection
        self._started = True
        if length is None:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Content-Length", str(length))
        self.end_headers()

    def _send_bytes(self, status: int, body: bytes, content_type: str) -> None:
        self._start(status, content_type, len(body))
        if self.command != "HEAD":
            self.wfile.write(body)

    def send_json(self, status: int, payload: Any) -> None:
        self._send_bytes(status, json.dumps(payload).encode(), "application/json; charset=utf-8")

    def _body(self) -> dict[str, Any]:
        try:
            raw = self._request_body.read()
        except BodyError as exc:
            self.close_connection = True
            raise ApiError(400, str(exc)) from None
        if not raw.strip():
            raise ApiError(400, "missing request body")
        try:
            value = json.loads(raw)
        except ValueError as exc:
            raise ApiError(400, str(exc)) from None
        if not isinstance(value, dict):
            raise ApiError(400, "json: cannot unmarshal into request object")
        return value

    def _stream(self, produce: Callable[[Callable[[dict[str, Any]], None]], None]) -> None:
        """NDJSON over chunked encoding; an error before any output becomes a plain 500 JSON."""
        started = False

        def emit(obj: dict[str, Any]) -> None:
            nonlocal started
            if not started:
                self._start(200, "application/x-ndjson", None)
                started = True
            line = json.dumps(obj).encode() + b"\n"
            self.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))
            self.wfile.flush()

        try:
            produce(emit)
        except ApiError as exc:
            if not started:
                raise
            emit({"error": exc.message})
        if started:
            self.wfile.write(b"0\r\n\r\n")

    def _dispatch(self) -> None:
        self._started = False
        try:
            self._request_body = RequestBody(self.rfile, self.headers)
        except BodyError:
            self._request_body = RequestBody(self.rfile, {})  # type: ignore[arg-type]
            self._send_bytes(400, b"400 Bad Request", "text/plain; charset=utf-8")
            self.close_connection = True
            return
        try:
            self._route()
        except Exception as exc:  # noqa: BLE001 (a stand-in bug must still answer, then close)
            self.log_message("internal error: %r", exc)
            if not self._started:
                self.send_json(500, {"error": f"{MARKER}: internal error: {exc}"})
            self.close_connection = True

    def _route(self) -> None:
        host_header = self.headers.get("Host", "")
        bound = str(self.server.server_address[0])
        if not request_allowed(bound, host_header, self.server.hostname, self.server.local_ips):
            self._send_bytes(403, b"", "text/plain; charset=utf-8")
            return
        if self.command == "OPTIONS":
            self._send_bytes(204, b"", "text/plain; charset=utf-8")
            return
        path = self.path.split("?", 1)[0]
        methods = ROUTES.get(path)
        if methods is None:
            self._send_bytes(404, b"404 page not found", "text/plain")
            return
        handler = methods.get(self.command)
        if handler is None:
            self._send_bytes(405, b"405 method not allowed", "text/plain")
            return
        try:
            handler(self)
        except ApiError as exc:
            self.send_json(exc.status, {"error": exc.message})

    do_GET = do_HEAD = do_POST = do_DELETE = do_OPTIONS = _dispatch

    # ---- helpers ------------------------------------------------------
    def _model(self, body: dict[str, Any], missing: str, kind_needed: str | None, verb: str) -> LocalModel:
        """Resolve body's model to a pulled model, with upstream's per-endpoint errors."""
        requested = str(body.get("model") or body.get("name") or "")
        if not requested:
            raise ApiError(400, "model is required")
        try:
            name = parse_name(requested)
        except InvalidName:
            raise ApiError(400, "invalid model name") from None
        model = self.server.store.get(name)
        if model is None:
            raise ApiError(404, missing.format(requested))
        if kind_needed == "generation" and model.kind != "generation":
            raise ApiError(400, f'"{requested}" does not support {verb}')
        if kind_needed == "embedding" and model.kind != "embedding":
            # Upstream passes llama-server's 501 through for non-embedding models.
            raise ApiError(501, f'"{requested}" does not support embeddings')
        return model

    def _keep_alive(self, body: dict[str, Any]) -> float:
        return parse_duration(body.get("keep_alive"), self.server.settings.keep_alive)

    # ---- general ------------------------------------------------------
    def root(self) -> None:
        self._send_bytes(200, b"Ollama is running", "text/plain; charset=utf-8")

    def version(self) -> None:
        self.send_json(200, {"version": VERSION})

    # ---- model management -------------------------------------------
    def tags(self) -> None:
        self.send_json(
            200,
            {
                "models": [
                    {
                        "name": m.name.display,
                        "model": m.name.display,
                        "modified_at": rfc3339(m.modified_at.timestamp()),
                        "size": m.size,
                        "digest": m.digest,
                        "details": m.details(),
                    }
                    for m in self.server.store.list()
                ]
            },
        )

    def ps(self) -> None:
        self.send_json(
            200,
            {
                "models": [
                    {
                        "name": e.model.name.display,
                        "model": e.model.name.display,
                        "size": e.model.size,
                        "digest": e.model.digest,
                        "details": e.model.details(),
                        "expires_at": rfc3339(e.expires_at),
                        "size_vram": 0,
                        # upstream reports the loaded runner's num_ctx, not the trained length
                        "context_length": e.num_ctx or int(e.model.spec.get("context_length", 0)),
                    }
                    for e in self.server.runtime.running()
                ]
            },
        )

    def show(self) -> None:
        body = self._body()
        requested = str(body.get("model") or body.get("name") or "")
        model = self._model(body, "model '{}' not found", None, "")
        family = model.details()["family"]
        info: dict[str, Any] = {
            "general.architecture": family,
            "general.basename": model.name.model,
            "general.description": sqlgen.LABEL.lstrip("- "),
            f"{family}.context_length": model.spec.get("context_length"),
            f"{family}.embedding_length": model.spec.get("embedding_length"),
        }
        if model.kind == "embedding":
            info[f"{family}.pooling_type"] = 1
        self.send_json(
            200,
            {
                "license": f"{MARKER}: no model weights, no license terms",
                "modelfile": f'# Modelfile generated by "ollama show" ({MARKER})\nFROM {requested}\n',
                "parameters": "",
                "template": model.template or "{{ .Prompt }}",
                "details": model.details(),
                "model_info": info,
                "capabilities": model.capabilities,
                "modified_at": rfc3339(model.modified_at.timestamp()),
            },
        )

    def delete(self) -> None:
        body = self._body()
        requested = str(body.get("model") or body.get("name") or "")
        try:
            name = parse_name(requested)
        except InvalidName:
            raise ApiError(400, f'name "{requested}" is invalid') from None
        if not self.server.store.delete(name):
            raise ApiError(404, f"model '{requested}' not found")
        self.server.runtime.unload(name.display)
        self._send_bytes(200, b"", "text/plain; charset=utf-8")

    def pull(self) -> None:
        body = self._body()
        requested = str(body.get("model") or body.get("name") or "")
        try:
            name = parse_name(requested)
        except InvalidName:
            raise ApiError(400, "invalid model name") from None

        def produce(emit: Callable[[dict[str, Any]], None]) -> None:
            try:
                self.server.store.pull(name, self.server.settings.mirror_dir, emit)
            except StoreError as exc:
                raise ApiError(500, str(exc)) from None

        if body.get("stream", True) is False:
            latest: dict[str, Any] = {}
            produce(latest.update)
            self.send_json(200, {"status": latest.get("status", "success")})
            return
        self._stream(produce)

    # ---- inference ----------------------------------------------------
    def _options(self, body: dict[str, Any]) -> Options:
        try:
            return parse_options(body.get("options"), self.server.settings.context_length)
        except OptionError as exc:
            raise ApiError(exc.status, exc.message) from None

    @staticmethod
    def _runner_ctx(model: LocalModel, options: Options) -> int:
        return window.runner_num_ctx(options.num_ctx, int(model.spec.get("context_length", 0)))

    def embed(self) -> None:
        start = time.perf_counter_ns()
        body = self._body()
        raw = body.get("input")
        if isinstance(raw, str):
            inputs = [raw] if raw else []
        elif isinstance(raw, list) and all(isinstance(item, str) for item in raw):
            inputs = list(raw)
        elif raw is None:
            inputs = []
        else:
            raise ApiError(400, "invalid input type")
        model = self._model(body, 'model "{}" not found, try pulling it first', "embedding", "embed")
        num_ctx = self._runner_ctx(model, self._options(body))
        load_start = time.perf_counter_ns()
        loaded = self.server.runtime.touch(model, self._keep_alive(body), num_ctx)
        load_ns = _ns(load_start) if loaded else 0
        # Upstream cuts an input that does not fit the window unless the request says truncate: false.
        cut = [window.head(text, num_ctx) for text in inputs]
        if body.get("truncate") is False and any(c.truncated for c in cut):
            raise ApiError(400, window.TOO_LONG)
        dim = int(model.spec["embedding_length"])
        wanted = int(body.get("dimensions") or 0)
        pacer = Pacer(self.server.settings.embed_seconds)
        vectors: list[list[float]] = []
        for c in cut:
            vectors.append(embedding.embed(c.text, dim, model.name.model))
            pacer.step()
        if 0 < wanted < dim:
            vectors = [embedding.renormalise(v[:wanted]) for v in vectors]
        self.send_json(
            200,
            {
                "model": str(body.get("model") or body.get("name")),
                "embeddings": vectors,
                "total_duration": _ns(start),
                "load_duration": load_ns,
                "prompt_eval_count": sum(c.tokens for c in cut),
            },
        )

    def embeddings(self) -> None:
        body = self._body()
        model = self._model(body, 'model "{}" not found, try pulling it first', "embedding", "embed")
        num_ctx = self._runner_ctx(model, self._options(body))
        self.server.runtime.touch(model, self._keep_alive(body), num_ctx)
        prompt = str(body.get("prompt") or "")
        if window.head(prompt, num_ctx).truncated:
            raise ApiError(500, window.TOO_LONG)  # the legacy endpoint never truncates
        vector: list[float] = []
        if prompt:
            pacer = Pacer(self.server.settings.embed_seconds)
            vector = embedding.embed(prompt, int(model.spec["embedding_length"]), model.name.model)
            pacer.step()
        self.send_json(200, {"embedding": vector})

    def _complete(self, body: dict[str, Any], verb: str, messages: list[window.Message], select: bool) -> None:
        """Shared generate/chat flow: load/unload requests, the context window, then the answer.

        messages is the conversation as the template would see it; select says whether
        upstream's chatPrompt chooses among them (raw generate requests skip it).
        """
        start = time.perf_counter_ns()
        model = self._model(body, "model '{}' not found", "generation", verb)
        options = self._options(body)
        num_ctx = self._runner_ctx(model, options)
        keep_alive = self._keep_alive(body)
        loaded = self.server.runtime.touch(model, keep_alive, num_ctx)
        load_ns = _ns(start) if loaded else 0
        prompt_pacer = Pacer(self.server.settings.prompt_token_seconds)
        is_chat = verb == "chat"
        label = str(body.get("model") or body.get("name"))

        def frame(text: str, done: bool) -> dict[str, Any]:
            out: dict[str, Any] = {"model": label, "created_at": rfc3339(time.time())}
            if is_chat:
                out["message"] = {"role": "assistant", "content": text}
            else:
                out["response"] = text
            out["done"] = done
            return out

        if not messages:
            final = frame("", True)
            final["done_reason"] = "unload" if keep_alive <= 0 else "load"
            self.send_json(200, final)
            return

        try:
            fmt = structured.parse_format(body.get("format"))
        except structured.FormatError as exc:
            raise ApiError(500, str(exc)) from None

        truncate = body.get("truncate") is not False
        # chatPrompt picks messages against the requested num_ctx; the runner then cuts the
        # prompt to its own (clamped) window, or refuses it when truncation is off.
        kept = window.select_messages(messages, options.num_ctx) if select and truncate else messages
        prompt = window.truncate_prompt(window.render(kept), num_ctx, options.num_keep)
        if prompt.truncated and not truncate:
            raise ApiError(400, window.TOO_LONG)
        prompt_pacer.step(prompt.tokens)  # prompt evaluation: what the runner was given

        users = [m.content for m in kept if m.role == "user"]
        question = sqlgen.question_of(users[-1] if users else prompt.text)
        if isinstance(fmt, dict):
            text = structured.render(fmt, sqlgen.build_sql(prompt.text, question), sqlgen.LABEL.lstrip("- "))
        else:
            text = sqlgen.answer(prompt.text, question, json_format=fmt == "json")
        num_predict = effective_num_predict(options.num_predict, num_ctx)
        outcome = Outcome()
        eval_start = time.perf_counter_ns()
        # Lazy: each token's time passes as it is produced, between streamed chunks.
        pacer = Pacer(self.server.settings.token_seconds)
        chunks = decode(sqlgen.chunks(text), num_predict, options.stop, outcome, pacer.step)

        def stats(final: dict[str, Any]) -> dict[str, Any]:
            end = time.perf_counter_ns()  # one reading, so the parts add up to total_duration
            final["done_reason"] = outcome.done_reason
            if not is_chat:
                final["context"] = _token_ids([window.render(messages), "".join(outcome.text)])
            final.update(
                total_duration=max(end - start, 1),
                load_duration=load_ns,
                prompt_eval_count=prompt.tokens,
                prompt_eval_duration=max(eval_start - start - load_ns, 1),
                eval_count=outcome.eval_count,
                eval_duration=max(end - eval_start, 1),
            )
            return final

        if body.get("stream", True) is False:
            whole = "".join(chunks)
            self.send_json(200, stats(frame(whole, True)))
            return

        def produce(emit: Callable[[dict[str, Any]], None]) -> None:
            for chunk in chunks:
                emit(frame(chunk, False))
            emit(stats(frame("", True)))

        self._stream(produce)

    def generate(self) -> None:
        body = self._body()
        prompt = str(body.get("prompt") or "")
        system = str(body.get("system") or "")
        messages = [window.Message("user", prompt)] if prompt else []
        raw = body.get("raw") is True
        if system and messages and not raw:
            messages.insert(0, window.Message("system", system))
        self._complete(body, "generate", messages, select=not raw)

    def chat(self) -> None:
        body = self._body()
        messages = body.get("messages") or []
        if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
            raise ApiError(400, "invalid messages")
        turns = [window.Message(str(m.get("role") or ""), str(m.get("content") or "")) for m in messages]
        self._complete(body, "chat", turns, select=True)


ROUTES: dict[str, dict[str, Callable[[Handler], None]]] = {
    "/": {"GET": Handler.root, "HEAD": Handler.root},
    "/api/version": {"GET": Handler.version, "HEAD": Handler.version},
    "/api/tags": {"GET": Handler.tags, "HEAD": Handler.tags},
    "/api/ps": {"GET": Handler.ps},
    "/api/show": {"POST": Handler.show},
    "/api/delete": {"DELETE": Handler.delete},
    "/api/pull": {"POST": Handler.pull},
    "/api/embed": {"POST": Handler.embed},
    "/api/embeddings": {"POST": Handler.embeddings},
    "/api/generate": {"POST": Handler.generate},
    "/api/chat": {"POST": Handler.chat},
}


def _interrupt(signum: int, frame: object) -> None:
    """systemd stops services with SIGTERM: leave serve_forever cleanly."""
    raise KeyboardInterrupt


def serve(settings: Settings) -> int:
    """Run until interrupted; logs the effective configuration like upstream's "server config"."""
    server = StandinServer(settings)
    env = {
        "OLLAMA_HOST": f"{settings.bind.host}:{settings.bind.port}",
        "OLLAMA_MODELS": str(settings.models_dir),
        "OLLAMA_KEEP_ALIVE": f"{settings.keep_alive:g}s",
        "OLLAMA_CONTEXT_LENGTH": str(settings.context_length),
        "OLLAMA_STANDIN_MIRROR": str(settings.mirror_dir or ""),
        "OLLAMA_STANDIN_TOKEN_SECONDS": f"{settings.token_seconds:g}",
        "OLLAMA_STANDIN_PROMPT_TOKEN_SECONDS": f"{settings.prompt_token_seconds:g}",
        "OLLAMA_STANDIN_EMBED_SECONDS": f"{settings.embed_seconds:g}",
        **settings.recorded,
    }
    host, port = str(server.server_address[0]), server.server_address[1]
    sys.stderr.write(f"[ollama-standin] server config env={env}\n")
    sys.stderr.write(f"[ollama-standin] Listening on {host}:{port} (version {VERSION}, {MARKER})\n")
    sys.stderr.flush()
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0
