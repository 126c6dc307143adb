"""Lab test fixture: use the embedding runtime and model carried inside the release archive.

The lab's Ollama hosts get the stand-in the way production gets Ollama: one release
archive unpacked into a prefix (roles/ollama). package.py puts the CPython packages
real embeddings need (numpy, onnxruntime, tokenizers, built for the hosts' Python)
and the all-MiniLM-L6-v2 files under lib/ollama/standin/, where upstream keeps its
runtime libraries, so the role's install path stays unchanged. bin/ollama finds
them relative to itself. A runtime built for another Python is left alone (its
compiled modules would not import); the interpreter's own packages, if any, serve.
"""

from __future__ import annotations

import sys
from pathlib import Path

from ollama_standin import minilm

# Relative to the prefix the archive was unpacked into (bin/ollama's grandparent).
STANDIN_LIB = Path("lib") / "ollama" / "standin"
MODEL_DIR = "all-minilm"
SITE_PREFIX = "site-packages-"

# What activate() found, for the server's start-up log line.
note = ""


def python_tag(version: tuple[int, int] | None = None) -> str:
    """cp313 for CPython 3.13: the directory suffix of the runtime built for it."""
    major, minor = version or sys.version_info[:2]
    return f"cp{major}{minor}"


def site_dir(root: Path, tag: str) -> Path:
    return root / f"{SITE_PREFIX}{tag}"


def activate(argv0: str) -> None:
    """Put the archive's runtime on sys.path and point minilm at its model, when present."""
    global note
    root = Path(argv0).resolve().parent.parent / STANDIN_LIB
    if not root.is_dir():
        return
    if (root / MODEL_DIR).is_dir():
        minilm.vendored_model_dir = root / MODEL_DIR
    site = site_dir(root, python_tag())
    if site.is_dir():
        # Ahead of the system's dist-packages (a Debian python3-numpy must not shadow ours),
        # behind the zipapp itself.
        sys.path.insert(1, str(site))
        note = f"runtime from {site}"
    else:
        built = sorted(p.name.removeprefix(SITE_PREFIX) for p in root.glob(SITE_PREFIX + "*"))
        note = f"the archive's runtime is for {', '.join(built) or 'no Python'}, this is {python_tag()}"
