#!/usr/bin/env python3
"""Steady, bounded load at the QueryGPT site, to show what users see during a rolling release.

Runs on the controller. A fixed number of workers (--concurrency), each a thread with its own
httpx client and kept-alive connection (as real clients, and the load balancer's, keep theirs),
send requests back to back (closed loop, optional --pause between them) for --seconds, or until
stopped: GET /api/health and POST /api/query {"query": <one of QUESTIONS>, "collection_name":
--collection}, and with --page-share the app's page as a browser loads it (GET /, then each
/assets/ file its index.html names, on the same connection; one request in the counts, failing
when any part fails), mixed by --query-share and --page-share (health takes the rest). At the end it prints requests, failures (by kind, and each
one: when, which path, what), throughput and p50/p95/p99 latency per path; --json prints the same
as JSON. Exits 1 when any request failed, so it can gate a script; 0 otherwise.

    .venv/bin/python benchmarks/load.py https://198.51.100.20 --seconds 120 \\
        --ca lab-acme-root.pem --server-name querygpt.test \\
        --accept-names edge-1.querygpt.test edge-2.querygpt.test --collection lab_demo
    .venv/bin/python benchmarks/load.py https://querygpt.example.com --seconds 0   # until Ctrl-C / SIGTERM

Identity (docs/access-control.md): every API call but /health needs one. The questions carry
`Authorization: Bearer <token>`: --token, or by default the environment's QUERYGPT_TOKEN (the
better way: a command line shows in the process list); several --token values are spread over the
workers (worker i sends the (i mod n)-th), so each worker can be its own user, below the
per-user rate and in-flight limits. Health checks and page loads carry none. A token is made
with `querygpt-backend create-token` on a backend host; in the lab, tests/lab/labview.py's
lab_admin / lab_token make one (benchmarks/rollouts.py does).

From a test (tests put benchmarks/ on sys.path, as for httpprobe):

    from load import LoadRun
    with LoadRun(base_url, ca=ca_file, server_name="querygpt.test",
                 accept_names=["edge-1.querygpt.test", "edge-2.querygpt.test"], collection=name,
                 token=token) as run:
        ...  # the rollout
    assert not run.result.failures, run.result.describe_failures()

Entering the block returns once every worker runs; leaving it stops them: no new requests, and
the ones in flight complete and count.

TLS: verified against --ca (the system's roots when not given); --server-name sets SNI and the
Host header (the URL may name an address). Behind the lab's load balancer each edge has its own
certificate name and the client cannot know which edge answers: with --accept-names the
certificate must still chain to the CA, and one of its subjectAltName entries must match one of
the accepted names (RFC 6125 rules: exact, or a wildcard as the whole leftmost label), checked
on every handshake before a request is sent. Without --accept-names the usual check against the
server name applies.

A request fails when (kind, in the failure records):
    connect   the TCP connection could not be made (refused, unreachable, reset in the handshake)
    tls       the TLS handshake failed: certificate not from the CA, or no accepted name
    timeout   connect, a write or a read waited longer than --timeout (httpx's timeout applies
              to each of these, not to the request as a whole)
    write     the connection broke while the request was sent
    read      the connection broke or closed before the whole response arrived
    http      the response status was not 200 (every path answers 200 when healthy)
    other     anything else the client raised
A request sent on a kept-alive connection that the server closed before any byte of a response
came back (it closed the idle connection as the request went out: a drain's reload, a
keep-alive timeout) is sent once more on a new connection, as browsers and HTTP libraries do
(RFC 9112, 9.3.1: the server cannot have answered it). Such a retry is not a failure; the run
counts them ("stale retries") and records each. The retry's own failure is a failure; so is the
same error on a new connection, or after response bytes arrived.
Latency percentiles are of the requests that succeeded (a timed-out request's latency is the
timeout); each failure record has its own elapsed time. Throughput counts every completed request.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import ssl
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import httpx
from urllib3.util.ssl_match_hostname import CertificateError, match_hostname

HERE = str(Path(__file__).resolve().parent)
if HERE not in sys.path:  # imported as benchmarks.load rather than with benchmarks/ on sys.path
    sys.path.insert(0, HERE)
from httpprobe import percentile  # noqa: E402

HEALTH = "/api/health"
QUERY = "/api/query"
PAGE = "/"  # the app's page as a browser loads it: index.html, then every asset it names
PATHS = (HEALTH, QUERY, PAGE)
ASSET = re.compile(r'(?:src|href)="(/assets/[^"]+)"')
QUESTIONS = (
    "How many orders did each customer place?",
    "Which tables reference the customers table?",
    "List the products that have never been ordered.",
    "What was the total revenue per month last year?",
    "Which columns make up the primary key of the order items table?",
    "Show the ten customers who spent the most.",
)


# --- certificate names ---------------------------------------------------------------------

def certificate_names(cert: dict) -> list[str]:
    """The subjectAltName DNS names and IP addresses of a certificate as ssl.getpeercert() gives it."""
    return [value for kind, value in cert.get("subjectAltName", ()) if kind in ("DNS", "IP Address")]


def check_accepted(cert: dict, accept_names: Sequence[str]) -> None:
    """Raise ssl.SSLCertVerificationError unless one of the certificate's names matches one of
    accept_names."""
    for want in accept_names:
        try:
            match_hostname(cert, want)  # urllib3's copy of CPython's ssl.match_hostname (RFC 6125)
            return
        except CertificateError:
            continue
    raise ssl.SSLCertVerificationError(
        f"certificate names {certificate_names(cert)} match none of the accepted names {list(accept_names)}")


def tls_context(ca: str | Path | None = None, ca_data: str | None = None,
                accept_names: Sequence[str] | None = None) -> ssl.SSLContext:
    """A client context verifying against ca (file) / ca_data (PEM), or the system's roots.

    With accept_names, OpenSSL's hostname check (one name only) is replaced by a check of the
    verified peer certificate against every accepted name, run inside the handshake: a
    connection whose certificate matches none fails before any request is sent on it."""
    context = ssl.create_default_context(cafile=str(ca) if ca else None, cadata=ca_data)
    if accept_names:
        accepted = tuple(accept_names)

        class AcceptingSocket(ssl.SSLSocket):
            def do_handshake(self, block: bool = False) -> None:
                super().do_handshake(block)
                check_accepted(self.getpeercert() or {}, accepted)

        context.check_hostname = False
        context.sslsocket_class = AcceptingSocket
    assert context.verify_mode == ssl.CERT_REQUIRED
    return context


# --- results -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Failure:
    at: float  # seconds from the start of the run to when the request was sent
    kind: str  # connect, tls, timeout, write, read, http, other (see the module docstring)
    path: str
    message: str
    status: int | None = None  # the HTTP status, for kind "http"
    elapsed_ms: float = 0.0  # from sending to the failure
    worker: int = 0

    @property
    def label(self) -> str:
        """The kind, with the status for HTTP failures ("http 503"): what the summary counts."""
        return f"http {self.status}" if self.kind == "http" else self.kind

    def __str__(self) -> str:
        return (f"+{self.at:.3f} s {self.path} {self.label} after {self.elapsed_ms:.0f} ms "
                f"(worker {self.worker}): {self.message}")


@dataclass
class Result:
    base_url: str
    started: str  # wall-clock start of the run, UTC, ISO 8601: failure offsets count from here
    seconds: float  # from the start until the last worker stopped
    concurrency: int
    latencies_ms: dict[str, list[float]] = field(default_factory=dict)  # successful requests, per path
    failures: list[Failure] = field(default_factory=list)
    # Requests sent again after a kept-alive connection closed under them (module docstring);
    # what the first attempt met, recorded like a failure (kind "read" or "write").
    stale_retries: list[Failure] = field(default_factory=list)

    @property
    def ok(self) -> int:
        return sum(len(v) for v in self.latencies_ms.values())

    @property
    def requests(self) -> int:
        """Completed requests, successful or failed."""
        return self.ok + len(self.failures)

    def failures_by_kind(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for f in self.failures:
            counts[f.label] = counts.get(f.label, 0) + 1
        return dict(sorted(counts.items()))

    def stats(self, path: str | None = None) -> dict[str, Any]:
        """Requests, failures, req/s and p50/p95/p99 (ms, None without a success) for one path or all."""
        lat = [x for p, v in self.latencies_ms.items() if path in (None, p) for x in v]
        failed = sum(1 for f in self.failures if path in (None, f.path))
        requests = len(lat) + failed
        out: dict[str, Any] = {"requests": requests, "ok": len(lat), "failures": failed,
                               "rps": requests / self.seconds if self.seconds > 0 else 0.0}
        for q in (50, 95, 99):
            out[f"p{q}_ms"] = percentile(lat, q) if lat else None
        return out

    def summary(self) -> dict[str, Any]:
        """Everything, JSON-ready (what --json prints); times in ms to 0.01, seconds to 0.001."""
        def rounded(stats: dict[str, Any]) -> dict[str, Any]:
            return {k: round(v, 2) if isinstance(v, float) else v for k, v in stats.items()}
        return {"base_url": self.base_url, "started": self.started, "seconds": round(self.seconds, 3),
                "concurrency": self.concurrency, **rounded(self.stats()),
                "failures_by_kind": self.failures_by_kind(), "stale_retries": len(self.stale_retries),
                "paths": {p: rounded(self.stats(p)) for p in PATHS},
                "failure_records": [asdict(f) for f in self.failures]}

    def describe_failures(self, limit: int = 20) -> str:
        """The failures, one a line (the first `limit`): for an assertion message."""
        if not self.failures:
            return "no failures"
        lines = [f"{len(self.failures)} of {self.requests} requests failed "
                 f"(run started {self.started}): {self.failures_by_kind()}"]
        lines += [f"  {f}" for f in self.failures[:limit]]
        if len(self.failures) > limit:
            lines.append(f"  ... and {len(self.failures) - limit} more")
        return "\n".join(lines)

    def report(self) -> str:
        """The human-readable summary the command prints."""
        def ms(value: float | None) -> str:
            return f"{value:>8.1f}" if value is not None else f"{'-':>8}"
        lines = [f"load on {self.base_url}: {self.concurrency} workers for {self.seconds:.1f} s from {self.started}",
                 f"{'path':<12} {'requests':>8} {'failed':>6} {'req/s':>8} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8}"]
        for name, s in [*((p, self.stats(p)) for p in PATHS), ("all", self.stats())]:
            lines.append(f"{name:<12} {s['requests']:>8} {s['failures']:>6} {s['rps']:>8.1f} "
                         f"{ms(s['p50_ms'])} {ms(s['p95_ms'])} {ms(s['p99_ms'])}")
        lines.append(self.describe_failures())
        if self.stale_retries:
            lines.append(f"{len(self.stale_retries)} requests sent again after their kept-alive "
                         "connection closed before any response byte:")
            lines += [f"  {f}" for f in self.stale_retries[:20]]
        return "\n".join(lines)


# --- the run -------------------------------------------------------------------------------

def classify(exc: Exception) -> tuple[str, str]:
    """A failure's kind and a short message (the innermost cause: what the socket or TLS said)."""
    chain = [exc]
    while (nxt := chain[-1].__cause__ or chain[-1].__context__) is not None and nxt not in chain:
        chain.append(nxt)  # type: ignore[arg-type]
    if isinstance(exc, httpx.TimeoutException):
        kind = "timeout"
    elif isinstance(exc, httpx.ConnectError):
        kind = "tls" if any(isinstance(e, ssl.SSLError) for e in chain) else "connect"
    elif isinstance(exc, httpx.WriteError):
        kind = "write"
    elif isinstance(exc, (httpx.ReadError, httpx.RemoteProtocolError)):
        kind = "read"
    else:
        kind = "other"
    root = chain[-1]
    text = root.args[0] if len(root.args) == 1 and isinstance(root.args[0], str) else str(root)
    message = f"{type(root).__name__}: {text}" if text else type(root).__name__
    return kind, message[:300]


