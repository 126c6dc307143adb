"""Lab test fixture: deterministic, lexical "embeddings" in place of a neural model.

Retrieval tests need vectors where texts sharing words are close, that are
identical across runs and processes, and that have the real model's
dimension. A signed feature-hashing of words (lightly stemmed, with
snake_case parts) and character trigrams gives exactly that, with no weights.
"""

from __future__ import annotations

import hashlib
import math
import re

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


def embed(text: str, dimension: int, seed: str) -> list[float]:
    """An L2-normalised vector of `dimension` floats; seed separates models' spaces."""
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
