"""``querygpt-backend``: validate configuration, then run uvicorn.

Configuration is validated here, in the parent process, so a bad variable
stops the systemd unit immediately with one readable line (exit code 2)
instead of a traceback repeated by every worker.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from . import __version__
from .config import Settings
from .errors import ConfigError
from .logs import setup_logging

log = logging.getLogger("querygpt.cli")


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] in ("-V", "--version"):
        print(__version__)
        return 0
    if args:
        print(
            "usage: querygpt-backend [--version]\n"
            "All settings come from QUERYGPT_* environment variables; see README.md.",
            file=sys.stderr,
        )
        return 2
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        print(f"querygpt-backend: invalid configuration: {exc}", file=sys.stderr)
        return 2
    secrets = (settings.qdrant_api_key,) if settings.qdrant_api_key else ()
    setup_logging(settings.log_level, secrets=secrets)

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
    )
    return 0


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
