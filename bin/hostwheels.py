"""Which binary wheels a Debian 13 x86_64 host's CPython installs, for `pip download`.

Shared by bin/build (the backend's wheelhouse) and lab/standins/ollama/package.py (the
embedding runtime the Ollama stand-in's archive carries): both fetch wheels on the
controller for an interpreter that is not the controller's own, and must agree on what
the hosts can load.
"""

from __future__ import annotations

# The Python of the hosts' Debian release (Debian 13: 3.13).
DEFAULT_PYTHON = "3.13"
# Binary wheels a Debian 13 x86_64 host can install (glibc 2.41).
PLATFORMS = ["manylinux2014_x86_64", "manylinux_2_17_x86_64", "manylinux_2_28_x86_64", "manylinux_2_34_x86_64"]


def pip_target_args(python: str) -> list[str]:
    """`pip download` arguments for binary wheels only, for CPython `python` on the hosts."""
    abi = "cp" + python.replace(".", "")
    platforms = [arg for platform in PLATFORMS for arg in ("--platform", platform)]
    return ["--only-binary=:all:", "--python-version", python, "--implementation", "cp",
            "--abi", abi, "--abi", "abi3", "--abi", "none", *platforms]