def stale_connection(exc: Exception, events: Sequence[str]) -> bool:
    """Whether a request failed on a kept-alive connection the server had closed, before any response.

    `events` are the request's httpcore trace events: no "connect_tcp" means the connection was
    reused; no completed "receive_response_headers" means no response arrived. Only a closed or
    reset connection qualifies (not a timeout, nor a TLS or HTTP error).
    """
    reused = not any(e.startswith("connection.connect_tcp.") for e in events)
    answered = any(e.endswith("receive_response_headers.complete") for e in events)
    return reused and not answered and isinstance(exc, (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError))


class LoadRun:
    """Closed-loop load from `concurrency` threads until stop(), or for `seconds` (None or 0: no limit).

    start() returns once every worker runs; stop() stops them, lets the requests in flight
    complete (they count), and returns the Result, also kept as .result. As a context manager:
    start on entry, stop on exit. snapshot() reads the figures so far while it runs.
    """

    def __init__(self, base_url: str, *, ca: str | Path | None = None, ca_data: str | None = None,
                 server_name: str | None = None, accept_names: Sequence[str] | None = None,
                 collection: str | None = None, concurrency: int = 4, seconds: float | None = None,
                 timeout: float = 60.0, query_share: float = 0.5, pause: float = 0.0,
                 questions: Sequence[str] = QUESTIONS, seed: int | None = None, new_connections: int = 0,
                 page_share: float = 0.0, token: str | Sequence[str] | None = None) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if not 0.0 <= query_share <= 1.0:
            raise ValueError("query_share must be between 0 and 1")
        if not 0.0 <= page_share <= 1.0 - query_share:
            raise ValueError("page_share must be between 0 and 1 - query_share")
        if not 0 <= new_connections <= concurrency:
            raise ValueError("new_connections must be between 0 and concurrency")
        self.base_url = base_url.rstrip("/")
        self.server_name = server_name
        self.collection = collection
        self.concurrency = concurrency
        self.seconds = seconds if seconds else None
        self.timeout = timeout
        self.query_share = query_share
        self.page_share = page_share
        self.pause = pause
        self.questions = tuple(questions)
        self.seed = seed
        # Workers that open a new connection for every request ("Connection: close"), as many
        # different clients do: they meet a host that stopped accepting, which kept-alive
        # clients (reconnecting only when a connection closes) rarely do.
        self.new_connections = new_connections
        # The API token(s) the questions carry: worker i sends the (i mod n)-th (none: no header).
        self._tokens = ((token,) if isinstance(token, str) else tuple(token or ())) if token else ()
        self._context = (tls_context(ca, ca_data, accept_names)
                         if self.base_url.startswith("https://") else None)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._running = threading.Semaphore(0)  # a worker's release: it is up
        self._go = threading.Event()  # the workers' start, once all are up
        self._threads: list[threading.Thread] = []
        self._latencies: dict[str, list[float]] = {p: [] for p in PATHS}
        self._failures: list[Failure] = []
        self._retries: list[Failure] = []
        self._t0 = 0.0
        self._ended: list[float] = []  # when each worker ended
        self._started = ""
        self.result: Result | None = None

    def __enter__(self) -> LoadRun:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> LoadRun:
        """Start the workers; returns once every one of them runs (the run's clock starts then)."""
        if self._threads:
            raise RuntimeError("a LoadRun runs once")
        self._threads = [threading.Thread(target=self._work, args=(i, self._client()), name=f"load-{i}", daemon=True)
                         for i in range(self.concurrency)]
        for t in self._threads:
            t.start()
        for _ in self._threads:
            self._running.acquire()
        self._started = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
        self._t0 = time.monotonic()
        self._go.set()
        return self

    def stop(self) -> Result:
        """Stop sending, wait for the requests in flight, and return the result."""
        self._stop.set()
        return self.wait()

    def wait(self) -> Result:
        """Wait until the workers end (after `seconds`, or after stop() from another thread)."""
        for t in self._threads:
            t.join()
        if self.result is None:
            self.result = self.snapshot()
        return self.result

    def snapshot(self) -> Result:
        """The figures so far (the final ones once the workers have ended)."""
        with self._lock:
            done = len(self._ended) == len(self._threads) > 0
            end = max(self._ended) if done else time.monotonic() if self._t0 else 0.0
            return Result(self.base_url, self._started, end - self._t0, self.concurrency,
                          {p: list(v) for p, v in self._latencies.items()},
                          sorted(self._failures, key=lambda f: f.at),
                          sorted(self._retries, key=lambda f: f.at))

    def _client(self) -> httpx.Client:
        return httpx.Client(
            verify=self._context if self._context is not None else True,
            timeout=httpx.Timeout(self.timeout),
            # One connection per worker, kept alive between its requests.
            limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
            headers={"Host": self.server_name} if self.server_name else None,
            trust_env=False,  # no proxy from the environment between the client and the site
            follow_redirects=False,
        )

    def _send(self, client: httpx.Client, method: str, path: str, body: Any, headers: dict | None,
              extensions: dict | None, worker: int, sent: float,
              assets: list[str] | None = None) -> tuple[str, str, int | None] | None:
        """Send one request (again, once, if a kept-alive connection closed under it); the failure, if any.

        `assets`, when given, receives the /assets/ paths a 200 response's HTML names."""
        for attempt in (1, 2):
            events: list[str] = []
            try:
                resp = client.request(method, self.base_url + path, json=body, headers=headers,
                                      extensions={**(extensions or {}), "trace": lambda name, _: events.append(name)})
            except Exception as exc:  # every failure is a record; a worker never dies of one
                kind, message = classify(exc)
                if attempt == 1 and stale_connection(exc, events):
                    with self._lock:
                        self._retries.append(Failure(round(sent - self._t0, 3), kind, path, message, None,
                                                     round((time.monotonic() - sent) * 1000, 1), worker))
                    continue
                return kind, message, None
            if resp.status_code != 200:
                text = resp.text[:200].replace("\n", " ")
                return "http", f"HTTP {resp.status_code}: {text}", resp.status_code
            if assets is not None:
                assets.extend(dict.fromkeys(ASSET.findall(resp.text)))
            return None
        raise AssertionError("unreachable: the second attempt returns")

    def _work(self, worker: int, client: httpx.Client) -> None:
        rng = random.Random(None if self.seed is None else self.seed + worker)
        extensions = {"sni_hostname": self.server_name} if self.server_name else None
        headers = {"Connection": "close"} if worker < self.new_connections else None
        # only the questions carry the token: /health and the page need no identity
        query_headers = dict(headers or {})
        if self._tokens:
            query_headers["Authorization"] = f"Bearer {self._tokens[worker % len(self._tokens)]}"
        self._running.release()
        self._go.wait()
        end = None if self.seconds is None else self._t0 + self.seconds
        try:
            while not self._stop.is_set() and (end is None or time.monotonic() < end):
                draw = rng.random()
                if draw < self.query_share:
                    path, method = QUERY, "POST"
                    body: Any = {"query": rng.choice(self.questions), "collection_name": self.collection}
                elif draw < self.query_share + self.page_share:
                    path, method, body = PAGE, "GET", None
                else:
                    path, method, body = HEALTH, "GET", None
                sent = time.monotonic()
                page: list[str] = []
                failure = self._send(client, method, path, body, query_headers if path == QUERY else headers,
                                     extensions, worker, sent, page if path == PAGE else None)
                for asset in page:  # a browser fetches what the page names, after the page
                    if failure is not None:
                        break
                    failure = self._send(client, "GET", asset, None, headers, extensions, worker, sent)
                    if failure is not None:
                        kind, message, status = failure
                        failure = (kind, f"{asset}: {message}", status)
                elapsed = (time.monotonic() - sent) * 1000
                with self._lock:
                    if failure is None:
                        self._latencies[path].append(elapsed)
                    else:
                        kind, message, status = failure
                        self._failures.append(Failure(round(sent - self._t0, 3), kind, path, message, status,
                                                      round(elapsed, 1), worker))
                if self.pause:
                    self._stop.wait(self.pause)
        finally:
            client.close()
            with self._lock:
                self._ended.append(time.monotonic())


