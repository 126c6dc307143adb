"""``querygpt-backend``: validate configuration, then run uvicorn; or, with
``reindex``, rebuild collections from the documents bucket.

Configuration is validated here, in the parent process, so a bad variable
stops the systemd unit immediately with one readable line (exit code 2)
instead of a traceback repeated by every worker.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from . import __version__
from .config import Settings, is_valid_collection_name
from .envfile import DEFAULT_ENV_FILE, EnvFileError, merged_environment
from .errors import ConfigError
from .logs import setup_logging

log = logging.getLogger("querygpt.cli")

USAGE = """\
usage: querygpt-backend [--version]
       querygpt-backend reindex (--collection NAME [--collection NAME ...] | --all)
                                [--env-file PATH]
Without arguments the API server runs; all its settings come from QUERYGPT_*
environment variables (see README.md)."""


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] in ("-V", "--version"):
        print(__version__)
        return 0
    if args and args[0] == "reindex":
        return reindex_command(args[1:])
    if args:
        print(USAGE, file=sys.stderr)
        return 2
    return serve()


def serve() -> int:
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        print(f"querygpt-backend: invalid configuration: {exc}", file=sys.stderr)
        return 2
    setup_logging(settings.log_level, secrets=settings.secrets())

    # Read the variable directly: importing querygpt.metrics would create its gauges, which in
    # multiprocess mode open files in the directory before it has been created and reset.
    prom_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or os.environ.get("prometheus_multiproc_dir")
    if prom_dir:
        try:
            _reset_multiprocess_dir(Path(prom_dir))
        except OSError as exc:
            print(
                f"querygpt-backend: PROMETHEUS_MULTIPROC_DIR {prom_dir!r} is not usable: {exc}",
                file=sys.stderr,
            )
            return 2
    elif settings.workers > 1:
        log.warning(
            "QUERYGPT_WORKERS > 1 without PROMETHEUS_MULTIPROC_DIR: each scrape of "
            "/metrics sees only the worker that answered it"
        )

    import uvicorn  # imported late: --version and config errors stay fast

    from querygpt.transport import NoDelayHTTPProtocol

    uvicorn.run(
        "querygpt.app:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        log_config=None,  # keep our JSON handler
        access_log=False,  # the middleware writes the access line
        log_level=settings.log_level.lower(),
        server_header=False,
        http=NoDelayHTTPProtocol,  # no delayed-ACK stall on kept-alive connections
    )
    return 0


def reindex_command(args: list[str]) -> int:
    """``querygpt-backend reindex``: 0 if every document was indexed, 1 if any
    failed (the JSON summary on stdout lists them), 2 for usage or configuration."""
    parser = argparse.ArgumentParser(
        prog="querygpt-backend reindex",
        description=(
            "Rebuild Qdrant collections from the originals in the documents bucket "
            "(current object versions; sha256 verified). Safe to rerun: the same "
            "objects give the same points. Prints a JSON summary on stdout; logs go "
            "to stderr."
        ),
    )
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument(
        "--collection",
        action="append",
        metavar="NAME",
        help="collection to rebuild (repeatable)",
    )
    which.add_argument(
        "--all", action="store_true", help="every collection folder under the key prefix"
    )
    parser.add_argument(
        "--env-file",
        type=Path,
        metavar="PATH",
        help=(
            f"the service's environment file (default: {DEFAULT_ENV_FILE} when it exists); "
            "variables already set in the environment take precedence"
        ),
    )
    try:
        options = parser.parse_args(args)
    except SystemExit as exc:  # argparse's own --help (0) and usage errors (2)
        return int(exc.code or 0)
    for name in options.collection or ():
        if not is_valid_collection_name(name):
            print(
                f"querygpt-backend reindex: --collection {name!r} is not a collection name "
                "(1-64 letters, digits, '_' or '-')",
                file=sys.stderr,
            )
            return 2

    env_file = options.env_file
    if env_file is None and DEFAULT_ENV_FILE.exists():
        env_file = DEFAULT_ENV_FILE
    try:
        environ = merged_environment(env_file, os.environ) if env_file else dict(os.environ)
        settings = Settings.from_env(environ)
    except EnvFileError as exc:
        print(f"querygpt-backend reindex: {exc}", file=sys.stderr)
        return 2
    except ConfigError as exc:
        source = f" (read from {env_file} and the environment)" if env_file else ""
        print(
            f"querygpt-backend reindex: invalid configuration{source}: {exc}", file=sys.stderr
        )
        return 2
    # stdout carries only the summary, so it can be piped to jq.
    setup_logging(settings.log_level, secrets=settings.secrets(), to_stderr=True)

    from . import reindex  # imported late: qdrant-client and boto3 are slow to import

    summary = reindex.run(settings, None if options.all else options.collection)
    print(json.dumps(summary.as_dict()))
    return 0 if summary.ok else 1


def _reset_multiprocess_dir(path: Path) -> None:
    """Remove metric files left by previous runs, as prometheus_client requires.

    Stale files from dead processes would otherwise be summed forever.
    """
    path.mkdir(parents=True, exist_ok=True)
    for stale in path.glob("*.db"):
        stale.unlink()
    if not os.access(path, os.W_OK):
        raise PermissionError("directory is not writable")


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
