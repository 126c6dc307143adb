"""uvicorn's HTTP protocol with Nagle's algorithm off on every accepted TCP connection.

Why: with more than one worker, uvicorn binds the listening socket itself with
``socket.socket(family=...)``, whose ``proto`` attribute is 0. asyncio turns TCP_NODELAY on
only for sockets whose ``proto`` is IPPROTO_TCP, and accepted sockets inherit the listener's
``proto``, so every connection kept Nagle's algorithm. uvicorn writes a response's head and
body in two sends; on a kept-alive connection the second small send then waits for the
client's delayed ACK: about 40 ms per request (44 ms measured in the lab, where nginx keeps
its upstream connections alive, so every API call through the edge paid it). A single
worker was not affected: there asyncio creates the listener through getaddrinfo.
"""

from __future__ import annotations

import asyncio
import socket

from uvicorn.protocols.http.auto import AutoHTTPProtocol


def set_nodelay(transport: asyncio.BaseTransport) -> None:
    """TCP_NODELAY on the transport's socket, when it is a TCP one (not a Unix socket)."""
    sock = transport.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class NoDelayHTTPProtocol(AutoHTTPProtocol):  # type: ignore[misc, valid-type]
    """The protocol uvicorn would pick itself ("auto"), with Nagle off per connection."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:  # type: ignore[override]
        set_nodelay(transport)
        super().connection_made(transport)
