"""JSON-lines logging to stdout with a per-request id.

One JSON object per line is what the log shipper on the hosts parses; the
request id ties the access line to any warning logged while serving it. The
Qdrant API key and the S3 keys are scrubbed from every message as a last line of defence.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import time
from typing import Any

#: Set by the request middleware; copied into worker threads by Starlette.
request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "querygpt_request_id", default=None
)

# Attributes every LogRecord has; anything else was passed via ``extra=``.
_STANDARD_ATTRS = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys()
    | {"message", "asctime", "taskName", "color_message"}  # uvicorn's ANSI copy
)

_HANDLER_NAME = "querygpt-json"


class JsonFormatter(logging.Formatter):
    """Render a record as one JSON object, including ``extra=`` fields."""

    def __init__(self, secrets: tuple[str, ...] = ()) -> None:
        super().__init__()
        self._secrets = tuple(s for s in secrets if s)

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        request_id = getattr(record, "request_id", None) or request_id_var.get()
        if request_id:
            entry["request_id"] = request_id
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRS and key not in entry and key != "request_id":
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        line = json.dumps(entry, default=str, ensure_ascii=False)
        for secret in self._secrets:
            line = line.replace(secret, "***")
        return line


class _StdoutHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stdout`` (or ``sys.stderr``) is at emit time, not
    at creation, so redirected or captured output keeps receiving the log lines."""

    def __init__(self, to_stderr: bool = False) -> None:
        super().__init__(sys.stderr if to_stderr else sys.stdout)
        self._to_stderr = to_stderr

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr if self._to_stderr else sys.stdout
        super().emit(record)


def setup_logging(
    level: str = "INFO", secrets: tuple[str, ...] = (), *, to_stderr: bool = False
) -> None:
    """Route the root, uvicorn and our loggers to one JSON stdout handler.

    Idempotent: called by the CLI and again by each worker's app factory.
    ``to_stderr`` is for commands whose stdout is a machine-readable result
    (``querygpt-backend reindex``).
    """
    root = logging.getLogger()
    for handler in list(root.handlers):
        if handler.get_name() == _HANDLER_NAME:
            root.removeHandler(handler)
    handler = _StdoutHandler(to_stderr)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(JsonFormatter(secrets))
    root.addHandler(handler)
    root.setLevel(level)
    # Library warnings (e.g. qdrant-client's) become JSON lines too.
    logging.captureWarnings(True)
    for name in ("uvicorn", "uvicorn.error"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    # We write our own access line with route/status/duration/request id.
    logging.getLogger("uvicorn.access").disabled = True
    # httpx logs every request at INFO; that is noise next to our access log.
    # botocore's DEBUG output includes request headers: keep it quiet even at DEBUG.
    for name in ("httpx", "httpcore", "botocore", "boto3", "s3transfer", "urllib3"):
        logging.getLogger(name).setLevel(logging.WARNING)
