#!/usr/bin/python3
"""LAB ONLY test fixture: an Alertmanager webhook receiver that records what it gets.

Alertmanager POSTs each notification (JSON, webhook format version 4) here; every one is
appended, with the time it arrived, as one line of a JSON-lines file. `GET /alerts` serves
them back as a JSON list, so a test can stop a service and watch its alert arrive;
`DELETE /alerts` forgets them. Never part of a production deploy
(lab/playbooks/prepare_monitoring.yml installs it on the lab's monitoring host).
Standard library only: it runs on the host's python3.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

MAX_BODY = 1 << 20
_LOCK = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    """POST anything: record it. GET/DELETE /alerts: read or clear the record."""

    store: Path

    def _reply(self, status: int, body: bytes = b"", content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        length = int(self.headers.get("Content-Length") or 0)
        if length <= 0 or length > MAX_BODY:
            self._reply(400, b'{"error": "a JSON body up to 1 MiB is required"}')
            return
        try:
            payload = json.loads(self.rfile.read(length))
        except ValueError:
            self._reply(400, b'{"error": "body is not JSON"}')
            return
        line = json.dumps({"received_at": time.time(), "path": self.path, "payload": payload}, sort_keys=True)
        with _LOCK, self.store.open("a", encoding="utf-8") as out:
            out.write(line + "\n")
        self._reply(200, b'{"status": "recorded"}')

    def do_GET(self) -> None:  # noqa: N802
        if self.path.split("?")[0] == "/-/healthy":
            self._reply(200, b"ok\n", "text/plain")
            return
        if self.path.split("?")[0] != "/alerts":
            self._reply(404, b'{"error": "GET /alerts"}')
            return
        with _LOCK:
            lines = self.store.read_text(encoding="utf-8").splitlines() if self.store.exists() else []
        self._reply(200, json.dumps([json.loads(line) for line in lines if line]).encode())

    def do_DELETE(self) -> None:  # noqa: N802
        if self.path.split("?")[0] != "/alerts":
            self._reply(404, b'{"error": "DELETE /alerts"}')
            return
        with _LOCK:
            self.store.write_text("", encoding="utf-8")
        self._reply(200, b'{"status": "cleared"}')

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - base signature
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", default="127.0.0.1:9099", help="host:port (default 127.0.0.1:9099)")
    parser.add_argument("--store", type=Path, required=True, help="JSON-lines file of received notifications")
    args = parser.parse_args()
    host, _, port = args.listen.rpartition(":")
    Handler.store = args.store
    ThreadingHTTPServer((host, int(port)), Handler).serve_forever()


if __name__ == "__main__":
    main()
