"""Per-request plumbing as one pure ASGI middleware: request id, body size
limit, access log line and HTTP metrics.

Pure ASGI (not BaseHTTPMiddleware) so the request id context variable reaches
the threadpool that runs the endpoints, and so the body limit applies while
the body is being received rather than after it was buffered.
"""

from __future__ import annotations

import logging
import re
import uuid
from time import perf_counter

from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .logs import request_id_var
from .metrics import HTTP_DURATION, HTTP_REQUESTS

access_log = logging.getLogger("querygpt.access")

REQUEST_ID_HEADER = "X-Request-ID"
# Accept a caller's id only if it is a sane token: it goes into logs verbatim.
_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
#: Label for requests that matched no route, so scanners cannot create
#: unbounded metric series with random paths.
UNMATCHED_ROUTE = "<unmatched>"


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` once the body passes the limit.

    An HTTPException, because FastAPI re-raises those from body parsing
    (others become a generic 400) and our handler then answers 413.
    """

    def __init__(self, limit: int) -> None:
        super().__init__(status_code=413, detail=f"Request body exceeds {limit} bytes.")
        self.limit = limit


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp, *, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        headers = Headers(scope=scope)
        incoming = headers.get(REQUEST_ID_HEADER, "")
        request_id = incoming if _REQUEST_ID_RE.fullmatch(incoming) else uuid.uuid4().hex
        token = request_id_var.set(request_id)
        scope.setdefault("state", {})["request_id"] = request_id
        status = 500
        start = perf_counter()
        limit = self.max_body_bytes
        declared = _content_length(headers)
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            if declared is not None and declared > limit:
                raise BodyTooLarge(limit)
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                started = True
                status = message["status"]
                MutableHeaders(scope=message)[REQUEST_ID_HEADER] = request_id
            await send(message)

        try:
            await self.app(scope, limited_receive, send_with_id)
        except Exception:
            # Answer here rather than in Starlette's outer error middleware,
            # so even a 500 carries the request id the log line has.
            access_log.exception("unhandled error", extra={"path": scope.get("path", "")})
            if started:
                raise
            response = JSONResponse(
                {"detail": f"Internal server error; quote request id {request_id}."},
                status_code=500,
            )
            await response(scope, receive, send_with_id)
        finally:
            duration = perf_counter() - start
            route = route_template(scope)
            method = scope["method"]
            HTTP_REQUESTS.labels(method=method, route=route, status=str(status)).inc()
            HTTP_DURATION.labels(method=method, route=route).observe(duration)
            access_log.info(
                "request",
                extra={
                    "method": method,
                    "route": route,
                    "path": scope.get("path", ""),
                    "status": status,
                    "duration_ms": round(duration * 1000, 2),
                },
            )
            request_id_var.reset(token)


def route_template(scope: Scope) -> str:
    """The matched route's path template (``/query``), never the raw path."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else UNMATCHED_ROUTE


def _content_length(headers: Headers) -> int | None:
    try:
        return int(headers["content-length"])
    except (KeyError, ValueError):
        return None


#: Set by the edge (roles/nginx: ``proxy_set_header X-Real-IP $remote_addr``).
REAL_IP_HEADER = "X-Real-IP"


def client_address(scope: Scope) -> str | None:
    """The client's address for the audit log and the login throttle: the edge's X-Real-IP
    when it is an IP address, else the peer of the connection.

    The header is trusted because only the edges (and monitoring) may reach the backend's
    port (docs/architecture.md, the firewall matrix); a malformed value is ignored.
    """
    import ipaddress

    real_ip = Headers(scope=scope).get(REAL_IP_HEADER, "").strip()
    if real_ip:
        try:
            return str(ipaddress.ip_address(real_ip))
        except ValueError:
            pass
    client = scope.get("client")
    return str(client[0]) if client else None