# --- command line --------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("url", help="the site's base URL, e.g. https://198.51.100.20")
    parser.add_argument("--seconds", type=float, default=30.0, help="0: until Ctrl-C or SIGTERM")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds, for connect and each read or write")
    parser.add_argument("--query-share", type=float, default=0.5, help="share of POST /api/query, 0..1")
    parser.add_argument("--page-share", type=float, default=0.0,
                        help="share of page loads (GET / and its assets), 0..1-query-share")
    parser.add_argument("--collection", help="collection_name of the queries (none: the default collection)")
    parser.add_argument("--pause", type=float, default=0.0, help="seconds each worker waits between requests")
    parser.add_argument("--ca", help="CA bundle (PEM) to verify the site against; default: the system's")
    parser.add_argument("--server-name", help="SNI and Host header, when the URL names an address")
    parser.add_argument("--accept-names", nargs="+", metavar="NAME",
                        help="the certificate must match one of these names (not --server-name)")
    parser.add_argument("--seed", type=int, help="seed the request mix (per worker)")
    parser.add_argument("--new-connections", type=int, default=0, metavar="N",
                        help="N of the workers open a new connection for every request (default 0)")
    parser.add_argument("--token", action="append", metavar="TOKEN",
                        help="API token the questions carry (repeat: one per worker in turn); "
                             "default: the environment's QUERYGPT_TOKEN")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    args = parser.parse_args(argv)
    tokens = args.token or ([os.environ["QUERYGPT_TOKEN"]] if os.environ.get("QUERYGPT_TOKEN") else None)

    run = LoadRun(args.url, ca=args.ca, server_name=args.server_name, accept_names=args.accept_names,
                  collection=args.collection, concurrency=args.concurrency, seconds=args.seconds,
                  timeout=args.timeout, query_share=args.query_share, pause=args.pause, seed=args.seed,
                  new_connections=args.new_connections, page_share=args.page_share, token=tokens)
    on_main = threading.current_thread() is threading.main_thread()
    previous = {}
    if on_main:  # Ctrl-C and SIGTERM end the run early, with its summary
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, lambda *_: run._stop.set())
    try:
        run.start()
        result = run.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if args.json:
        json.dump(result.summary(), sys.stdout, indent=1)
        print()
    else:
        print(result.report())
    return 1 if result.failures else 0


if __name__ == "__main__":
    sys.exit(main())
