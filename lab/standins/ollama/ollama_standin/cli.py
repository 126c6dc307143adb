"""Lab test fixture: the `ollama` command line (serve, pull, list, ps, --version).

Only the subcommands the role and lab use exist. Output mimics upstream's
closely enough for humans and simple parsers ("ollama version is X"), and the
stand-in marker is appended where parsers tolerate extra text.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
from typing import Any

from ollama_standin.client import Client, ClientError
from ollama_standin.config import ConfigError, Settings, parse_host
from ollama_standin.version import MARKER, VERSION


def _client() -> Client:
    return Client(parse_host(os.environ.get("OLLAMA_HOST")).base_url)


def human_bytes(size: float) -> str:
    """Decimal units like upstream's format.HumanBytes."""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" or size >= 10 else f"{size:.1f} {unit}"
        size /= 1000
    raise AssertionError("unreachable")


def human_time(iso: str, now: dt.datetime | None = None) -> str:
    """ "2 minutes ago" / "4 minutes from now", as upstream's list/ps show times."""
    moment = dt.datetime.fromisoformat(iso.replace("Z", "+00:00"))
    delta = ((now or dt.datetime.now(dt.UTC)) - moment).total_seconds()
    suffix = "ago" if delta >= 0 else "from now"
    seconds = abs(delta)
    for unit, length in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= length:
            count = int(seconds // length)
            return f"{count} {unit}{'s' if count != 1 else ''} {suffix}"
    return "Less than a second ago" if suffix == "ago" and seconds < 1 else f"{int(seconds)} seconds {suffix}"


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "    ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows
    )


def cmd_serve(_: argparse.Namespace) -> int:
    from ollama_standin import embedding, vendor
    from ollama_standin.server import serve  # only the server needs http.server & friends

    settings = Settings.from_env(os.environ)
    sys.stderr.write(f"[ollama-standin] {embedding.startup_note(vendor.note)}\n")
    return serve(settings)


def cmd_pull(args: argparse.Namespace) -> int:
    last = ""
    for progress in _client().stream("/api/pull", {"model": args.model, "stream": True}):
        status = str(progress.get("status", ""))
        total, completed = progress.get("total"), progress.get("completed")
        if total and completed is not None:
            if completed == total:
                print(f"{status}: 100% {human_bytes(total)}")
        elif status != last:
            print(status)
        last = status
    return 0


def cmd_list(_: argparse.Namespace) -> int:
    rows = [["NAME", "ID", "SIZE", "MODIFIED"]]
    for m in _client().json("GET", "/api/tags")["models"]:
        rows.append([m["name"], m["digest"][:12], human_bytes(m["size"]), human_time(m["modified_at"])])
    print(_table(rows))
    return 0


def cmd_ps(_: argparse.Namespace) -> int:
    rows = [["NAME", "ID", "SIZE", "PROCESSOR", "CONTEXT", "UNTIL"]]
    for m in _client().json("GET", "/api/ps")["models"]:
        rows.append(
            [
                m["name"],
                m["digest"][:12],
                human_bytes(m["size"]),
                "100% CPU",
                str(m.get("context_length", "")),
                human_time(m["expires_at"]),
            ]
        )
    print(_table(rows))
    return 0


def print_version() -> int:
    """Upstream's versionHandler output, with the stand-in marker appended."""
    try:
        server_version: Any = _client().json("GET", "/api/version").get("version", "")
    except ClientError:
        print("Warning: could not connect to a running Ollama instance")
        server_version = ""
    if server_version:
        print(f"ollama version is {server_version} ({MARKER})")
    if server_version != VERSION:
        print(f"Warning: client version is {VERSION} ({MARKER})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ollama", description=f"Ollama API stand-in ({MARKER}).")
    parser.add_argument("-v", "--version", action="store_true", help="Show version information")
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("serve", help="Start the stand-in server").set_defaults(func=cmd_serve)
    pull = sub.add_parser("pull", help="Pull a model from the lab mirror")
    pull.add_argument("model")
    pull.set_defaults(func=cmd_pull)
    for name in ("list", "ls"):
        sub.add_parser(name, help="List models").set_defaults(func=cmd_list)
    sub.add_parser("ps", help="List running models").set_defaults(func=cmd_ps)
    return parser


def main(argv: list[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        return print_version()
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args))
    except (ClientError, ConfigError) as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
