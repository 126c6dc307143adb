#!/usr/bin/env python3
"""Lab test fixture: build the "model mirror" the Ollama stand-in pulls from.

The lab has no registry.ollama.ai, so `POST /api/pull` on the stand-in copies
from a directory (OLLAMA_STANDIN_MIRROR) laid out exactly like an Ollama
models dir: manifests/registry.ollama.ai/library/<name>/<tag> and
blobs/sha256-<hex>, with real sha256 digests. Output is deterministic.

    python3 lab/standins/ollama/make_mirror.py --out /srv/ollama-mirror
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ollama_standin.catalog import CATALOG, build_model
from ollama_standin.names import parse_name


def write_mirror(out: Path) -> dict[str, str]:
    """Write every catalog model under out; return {model name: manifest path}."""
    written: dict[str, str] = {}
    for spec in CATALOG:
        manifest, blobs = build_model(spec)
        for digest, data in blobs.items():
            blob = out / "blobs" / digest.replace(":", "-")
            blob.parent.mkdir(parents=True, exist_ok=True)
            blob.write_bytes(data)
        path = out / "manifests" / parse_name(spec.name).manifest_relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(manifest)
        written[spec.name] = str(path)
    return written


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description="Build the lab model mirror for the Ollama stand-in.")
    parser.add_argument("--out", required=True, type=Path, help="mirror directory to (re)populate")
    args = parser.parse_args(argv)
    for name, path in write_mirror(args.out).items():
        print(f"{name}\t{path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
