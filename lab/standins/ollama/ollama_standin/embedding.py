"""Lab test fixture: the stand-in's embeddings, real where a model is installed, hashed elsewhere.

`all-minilm` is served by the real all-MiniLM-L6-v2 (minilm.py) when onnxruntime,
tokenizers and the model files are there: the lab's archive carries them, the
controller's virtualenv installs them (requirements/ollama-standin*.txt). Every
other model name, and all-minilm where the model is absent or
OLLAMA_STANDIN_EMBEDDINGS=hash, gets deterministic lexical "embeddings": a signed
feature-hashing of words (lightly stemmed, with snake_case parts) and character
trigrams, with the real model's dimension, so texts sharing words are close,
identical across runs and processes, with no weights.
"""

from __future__ import annotations

import hashlib
import math
import os
import re

from ollama_standin import minilm

# Models with real weights here, by model name (without tag) and dimension.
REAL_MODELS = {"all-minilm": minilm.DIMENSION}
# OLLAMA_STANDIN_EMBEDDINGS: "auto" (real where installed) or "hash" (always hashing).
MODE_VARIABLE = "OLLAMA_STANDIN_EMBEDDINGS"

_WORD = re.compile(r"[a-z0-9_]+")
WORD_WEIGHT = 1.0
TRIGRAM_WEIGHT = 0.35


def tokens(text: str) -> list[str]:
    """Lower-cased word tokens; also used as the stand-in's token count."""
    return _WORD.findall(text.lower())


def _stem(word: str) -> str:
    """Crude plural folding so "orders" and "order" share a feature."""
    if len(word) > 3 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
        return word[:-1]
    return word


def _features(text: str) -> dict[str, float]:
    weights: dict[str, float] = {}
    for token in tokens(text):
        words = {token, *(part for part in token.split("_") if part)}
        for word in {_stem(w) for w in words}:
            weights["w:" + word] = weights.get("w:" + word, 0.0) + WORD_WEIGHT
            padded = f"#{word}#"
            for i in range(len(padded) - 2):
                key = "t:" + padded[i : i + 3]
                weights[key] = weights.get(key, 0.0) + TRIGRAM_WEIGHT
    return weights


def backend(model: str, dimension: int) -> str:
    """ "onnx" or "hash": what `embed` will use for this model (loads the model on first ask)."""
    if REAL_MODELS.get(model) != dimension or os.environ.get(MODE_VARIABLE, "auto") == "hash":
        return "hash"
    return "onnx" if minilm.load() is not None else "hash"


def startup_note(vendor_note: str = "") -> str:
    """The server's start-up line: which embeddings it will serve, and why not real ones."""
    if os.environ.get(MODE_VARIABLE, "auto") == "hash":
        return f"embeddings: word hashing for every model ({MODE_VARIABLE}=hash)"
    suffix = f" ({vendor_note})" if vendor_note else ""
    reason = minilm.unavailable_reason()
    if reason:
        return f"embeddings: all-minilm falls back to word hashing (NOT a real model): {reason}{suffix}"
    files = minilm.locate()
    origin = files.origin if files else "?"
    return (
        f"embeddings: all-minilm is all-MiniLM-L6-v2 on the CPU (ONNX) from {origin}{suffix}, "
        "loaded on first use; other models: word hashing"
    )


def embed(text: str, dimension: int, seed: str) -> list[float]:
    """An L2-normalised vector of `dimension` floats; seed is the model name (without tag)."""
    if backend(seed, dimension) == "onnx":
        model = minilm.load()
        assert model is not None
        return model.embed(text)
    return hashed(text, dimension, seed)


def hashed(text: str, dimension: int, seed: str) -> list[float]:
    """The lexical fallback; seed separates models' spaces."""
    vector = [0.0] * dimension
    for feature, weight in _features(text).items():
        digest = hashlib.blake2b(f"{seed}\0{feature}".encode(), digest_size=8).digest()
        value = int.from_bytes(digest, "little")
        sign = 1.0 if value & 1 else -1.0
        vector[(value >> 1) % dimension] += sign * weight
    if not any(vector):
        # Empty/symbol-only text: a fixed unit vector keeps output normalised.
        vector[0] = 1.0
    return renormalise(vector)


def renormalise(vector: list[float]) -> list[float]:
    """Unit-length copy (used after truncating to a requested `dimensions`)."""
    norm = math.sqrt(sum(v * v for v in vector)) or 1.0
    return [v / norm for v in vector]
