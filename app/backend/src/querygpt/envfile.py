"""Read the service's systemd EnvironmentFile for commands run by hand.

The service gets its QUERYGPT_* variables from systemd (``EnvironmentFile=
/etc/querygpt/backend.env``, written by the Ansible role). An operator running
``querygpt-backend reindex`` in a shell has none of them, so the command reads
the same file: one source of configuration, no copy to drift.

Only the subset of systemd's syntax the role's template uses is understood:
``KEY=VALUE`` lines, ``#``/``;`` comments, and values in double quotes with
backslash escapes or in single quotes taken verbatim.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

#: Where the backend role writes the service's environment.
DEFAULT_ENV_FILE = Path("/etc/querygpt/backend.env")

_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class EnvFileError(ValueError):
    """The file cannot be read or has a line we do not understand; names file and line."""


def parse_env_file(path: Path) -> dict[str, str]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        hint = " (run it as root, e.g. with sudo)" if isinstance(exc, PermissionError) else ""
        raise EnvFileError(f"cannot read {path}: {exc.strerror or exc}{hint}") from None
    values: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith(("#", ";")):
            continue
        name, sep, raw = stripped.partition("=")
        name = name.strip()
        if not sep or not _NAME_RE.fullmatch(name):
            raise EnvFileError(f"{path}:{number}: expected NAME=VALUE, got {stripped[:40]!r}")
        try:
            values[name] = _unquote(raw.strip())
        except ValueError as exc:
            raise EnvFileError(f"{path}:{number}: {name}: {exc}") from None
    return values


def merged_environment(path: Path, environ: Mapping[str, str]) -> dict[str, str]:
    """The file's variables, overridden by those already set in ``environ``.

    Letting the shell win means one value can be changed for a single run
    (``QUERYGPT_QDRANT_URLS=... querygpt-backend reindex``) without editing the file.
    """
    return {**parse_env_file(path), **{k: v for k, v in environ.items() if v != ""}}


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] == "'":
        return value[1:-1]
    if value.startswith('"'):
        if len(value) < 2 or not value.endswith('"') or _ends_escaped(value[1:-1]):
            raise ValueError("unterminated double quote")
        return re.sub(r"\\(.)", r"\1", value[1:-1])
    return value


def _ends_escaped(body: str) -> bool:
    """True if ``body`` ends in an odd number of backslashes (the quote is escaped)."""
    return (len(body) - len(body.rstrip("\\"))) % 2 == 1
