"""Lab test fixture: upstream's Host-header (DNS-rebinding) check, re-implemented.

Upstream (server/routes.go allowedHostsMiddleware) only checks the Host header
when the server is bound to a LOOPBACK address: a browser page on a foreign
domain that rebinds its name to 127.0.0.1 must not reach the API. When bound
to any other address (0.0.0.0, a private IP) every Host is accepted, and the
operator is expected to firewall the port. The role's tests rely on the
stand-in answering 403 in exactly the same cases as Ollama.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable

LOCAL_TLDS = ("localhost", "local", "internal")
# Go's netip.Addr.IsPrivate (RFC 1918 + RFC 4193); Python's is_private is much wider.
GO_PRIVATE_NETS = tuple(
    ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7")
)


def split_host_header(host_header: str) -> str:
    """Host part of a Host header (Go's SplitHostPort, falling back to the whole value)."""
    if host_header.startswith("["):
        end = host_header.find("]")
        if end > 0 and host_header[end + 1 :].startswith(":"):
            return host_header[1:end]
        return host_header
    if host_header.count(":") == 1:
        return host_header.split(":")[0]
    return host_header


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def local_addresses() -> frozenset[str]:
    """Addresses of this machine (stdlib approximation of upstream's interface scan)."""
    found: set[str] = set()
    try:
        for info in socket.getaddrinfo(socket.gethostname(), None):
            found.add(str(info[4][0]).split("%")[0])
    except OSError:
        pass
    return frozenset(found)


def allowed_host(host: str, hostname: str) -> bool:
    """Upstream allowedHost: empty, localhost, this machine's name, or a local TLD."""
    host = host.lower()
    if host in ("", "localhost") or host == hostname.lower():
        return True
    return any(host.endswith("." + tld) for tld in LOCAL_TLDS)


def request_allowed(bind_host: str, host_header: str, hostname: str, local_ips: Iterable[str]) -> bool:
    """Whether a request with this Host header may proceed on a server bound to bind_host."""
    bind_ip = _ip(bind_host.strip("[]"))
    if bind_ip is None or not bind_ip.is_loopback:
        # Upstream: non-loopback listeners (incl. 0.0.0.0 and names) skip the check entirely.
        return True
    host = split_host_header(host_header)
    addr = _ip(host)
    if addr is not None and (
        addr.is_loopback
        or any(addr in net for net in GO_PRIVATE_NETS if net.version == addr.version)
        or addr.is_unspecified
        or str(addr) in set(local_ips)
    ):
        return True
    return allowed_host(host, hostname)
