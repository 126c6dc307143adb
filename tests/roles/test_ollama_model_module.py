"""The ollama role's `ollama_model` module against the Ollama lab stand-in on 127.0.0.1.

The module's logic (roles/ollama/library/ollama_model.py: OllamaApi + ensure_model) is
imported and driven against a real HTTP server: the stand-in speaks Ollama's API (NDJSON
pull stream, /api/tags digests, upstream's error strings) and pulls from a model mirror
built by make_mirror.py. One test also runs the module through Ansible itself.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
STANDIN = ROOT / "lab" / "standins" / "ollama"
MODULE_PATH = ROOT / "roles" / "ollama" / "library" / "ollama_model.py"
ANSIBLE = ROOT / ".venv" / "bin" / "ansible"

_spec = importlib.util.spec_from_file_location("ollama_model", MODULE_PATH)
assert _spec and _spec.loader
ollama_model = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ollama_model)
ModelError = ollama_model.ModelError

EMBED = "all-minilm:l6-v2"  # the tags the project pins (never :latest)
GEN = "qwen2.5-coder:1.5b"
LATEST = "all-minilm:latest"  # what a bare name means: the module itself takes any name
NO_PROXY_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    url: str
    models: Path
    mirror: Path
    proc: subprocess.Popen

    def api(self) -> "ollama_model.OllamaApi":
        return ollama_model.OllamaApi(self.url, timeout=30)

    def tags(self) -> dict[str, str]:
        with NO_PROXY_OPENER.open(self.url + "/api/tags", timeout=5) as response:
            return {m["name"]: m["digest"] for m in json.load(response)["models"]}

    def mirror_manifest(self, name: str) -> Path:
        model, tag = name.split(":")
        return self.mirror / "manifests" / "registry.ollama.ai" / "library" / model / tag


@pytest.fixture(scope="module")
def built_mirror(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("mirror")
    subprocess.run(
        [sys.executable, str(STANDIN / "make_mirror.py"), "--out", str(out)], check=True, capture_output=True
    )
    return out


@pytest.fixture
def server(tmp_path: Path, built_mirror: Path) -> Iterator[Server]:
    """A stand-in with an empty models dir and its own copy of the mirror (tests may edit it)."""
    mirror = tmp_path / "mirror"
    shutil.copytree(built_mirror, mirror)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("OLLAMA_") and "proxy" not in k.lower()}
    env.update(
        PYTHONPATH=str(STANDIN),
        OLLAMA_HOST=f"127.0.0.1:{port}",
        OLLAMA_MODELS=str(tmp_path / "models"),
        OLLAMA_STANDIN_MIRROR=str(mirror),
    )
    log = open(tmp_path / "serve.log", "wb")  # noqa: SIM115 - the child keeps writing to it
    proc = subprocess.Popen([sys.executable, "-m", "ollama_standin", "serve"], env=env, stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 10
    while True:
        try:
            NO_PROXY_OPENER.open(url + "/", timeout=1).close()
            break
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise RuntimeError((tmp_path / "serve.log").read_text()) from None
            time.sleep(0.05)
    yield Server(url, tmp_path / "models", mirror, proc)
    proc.terminate()
    proc.wait(timeout=10)
    log.close()


def test_pull_adds_model_then_second_call_is_unchanged(server: Server) -> None:
    first = ollama_model.ensure_model(server.api(), "all-minilm")
    assert first["changed"] is True and first["operation"] == "pulled"
    assert first["name"] == LATEST and first["digest_before"] == ""
    manifest = server.mirror_manifest(LATEST).read_bytes()
    assert first["digest"] == hashlib.sha256(manifest).hexdigest() == server.tags()[LATEST]

    second = ollama_model.ensure_model(server.api(), LATEST)
    assert second["changed"] is False and second["operation"] == "none"
    assert second["digest"] == first["digest"]


def test_matching_pin_pulls_once_and_then_holds(server: Server) -> None:
    pin = "sha256:" + hashlib.sha256(server.mirror_manifest(GEN).read_bytes()).hexdigest().upper()
    assert ollama_model.ensure_model(server.api(), GEN, digest=pin)["changed"] is True
    again = ollama_model.ensure_model(server.api(), GEN, digest=pin)
    assert again["changed"] is False and again["digest"] == pin[7:].lower()


def test_pin_differing_from_installed_model_replaces_it(server: Server) -> None:
    old = ollama_model.ensure_model(server.api(), GEN)["digest"]
    # The registry now serves a new manifest (same layers, different bytes, new digest).
    path = server.mirror_manifest(GEN)
    path.write_bytes(json.dumps(json.loads(path.read_bytes()), indent=2).encode())
    new = hashlib.sha256(path.read_bytes()).hexdigest()
    assert new != old

    result = ollama_model.ensure_model(server.api(), GEN, digest=new)
    assert result["changed"] is True and result["operation"] == "replaced"
    assert result["digest_before"] == old and result["digest"] == new == server.tags()[GEN]


def test_digest_mismatch_after_pull_fails_loudly(server: Server) -> None:
    pin = "ab" * 32
    actual = hashlib.sha256(server.mirror_manifest(EMBED).read_bytes()).hexdigest()
    with pytest.raises(ModelError) as err:
        ollama_model.ensure_model(server.api(), EMBED, digest=pin)
    message = str(err.value)
    assert "DIGEST MISMATCH" in message
    assert EMBED in message and pin in message and actual in message
    assert "ollama_models" in message
    # the unverified model is not left behind as "present" for the backend to use
    assert "removed again" in message
    assert EMBED not in server.tags()


def test_digest_mismatch_removes_a_model_that_was_there_before(server: Server) -> None:
    # The registry moved the tag (or the pin is wrong): the pull replaces the old model with
    # one that does not match the pin, and nothing may serve that one.
    ollama_model.ensure_model(server.api(), GEN)
    assert GEN in server.tags()
    with pytest.raises(ModelError, match="DIGEST MISMATCH"):
        ollama_model.ensure_model(server.api(), GEN, digest="cd" * 32)
    assert GEN not in server.tags()
    # the next run with the right pin pulls it again and holds
    right = hashlib.sha256(server.mirror_manifest(GEN).read_bytes()).hexdigest()
    assert ollama_model.ensure_model(server.api(), GEN, digest=right)["operation"] == "pulled"
    assert ollama_model.ensure_model(server.api(), GEN, digest=right)["changed"] is False


def test_absent_removes_model_and_is_then_unchanged(server: Server) -> None:
    ollama_model.ensure_model(server.api(), EMBED)
    ollama_model.ensure_model(server.api(), GEN)
    removed = ollama_model.ensure_model(server.api(), EMBED, state="absent")
    assert removed["changed"] is True and removed["operation"] == "deleted" and removed["digest"] == ""
    assert set(server.tags()) == {GEN}
    assert ollama_model.ensure_model(server.api(), EMBED, state="absent")["changed"] is False


def test_unknown_model_fails_naming_ollama_models_and_the_model(server: Server) -> None:
    with pytest.raises(ModelError) as err:
        ollama_model.ensure_model(server.api(), "no-such-model:7b")
    message = str(err.value)
    assert "ollama_models" in message and "no-such-model:7b" in message
    assert "file does not exist" in message  # upstream's own error, passed through
    assert server.tags() == {}


def test_check_mode_reports_but_changes_nothing(server: Server) -> None:
    would_pull = ollama_model.ensure_model(server.api(), EMBED, check_mode=True)
    assert would_pull["changed"] is True and would_pull["operation"] == "pulled"
    assert server.tags() == {}

    ollama_model.ensure_model(server.api(), EMBED)
    before = server.tags()
    would_delete = ollama_model.ensure_model(server.api(), EMBED, state="absent", check_mode=True)
    would_replace = ollama_model.ensure_model(server.api(), EMBED, digest="cd" * 32, check_mode=True)
    assert would_delete["changed"] is True and would_delete["operation"] == "deleted"
    assert would_replace["changed"] is True and would_replace["operation"] == "replaced"
    assert server.tags() == before


@pytest.mark.parametrize(
    ("name", "digest", "fragment"),
    [
        ("all minilm", "", "not a model name"),
        ("model:tag:extra", "", "not a model name"),
        (EMBED, "sha256:1234", "not a sha256"),
        (EMBED, "z" * 64, "not a sha256"),
    ],
)
def test_bad_input_fails_before_any_request(name: str, digest: str, fragment: str) -> None:
    # Port 9 (discard) on loopback: any request would fail with "cannot reach" instead.
    api = ollama_model.OllamaApi("http://127.0.0.1:9", timeout=1)
    with pytest.raises(ModelError) as err:
        ollama_model.ensure_model(api, name, digest=digest)
    assert fragment in str(err.value) and "ollama_models" in str(err.value)


def test_unreachable_api_is_reported_with_its_url() -> None:
    api = ollama_model.OllamaApi(f"http://127.0.0.1:{free_port()}", timeout=2)
    with pytest.raises(ModelError, match=r"cannot reach the Ollama API at http://127\.0\.0\.1:\d+"):
        ollama_model.ensure_model(api, EMBED)


def run_module(server: Server, *args: str) -> dict:
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env.update(
        ANSIBLE_LOAD_CALLBACK_PLUGINS="1",
        ANSIBLE_STDOUT_CALLBACK="json",
        ANSIBLE_LOCALHOST_WARNING="0",
    )
    proc = subprocess.run(
        [str(ANSIBLE), "localhost", "-c", "local", "-M", str(MODULE_PATH.parent), "-m", "ollama_model",
         "-a", f"api_url={server.url} name={EMBED}", *args],
        capture_output=True, text=True, env=env, cwd=ROOT, check=False,
    )
    # ansible.cfg's profile_tasks callback prints a timestamp line before the JSON document
    document, _ = json.JSONDecoder().raw_decode(proc.stdout[proc.stdout.index("{") :])
    return document["plays"][0]["tasks"][0]["hosts"]["localhost"]


def test_module_through_ansible_check_mode_then_apply(server: Server) -> None:
    checked = run_module(server, "--check")
    assert checked["changed"] is True and checked["operation"] == "pulled"
    assert server.tags() == {}
    applied = run_module(server)
    assert applied["changed"] is True and applied["digest"] == server.tags()[EMBED]
    assert run_module(server)["changed"] is False
