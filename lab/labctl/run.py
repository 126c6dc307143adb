"""Subprocess helpers: one place that decides how commands are echoed and how failures read."""

from __future__ import annotations

import shlex
import subprocess
import sys
from collections.abc import Mapping, Sequence


class LabError(RuntimeError):
    """A failure the operator can act on; the CLI prints it without a traceback."""


def run(
    cmd: Sequence[str],
    *,
    check: bool = True,
    capture: bool = False,
    env: Mapping[str, str] | None = None,
    input_text: str | None = None,
    quiet: bool = False,
) -> subprocess.CompletedProcess[str]:
    """Run a command; on failure raise LabError carrying the command and its stderr."""
    if not quiet:
        print(f"+ {shlex.join(cmd)}", file=sys.stderr, flush=True)
    proc = subprocess.run(
        list(cmd),
        check=False,
        text=True,
        capture_output=capture,
        env=dict(env) if env is not None else None,
        input=input_text,
    )
    if check and proc.returncode != 0:
        detail = (proc.stderr or "").strip() if capture else ""
        raise LabError(f"command failed ({proc.returncode}): {shlex.join(cmd)}\n{detail}".rstrip())
    return proc


def output(cmd: Sequence[str], **kwargs: object) -> str:
    """Run a command quietly and return its stripped stdout."""
    return run(cmd, capture=True, quiet=True, **kwargs).stdout.strip()  # type: ignore[arg-type]
