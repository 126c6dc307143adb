"""Build the lab's stand-in release archives where the roles' mirror variables point.

The roles install Qdrant and Ollama from upstream release archives. Here those cannot be
downloaded, so the lab builds API-compatible stand-ins packaged exactly like them, at the
versions the roles pin (read from the roles' defaults, so the two never disagree), laid out
like a release mirror under .lab/dist/. The packaging is deterministic: rebuilding an
unchanged stand-in gives the same bytes, and the roles see no change.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import yaml

from .paths import REPO, STATE
from .run import run

DIST = STATE / "dist"


def _role_default(role: str, name: str) -> str:
    defaults = yaml.safe_load((REPO / "roles" / role / "defaults" / "main.yml").read_text())
    return str(defaults[name])


def build() -> None:
    qdrant_dir = DIST / "qdrant"
    qdrant_dir.mkdir(parents=True, exist_ok=True)
    sha = run([sys.executable, str(REPO / "lab/standins/qdrant/package.py"),
               "--version", _role_default("qdrant", "qdrant_version"), "--out", str(qdrant_dir)],
              capture=True, quiet=True).stdout.split()[-1]
    (qdrant_dir / "qdrant.sha256").write_text(sha + "\n")

    version = _role_default("ollama", "ollama_version")
    # --embeddings: the archive carries numpy/onnxruntime/tokenizers for the hosts' Python and
    # all-MiniLM-L6-v2, so all-minilm gives real vectors on the lab's Ollama hosts. package.py
    # reuses an unchanged archive, so repeated `lab up` runs stay fast.
    run([sys.executable, str(REPO / "lab/standins/ollama/package.py"), "--version", version,
         "--out", str(DIST / "ollama" / f"v{version}"), "--embeddings"], capture=True, quiet=True)
    run([sys.executable, str(REPO / "lab/standins/ollama/make_mirror.py"),
         "--out", str(DIST / "ollama-models")], capture=True, quiet=True)
    print(f"lab stand-ins built in {DIST}")


def built_paths() -> list[Path]:
    return sorted(p for p in DIST.rglob("*") if p.is_file())


RELEASE = STATE / "release"


def build_release() -> Path:
    """The application's release, built by bin/build as for prod (reused while its inputs are
    unchanged), with .lab/release/current pointing at it: the lab's pins read it."""
    out = run([str(REPO / "bin" / "build"), "--out", str(RELEASE), "--json"], capture=True).stdout
    version = json.loads(out)["querygpt_release"]["version"]
    current = RELEASE / "current"
    target = f"querygpt-{version}"
    if not current.is_symlink() or os.readlink(current) != target:
        current.unlink(missing_ok=True)
        current.symlink_to(target)
    return RELEASE / target
