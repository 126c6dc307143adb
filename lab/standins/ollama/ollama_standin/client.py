"""Lab test fixture: the tiny HTTP client the stand-in CLI uses (like upstream's api package).

`ollama pull/list/ps/--version` talk to the server at OLLAMA_HOST, exactly as
upstream's CLI does, so the role can run `ollama pull` on the host. Proxies
are deliberately ignored: the target is always the local server.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class ClientError(Exception):
    """A server error message, or a connection failure, for the CLI to print."""


class Client:
    """JSON/NDJSON requests against one base URL."""

    def __init__(self, base_url: str, timeout: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout

    def _open(self, method: str, path: str, body: dict[str, Any] | None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.base_url + path, data=data, method=method)
        request.add_header("Content-Type", "application/json")
        try:
            return _OPENER.open(request, timeout=self.timeout)
        except urllib.error.HTTPError as exc:
            text = exc.read().decode(errors="replace")
            try:
                message = json.loads(text).get("error", text)
            except ValueError:
                message = text or exc.reason
            raise ClientError(str(message)) from None
        except OSError:
            raise ClientError("could not connect to ollama server, run 'ollama serve' to start it") from None

    def json(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """One JSON response."""
        with self._open(method, path, body) as response:
            return json.loads(response.read() or b"null")

    def stream(self, path: str, body: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """NDJSON objects; an in-stream {"error"} becomes ClientError."""
        with self._open("POST", path, body) as response:
            for line in response:
                if not line.strip():
                    continue
                obj = json.loads(line)
                if "error" in obj:
                    raise ClientError(str(obj["error"]))
                yield obj
