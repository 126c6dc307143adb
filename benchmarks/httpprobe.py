#!/usr/bin/env python3
"""HTTP latency probe, standard library only, so it also runs on lab hosts with Debian's python3.

    httpprobe.py keepalive URL [--requests N] [--ca FILE] [--server-name NAME]
        N requests on one kept-alive connection and N on a new connection each; prints JSON
        with both latency lists (ms) and their medians.
    httpprobe.py load URL [URL ...] --connections C --seconds S [--ca FILE] [--server-name NAME]
        C connections (spread over the URLs), each a thread sending requests back to back on
        its own kept-alive connection for S seconds; prints JSON: requests, failures,
        latencies (ms).

HTTPS URLs are verified against --ca (the lab's roots); --server-name sets SNI and Host when
the URL names an address. Used by tests/app, tests/lab (the keep-alive stall test) and
benchmarks/edge_overhead.py.
"""

from __future__ import annotations

import argparse
import http.client
import json
import ssl
import statistics
import sys
import threading
import time
from urllib.parse import urlsplit


class Target:
    def __init__(self, url: str, ca: str | None = None, server_name: str | None = None) -> None:
        parts = urlsplit(url)
        self.https = parts.scheme == "https"
        self.host = parts.hostname or ""
        self.port = parts.port or (443 if self.https else 80)
        self.path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self.server_name = server_name or self.host
        self.context = ssl.create_default_context(cafile=ca) if self.https else None

    def get(self, conn: http.client.HTTPConnection) -> int:
        """One GET on conn; the body is read whole so the connection can be reused."""
        conn.request("GET", self.path, headers={"Host": self.server_name})
        resp = conn.getresponse()
        resp.read()
        if resp.getheader("Connection", "").lower() == "close":
            conn.close()
        return resp.status


class _SNIConnection(http.client.HTTPSConnection):
    """HTTPSConnection to an address, with SNI and hostname check on a separate name."""

    def __init__(self, host: str, port: int, server_name: str, **kw) -> None:
        super().__init__(host, port, **kw)
        self._server_name = server_name

    def connect(self) -> None:
        http.client.HTTPConnection.connect(self)
        self.sock = self._context.wrap_socket(self.sock, server_hostname=self._server_name)  # type: ignore[attr-defined]


def _connection(target: Target, timeout: float = 10.0) -> http.client.HTTPConnection:
    if target.context is not None:
        return _SNIConnection(target.host, target.port, target.server_name, timeout=timeout,
                              context=target.context)
    return http.client.HTTPConnection(target.host, target.port, timeout=timeout)


def _timed_get(target: Target, conn: http.client.HTTPConnection) -> float:
    start = time.perf_counter()
    status = target.get(conn)
    elapsed = (time.perf_counter() - start) * 1000
    if status != 200:
        raise RuntimeError(f"{target.path} answered {status}")
    return elapsed


def keepalive(target: Target, requests: int) -> dict:
    """Latency on one kept-alive connection against a new connection per request.

    The kept-alive connection is opened and used once before timing, so neither list
    includes a handshake the other lacks except the new connection's own (which is the
    point of comparison: a kept-alive request must not be slower than a fresh one)."""
    conn = _connection(target)
    target.get(conn)
    kept = [_timed_get(target, conn) for _ in range(requests)]
    conn.close()
    fresh = []
    for _ in range(requests):
        c = _connection(target)
        fresh.append(_timed_get(target, c))
        c.close()
    return {"kept_alive_ms": kept, "new_connection_ms": fresh,
            "kept_alive_p50": statistics.median(kept), "new_connection_p50": statistics.median(fresh)}


def load(targets: list[Target], connections: int, seconds: float) -> dict:
    """Closed-loop load: each connection sends its next request when the last one ends.
    Connections are spread round-robin over the targets (e.g. every backend, as nginx
    spreads its upstream connections)."""
    latencies: list[float] = []
    failures = 0
    lock = threading.Lock()
    deadline = time.perf_counter() + seconds

    def worker(target: Target) -> None:
        nonlocal failures
        mine: list[float] = []
        bad = 0
        conn = _connection(target)
        while time.perf_counter() < deadline:
            try:
                mine.append(_timed_get(target, conn))
            except (OSError, http.client.HTTPException, RuntimeError):
                bad += 1
                conn.close()
                conn = _connection(target)
        conn.close()
        with lock:
            latencies.extend(mine)
            failures += bad

    threads = [threading.Thread(target=worker, args=(targets[i % len(targets)],)) for i in range(connections)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    return {"requests": len(latencies), "failures": failures, "seconds": elapsed,
            "latencies_ms": latencies}


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))  # ceil without floats drifting
    return ordered[int(rank) - 1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=["keepalive", "load"])
    parser.add_argument("url", nargs="+", help="load spreads its connections over every URL given")
    parser.add_argument("--requests", type=int, default=30)
    parser.add_argument("--connections", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--ca")
    parser.add_argument("--server-name")
    args = parser.parse_args(argv)
    targets = [Target(url, ca=args.ca, server_name=args.server_name) for url in args.url]
    if args.mode == "keepalive":
        result = keepalive(targets[0], args.requests)
    else:
        result = load(targets, args.connections, args.seconds)
    json.dump(result, sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
