"""Lab test fixture: the models the lab mirror offers, and their blob contents.

The stand-in has no weights; each "model" is a small JSON blob stating what
the server should emulate (embedding dimension or SQL-ish generation). Values
(family, parameter size, quantisation, dimension) follow the real models so
that /api/tags and /api/show look like upstream's for the same names.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

MEDIA_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MEDIA_CONFIG = "application/vnd.docker.container.image.v1+json"
MEDIA_MODEL = "application/vnd.ollama.image.model"
MEDIA_LICENSE = "application/vnd.ollama.image.license"
MEDIA_TEMPLATE = "application/vnd.ollama.image.template"
STANDIN_NOTE = "QueryGPT lab stand-in model blob: not real weights, not an LLM"


@dataclass(frozen=True)
class ModelSpec:
    """One mirror model: what the stand-in emulates for it."""

    name: str
    kind: str  # "embedding" or "generation"
    family: str
    parameter_size: str
    quantization_level: str
    context_length: int
    embedding_length: int
    template: str | None = None


CATALOG: tuple[ModelSpec, ...] = (
    ModelSpec("all-minilm:latest", "embedding", "bert", "23M", "F16", 512, 384),
    # The tag the project pins (never :latest): the same all-MiniLM-L6-v2 model.
    ModelSpec("all-minilm:l6-v2", "embedding", "bert", "23M", "F16", 512, 384),
    ModelSpec("nomic-embed-text:latest", "embedding", "nomic-bert", "137M", "F16", 2048, 768),
    ModelSpec("mxbai-embed-large:latest", "embedding", "bert", "334M", "F16", 512, 1024),
    ModelSpec(
        "qwen2.5-coder:1.5b",
        "generation",
        "qwen2",
        "1.5B",
        "Q4_K_M",
        32768,
        1536,
        template="{{ if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}"
        "<|im_start|>user\n{{ .Prompt }}<|im_end|>\n<|im_start|>assistant\n",
    ),
)


def canonical_json(value: object) -> bytes:
    """Stable bytes for a JSON value, so mirror digests are reproducible."""
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def digest_of(data: bytes) -> str:
    """Ollama's blob digest notation."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def model_blob(spec: ModelSpec) -> bytes:
    """The "weights" layer: a JSON description the server reads to emulate the model."""
    return canonical_json(
        {
            "standin": STANDIN_NOTE,
            "kind": spec.kind,
            "family": spec.family,
            "context_length": spec.context_length,
            "embedding_length": spec.embedding_length,
        }
    )


def license_blob(spec: ModelSpec) -> bytes:
    """A license layer, present so pulls handle several layers like real models."""
    return f"{STANDIN_NOTE}. Fixture for {spec.name}; no license terms apply.\n".encode()


def config_blob(spec: ModelSpec, layer_digests: list[str]) -> bytes:
    """The image config blob, with upstream's field names (model_format, model_family, ...)."""
    return canonical_json(
        {
            "model_format": "gguf",
            "model_family": spec.family,
            "model_families": [spec.family],
            "model_type": spec.parameter_size,
            "file_type": spec.quantization_level,
            "architecture": "amd64",
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": layer_digests},
        }
    )


def build_model(spec: ModelSpec) -> tuple[bytes, dict[str, bytes]]:
    """Manifest bytes and {digest: blob bytes} for one model."""
    layers = [(MEDIA_MODEL, model_blob(spec)), (MEDIA_LICENSE, license_blob(spec))]
    if spec.template:
        layers.append((MEDIA_TEMPLATE, spec.template.encode()))
    blobs = {digest_of(data): data for _, data in layers}
    entries = [{"mediaType": m, "digest": digest_of(d), "size": len(d)} for m, d in layers]
    config = config_blob(spec, [digest_of(d) for _, d in layers])
    blobs[digest_of(config)] = config
    manifest = {
        "schemaVersion": 2,
        "mediaType": MEDIA_MANIFEST,
        "config": {"mediaType": MEDIA_CONFIG, "digest": digest_of(config), "size": len(config)},
        "layers": entries,
    }
    return canonical_json(manifest), blobs
