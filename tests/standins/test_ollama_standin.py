"""Tests for the Ollama LAB STAND-IN (a test fixture, not Ollama) in lab/standins/ollama.

The stand-in is driven with the official `ollama` Python client so the shapes
it returns are the ones real clients accept; raw `requests` calls check the
JSON keys against upstream's docs/api.md. Servers run as subprocesses bound to
127.0.0.1 on free ports; nothing leaves the machine.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import ollama
import pytest
import requests

ROOT = Path(__file__).resolve().parents[2]
STANDIN = ROOT / "lab" / "standins" / "ollama"
sys.path.insert(0, str(STANDIN))

from ollama_standin.config import parse_host  # noqa: E402
from ollama_standin.hostcheck import request_allowed  # noqa: E402

DIMS = {"all-minilm:latest": 384, "all-minilm:l6-v2": 384, "nomic-embed-text:latest": 768,
        "mxbai-embed-large:latest": 1024}
GEN = "qwen2.5-coder:1.5b"
LABEL = "-- QueryGPT lab stand-in (not an LLM)"
SCHEMA = (
    "CREATE TABLE customers (id INT PRIMARY KEY, name TEXT, email TEXT);\n"
    "CREATE TABLE orders (order_id INT, customer_id INT REFERENCES customers(id), total NUMERIC(10,2));"
)
NO_PROXY = {"http": None, "https": None}
# The stand-in's pacing off (it would make every answer take a GPU's time): these tests check
# what it answers; test_ollama_timing.py checks how long it takes.
NO_PACING = {"OLLAMA_STANDIN_TOKEN_SECONDS": "0", "OLLAMA_STANDIN_PROMPT_TOKEN_SECONDS": "0",
             "OLLAMA_STANDIN_EMBED_SECONDS": "0"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def base_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OLLAMA_") and "proxy" not in k.lower()}
    env["PYTHONPATH"] = str(STANDIN)
    env.update(NO_PACING)
    return env


@dataclass
class Server:
    url: str
    port: int
    models: Path
    proc: subprocess.Popen

    def client(self) -> ollama.Client:
        return ollama.Client(host=self.url, trust_env=False)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)


def start_server(
    models: Path,
    mirror: Path,
    argv0: list[str] | None = None,
    host_value: str | None = None,
    extra_env: dict[str, str] | None = None,
) -> Server:
    port = free_port()
    env = base_env()
    env.update(
        OLLAMA_HOST=host_value or f"127.0.0.1:{port}",
        OLLAMA_MODELS=str(models),
        OLLAMA_STANDIN_MIRROR=str(mirror),
        OLLAMA_KEEP_ALIVE="5m",
        OLLAMA_NUM_PARALLEL="1",
        OLLAMA_MAX_LOADED_MODELS="2",
        OLLAMA_MAX_QUEUE="16",
    )
    env.update(extra_env or {})
    if host_value:
        port = parse_host(host_value).port
    if argv0:
        env.pop("PYTHONPATH")  # the packaged zipapp must run on its own
    cmd = (argv0 or [sys.executable, "-m", "ollama_standin"]) + ["serve"]
    with open(models.parent / f"serve-{port}.log", "wb") as log:  # the child keeps its own handle
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            if requests.get(url + "/", timeout=1, proxies=NO_PROXY).status_code == 200:
                return Server(url, port, models, proc)
        except requests.ConnectionError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError((models.parent / f"serve-{port}.log").read_text())


@pytest.fixture(scope="module")
def mirror(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("mirror")
    subprocess.run(
        [sys.executable, str(STANDIN / "make_mirror.py"), "--out", str(out)], check=True, capture_output=True
    )
    return out


@pytest.fixture
def fresh(tmp_path: Path, mirror: Path) -> Iterator[Server]:
    """A server with an empty models dir, for tests that mutate state."""
    server = start_server(tmp_path / "models", mirror)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory, mirror: Path) -> Iterator[Server]:
    """One server with every mirror model pulled (non-streaming)."""
    server = start_server(tmp_path_factory.mktemp("shared") / "models", mirror)
    client = server.client()
    for name in [*DIMS, GEN]:
        assert client.pull(name, stream=False).status == "success"
    yield server
    server.stop()


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


def manifest_bytes(root: Path, name: str, tag: str) -> bytes:
    return (root / "manifests" / "registry.ollama.ai" / "library" / name / tag).read_bytes()


# ---------------------------------------------------------------- basics
def test_root_version_and_marker(shared: Server) -> None:
    root = requests.get(shared.url + "/", proxies=NO_PROXY)
    assert root.text == "Ollama is running"
    assert root.headers["X-Lab-Standin"] == "true"
    assert requests.head(shared.url + "/", proxies=NO_PROXY).status_code == 200
    version = requests.get(shared.url + "/api/version", proxies=NO_PROXY)
    assert version.json() == {"version": "0.14.2"}
    assert version.headers["X-Lab-Standin"] == "true"


def test_request_errors_like_upstream(shared: Server) -> None:
    assert requests.get(shared.url + "/api/nope", proxies=NO_PROXY).status_code == 404
    assert requests.get(shared.url + "/api/pull", proxies=NO_PROXY).status_code == 405
    missing = requests.post(shared.url + "/api/embed", proxies=NO_PROXY)
    assert (missing.status_code, missing.json()) == (400, {"error": "missing request body"})


# ---------------------------------------------------------------- pull / list / show / delete
def test_pull_streams_upstream_statuses_and_verifies_blobs(fresh: Server, mirror: Path) -> None:
    progress = list(fresh.client().pull("all-minilm", stream=True))
    statuses = [p.status for p in progress]
    assert statuses[0] == "pulling manifest"
    assert statuses[-3:] == ["verifying sha256 digest", "writing manifest", "success"]
    layers = [p for p in progress if p.digest]
    manifest = json.loads(manifest_bytes(mirror, "all-minilm", "latest"))
    expected = {layer["digest"] for layer in manifest["layers"]} | {manifest["config"]["digest"]}
    assert {p.digest for p in layers} == expected
    for p in layers:
        assert p.status == f"pulling {p.digest[7:19]}" and p.total
    assert any(p.completed == p.total for p in layers)
    for digest in expected:
        blob = fresh.models / "blobs" / digest.replace(":", "-")
        assert "sha256:" + hashlib.sha256(blob.read_bytes()).hexdigest() == digest
    assert manifest_bytes(fresh.models, "all-minilm", "latest") == manifest_bytes(
        mirror, "all-minilm", "latest"
    )


def test_list_reports_manifest_digest_and_details(shared: Server, mirror: Path) -> None:
    raw = requests.get(shared.url + "/api/tags", proxies=NO_PROXY).json()["models"]
    by_name = {m["name"]: m for m in raw}
    assert set(by_name) == {*DIMS, GEN}
    for entry in raw:
        assert set(entry) == {"name", "model", "modified_at", "size", "digest", "details"}
        assert set(entry["details"]) >= {"format", "family", "parameter_size", "quantization_level"}
    qwen = by_name[GEN]
    assert qwen["digest"] == hashlib.sha256(manifest_bytes(mirror, "qwen2.5-coder", "1.5b")).hexdigest()
    assert qwen["details"]["family"] == "qwen2" and qwen["details"]["parameter_size"] == "1.5B"
    listed = shared.client().list()
    assert {m.model for m in listed.models} == {*DIMS, GEN}


def test_show(shared: Server) -> None:
    client = shared.client()
    info = client.show("nomic-embed-text")
    assert info.capabilities == ["embedding"]
    assert info.details.family == "nomic-bert"
    assert info.modelinfo["nomic-bert.embedding_length"] == 768
    assert client.show(GEN).capabilities == ["completion"]
    with pytest.raises(ollama.ResponseError) as err:
        client.show("llama3")
    assert (err.value.status_code, err.value.error) == (404, "model 'llama3' not found")


def test_delete_prunes_blobs_and_404s_when_missing(fresh: Server) -> None:
    client = fresh.client()
    client.pull("all-minilm", stream=False)
    client.pull("mxbai-embed-large", stream=False)
    assert client.delete("all-minilm").status == "success"
    assert [m.model for m in client.list().models] == ["mxbai-embed-large:latest"]
    still_used = json.loads(manifest_bytes(fresh.models, "mxbai-embed-large", "latest"))
    used = {layer["digest"] for layer in still_used["layers"]} | {still_used["config"]["digest"]}
    on_disk = {p.name.replace("-", ":", 1) for p in (fresh.models / "blobs").iterdir()}
    assert on_disk == used
    with pytest.raises(ollama.ResponseError) as err:
        client.delete("all-minilm")
    assert (err.value.status_code, err.value.error) == (404, "model 'all-minilm' not found")


def test_unknown_model_pull_fails_like_upstream(fresh: Server) -> None:
    client = fresh.client()
    with pytest.raises(ollama.ResponseError) as err:
        client.pull("no-such-model", stream=False)
    assert (err.value.status_code, err.value.error) == (500, "pull model manifest: file does not exist")
    with pytest.raises(ollama.ResponseError) as err:
        list(client.pull("no-such-model", stream=True))
    assert err.value.error == "pull model manifest: file does not exist"


def test_corrupt_mirror_blob_fails_digest_check(fresh: Server, mirror: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad-mirror"
    shutil.copytree(mirror, bad)
    manifest = json.loads(manifest_bytes(bad, "all-minilm", "latest"))
    digest = manifest["layers"][0]["digest"]
    blob = bad / "blobs" / digest.replace(":", "-")
    blob.write_bytes(blob.read_bytes().replace(b"384", b"999"))
    fresh.stop()
    server = start_server(fresh.models, bad)
    try:
        with pytest.raises(ollama.ResponseError) as err:
            server.client().pull("all-minilm", stream=False)
        assert err.value.status_code == 500
        assert err.value.error.startswith(
            f"digest mismatch, file must be downloaded again: want {digest}, got sha256:"
        )
        assert server.client().list().models == []
        assert not any((fresh.models / "blobs").iterdir())
    finally:
        server.stop()


def test_models_persist_across_restart(fresh: Server, mirror: Path) -> None:
    fresh.client().pull("all-minilm", stream=False)
    before = fresh.client().list().models[0].digest
    fresh.stop()
    port = free_port()
    again = start_server(fresh.models, mirror, host_value=f"http://127.0.0.1:{port}")
    try:
        after = again.client().list().models
        assert [(m.model, m.digest) for m in after] == [("all-minilm:latest", before)]
        assert len(again.client().embed(model="all-minilm", input="still here").embeddings[0]) == 384
    finally:
        again.stop()


# ---------------------------------------------------------------- embeddings
def test_embed_dimensions_normalised_and_deterministic(shared: Server) -> None:
    client = shared.client()
    for name, dim in DIMS.items():
        first = client.embed(model=name, input="orders table customer id").embeddings[0]
        second = client.embed(model=name, input="orders table customer id").embeddings[0]
        assert len(first) == dim
        assert math.isclose(math.sqrt(sum(v * v for v in first)), 1.0, rel_tol=1e-9)
        assert first == second


def test_embed_preserves_lexical_similarity(shared: Server) -> None:
    query, near, far = (
        shared.client()
        .embed(model="all-minilm", input=["orders table customer id", "customer orders", "weather forecast"])
        .embeddings
    )
    assert cosine(query, near) > cosine(query, far) + 0.3


def test_embed_response_shape(shared: Server) -> None:
    body = requests.post(
        shared.url + "/api/embed", json={"model": "all-minilm", "input": ["a b", "c"]}, proxies=NO_PROXY
    ).json()
    assert set(body) == {"model", "embeddings", "total_duration", "load_duration", "prompt_eval_count"}
    assert body["model"] == "all-minilm" and len(body["embeddings"]) == 2 and body["prompt_eval_count"] == 3


def test_legacy_embeddings(shared: Server) -> None:
    client = shared.client()
    legacy = client.embeddings(model="mxbai-embed-large", prompt="customer orders").embedding
    assert len(legacy) == 1024
    assert legacy == client.embed(model="mxbai-embed-large", input="customer orders").embeddings[0]


def test_embed_errors(fresh: Server, shared: Server) -> None:
    with pytest.raises(ollama.ResponseError) as err:
        fresh.client().embed(model="all-minilm", input="x")
    assert (err.value.status_code, err.value.error) == (
        404,
        'model "all-minilm" not found, try pulling it first',
    )
    with pytest.raises(ollama.ResponseError) as err:
        fresh.client().embeddings(model="all-minilm", prompt="x")
    assert err.value.status_code == 404
    with pytest.raises(ollama.ResponseError) as err:
        shared.client().embed(model=GEN, input="x")
    assert err.value.error == f'"{GEN}" does not support embeddings'


# ---------------------------------------------------------------- chat / generate
def chat_messages(question: str) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": f"Answer with SQL. Schema documents:\n{SCHEMA}"},
        {"role": "user", "content": question},
    ]


def test_chat_non_streaming_uses_context(shared: Server) -> None:
    reply = shared.client().chat(model=GEN, messages=chat_messages("total of each order"), stream=False)
    assert reply.message.role == "assistant"
    assert reply.message.content.startswith(LABEL + "\n")
    assert "FROM orders" in reply.message.content and "total" in reply.message.content
    assert reply.done and reply.done_reason == "stop" and reply.eval_count and reply.prompt_eval_count
    raw = requests.post(
        shared.url + "/api/chat",
        json={"model": GEN, "messages": chat_messages("how many customers"), "stream": False},
        proxies=NO_PROXY,
    ).json()
    assert set(raw) >= {
        "model",
        "created_at",
        "message",
        "done",
        "done_reason",
        "total_duration",
        "load_duration",
        "prompt_eval_count",
        "prompt_eval_duration",
        "eval_count",
        "eval_duration",
    }
    assert raw["message"]["content"].endswith("SELECT COUNT(*) FROM customers;")


def test_chat_streaming_matches_non_streaming(shared: Server) -> None:
    client = shared.client()
    parts = list(client.chat(model=GEN, messages=chat_messages("emails of customers"), stream=True))
    assert all(not p.done for p in parts[:-1]) and parts[-1].done and parts[-1].message.content == ""
    assert parts[-1].eval_count == len(parts)  # every chunk's token plus end-of-sequence, as upstream counts
    whole = client.chat(model=GEN, messages=chat_messages("emails of customers"), stream=False)
    assert "".join(p.message.content for p in parts) == whole.message.content
    assert "FROM customers" in whole.message.content


def test_generate_streaming_and_not(shared: Server) -> None:
    client = shared.client()
    prompt = f"{SCHEMA}\nQuestion: list customer names"
    whole = client.generate(model=GEN, prompt=prompt, stream=False)
    assert whole.response == f"{LABEL}\nSELECT name FROM customers LIMIT 100;"
    assert whole.done_reason == "stop" and whole.context
    parts = list(client.generate(model=GEN, prompt=prompt, stream=True))
    assert "".join(p.response for p in parts) == whole.response
    assert parts[-1].done and parts[-1].response == "" and parts[-1].total_duration
    as_json = client.generate(model=GEN, prompt=prompt, format="json", stream=False)
    assert json.loads(as_json.response)["sql"].startswith("SELECT name FROM customers")


def test_generation_errors(shared: Server) -> None:
    client = shared.client()
    with pytest.raises(ollama.ResponseError) as err:
        client.generate(model="all-minilm", prompt="x")
    assert (err.value.status_code, err.value.error) == (400, '"all-minilm" does not support generate')
    with pytest.raises(ollama.ResponseError) as err:
        client.chat(model="all-minilm", messages=[{"role": "user", "content": "x"}])
    assert err.value.error == '"all-minilm" does not support chat'
    with pytest.raises(ollama.ResponseError) as err:
        client.chat(model="llama3", messages=[{"role": "user", "content": "x"}])
    assert (err.value.status_code, err.value.error) == (404, "model 'llama3' not found")


def test_ps_tracks_use_and_keep_alive(fresh: Server) -> None:
    client = fresh.client()
    client.pull(GEN, stream=False)
    assert client.ps().models == []
    assert client.generate(model=GEN, prompt="").done_reason == "load"
    running = client.ps().models
    assert [m.model for m in running] == [GEN]
    remaining = running[0].expires_at.timestamp() - time.time()
    assert 240 < remaining <= 300  # OLLAMA_KEEP_ALIVE=5m
    assert client.generate(model=GEN, prompt="", keep_alive=0).done_reason == "unload"
    assert client.ps().models == []


# ---------------------------------------------------------------- host header check
def test_host_header_check_on_loopback_bind(shared: Server) -> None:
    def status(host: str) -> int:
        return requests.get(shared.url + "/api/version", headers={"Host": host}, proxies=NO_PROXY).status_code

    assert status("evil.example.com") == 403
    assert status("8.8.8.8:11434") == 403
    for ok in (
        f"localhost:{shared.port}",
        "127.0.0.1",
        "ollama.internal",
        "box.local",
        "10.1.2.3",
        socket.gethostname(),
    ):
        assert status(ok) == 200, ok


@pytest.mark.parametrize(
    ("bind", "host", "allowed"),
    [
        ("127.0.0.1", "evil.example.com", False),
        ("::1", "evil.example.com:11434", False),
        ("127.0.0.1", "[::1]:11434", True),
        ("127.0.0.1", "192.168.1.5", True),
        ("127.0.0.1", "100.64.0.1", False),  # Go's IsPrivate is RFC 1918 only
        ("127.0.0.1", "api.localhost", True),
        ("127.0.0.1", "labhost", True),  # this machine's hostname
        ("0.0.0.0", "evil.example.com", True),  # upstream skips the check off loopback
        ("10.0.0.5", "evil.example.com", True),
    ],
)
def test_host_decision_function(bind: str, host: str, allowed: bool) -> None:
    assert request_allowed(bind, host, "LabHost", ["203.0.113.9"]) is allowed


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, ("127.0.0.1", 11434)),
        ("0.0.0.0", ("0.0.0.0", 11434)),
        ("10.0.0.5:8080", ("10.0.0.5", 8080)),
        ("http://10.0.0.5:8080", ("10.0.0.5", 8080)),
        ("http://10.0.0.5", ("10.0.0.5", 80)),
        ("[::1]:9000", ("::1", 9000)),
        (":11500", ("", 11500)),
    ],
)
def test_ollama_host_parsing(value: str | None, expected: tuple[str, int]) -> None:
    parsed = parse_host(value)
    assert (parsed.host, parsed.port) == expected


# ---------------------------------------------------------------- CLI
def run_cli(server: Server, *args: str) -> subprocess.CompletedProcess[str]:
    env = base_env()
    env["OLLAMA_HOST"] = f"127.0.0.1:{server.port}"
    return subprocess.run(
        [sys.executable, "-m", "ollama_standin", *args], env=env, capture_output=True, text=True, timeout=20
    )


def test_cli_pull_list_ps_version(fresh: Server) -> None:
    pulled = run_cli(fresh, "pull", "all-minilm")
    assert pulled.returncode == 0, pulled.stderr
    assert pulled.stdout.splitlines()[0] == "pulling manifest" and pulled.stdout.splitlines()[-1] == "success"
    listed = run_cli(fresh, "list").stdout.splitlines()
    assert listed[0].split() == ["NAME", "ID", "SIZE", "MODIFIED"]
    digest = fresh.client().list().models[0].digest
    assert listed[1].split()[:2] == ["all-minilm:latest", digest[:12]]
    assert run_cli(fresh, "ps").stdout.split() == ["NAME", "ID", "SIZE", "PROCESSOR", "CONTEXT", "UNTIL"]
    failed = run_cli(fresh, "pull", "no-such-model")
    assert failed.returncode == 1
    assert failed.stderr.strip() == "Error: pull model manifest: file does not exist"
    version = run_cli(fresh, "--version")
    assert version.stdout == "ollama version is 0.14.2 (QueryGPT lab stand-in, not Ollama)\n"


# ---------------------------------------------------------------- mirror and packaging
def test_mirror_layout_and_digests(mirror: Path, tmp_path: Path) -> None:
    for blob in (mirror / "blobs").iterdir():
        assert blob.name == "sha256-" + hashlib.sha256(blob.read_bytes()).hexdigest()
    manifests = sorted((mirror / "manifests" / "registry.ollama.ai" / "library").glob("*/*"))
    assert [f"{p.parent.name}:{p.name}" for p in manifests] == sorted([*DIMS, GEN])
    for path in manifests:
        manifest = json.loads(path.read_bytes())
        for layer in [*manifest["layers"], manifest["config"]]:
            blob = mirror / "blobs" / layer["digest"].replace(":", "-")
            assert blob.stat().st_size == layer["size"]
    again = tmp_path / "again"
    subprocess.run(
        [sys.executable, str(STANDIN / "make_mirror.py"), "--out", str(again)],
        check=True,
        capture_output=True,
    )
    assert manifest_bytes(again, "qwen2.5-coder", "1.5b") == manifest_bytes(mirror, "qwen2.5-coder", "1.5b")


def package(out: Path, version: str, *extra: str) -> str:
    done = subprocess.run(
        [sys.executable, str(STANDIN / "package.py"), "--version", version, "--out", str(out), *extra],
        check=True,
        capture_output=True,
        text=True,
    )
    return done.stdout.strip()


def test_package_tar_zst_like_upstream(tmp_path: Path, mirror: Path) -> None:
    digest = package(tmp_path / "a", "0.14.2")
    archive = tmp_path / "a" / "ollama-linux-amd64.tar.zst"
    assert digest == hashlib.sha256(archive.read_bytes()).hexdigest()
    assert (tmp_path / "a" / "sha256sum.txt").read_text() == f"{digest}  ./ollama-linux-amd64.tar.zst\n"
    assert package(tmp_path / "b", "0.14.2") == digest  # reproducible
    assert package(tmp_path / "c", "0.15.0") != digest  # version is stamped in
    tar_bytes = subprocess.run(["zstd", "-dc", str(archive)], check=True, capture_output=True).stdout
    plain = tmp_path / "plain.tar"
    plain.write_bytes(tar_bytes)
    with tarfile.open(plain) as tar:
        members = {m.name: m for m in tar.getmembers()}
        assert sorted(members) == ["bin/ollama", "lib/ollama", "lib/ollama/STANDIN.txt"]
        binary = members["bin/ollama"]
        assert binary.isfile() and binary.mode == 0o755 and (binary.uid, binary.gid) == (0, 0)
        assert members["lib/ollama"].isdir()
        content = tar.extractfile(binary)
        assert content is not None and content.read().startswith(b"#!/usr/bin/env python3\n")
    prefix = tmp_path / "prefix"
    prefix.mkdir()
    subprocess.run(
        ["tar", "--zstd", "-xf", str(tmp_path / "c" / "ollama-linux-amd64.tar.zst"), "-C", str(prefix)],
        check=True,
    )
    env = {k: v for k, v in base_env().items() if k != "PYTHONPATH"}
    offline = subprocess.run(
        [str(prefix / "bin" / "ollama"), "--version"], env=env, capture_output=True, text=True
    )
    assert "Warning: client version is 0.15.0 (QueryGPT lab stand-in, not Ollama)" in offline.stdout
    server = start_server(tmp_path / "models", mirror, argv0=[str(prefix / "bin" / "ollama")])
    try:
        assert requests.get(server.url + "/api/version", proxies=NO_PROXY).json() == {"version": "0.15.0"}
    finally:
        server.stop()


def test_package_tgz_for_old_releases(tmp_path: Path) -> None:
    digest = package(tmp_path / "a", "0.13.5", "--format", "tgz")
    assert package(tmp_path / "b", "0.13.5", "--format", "tgz") == digest
    assert (tmp_path / "a" / "sha256sum.txt").read_text() == f"{digest}  ./ollama-linux-amd64.tgz\n"
    with tarfile.open(tmp_path / "a" / "ollama-linux-amd64.tgz", "r:gz") as tar:
        assert sorted(tar.getnames()) == ["bin/ollama", "lib/ollama", "lib/ollama/STANDIN.txt"]
