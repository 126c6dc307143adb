"""benchmarks/load.py against a local HTTPS site: what it counts, what it calls a failure, and
that it ends.

The site is a threaded HTTP/1.1 server on loopback with certificates from a CA made here. Like
the lab's load balancer in front of edges with names of their own, it answers each new
connection with the next of its certificates in turn (edge-1.querygpt.test, edge-2...), so a
client cannot know which name it will see. Each path can be told to answer a status, drop the
connection, drop it only when it was kept alive ("stale"), hang, or wait before answering; the site counts what it received and answered, so
the load generator's figures are checked against the server's, not against the clock.
"""

from __future__ import annotations

import datetime
import itertools
import json
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

import load  # noqa: E402
from load import HEALTH, PAGE, QUERY, LoadRun  # noqa: E402

# The app's page as the site serves it: index.html naming its hashed assets (one named twice).
PAGE_ASSETS = ("/assets/index-4f2a.js", "/assets/index-9c1d.css")
PAGE_HTML = ('<!doctype html><html><head><script type="module" src="/assets/index-4f2a.js"></script>'
             '<link rel="stylesheet" href="/assets/index-9c1d.css"><link rel="modulepreload" '
             'href="/assets/index-4f2a.js"></head><body><div id="root"></div></body></html>')

EDGE1, EDGE2 = "edge-1.querygpt.test", "edge-2.querygpt.test"
SITE_NAME = "querygpt.test"  # SNI and Host, as a client of the load balancer sends them


# --- certificates --------------------------------------------------------------------------

def _cert(subject: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Certificate | None,
          issuer_key: ec.EllipticCurvePrivateKey, dns: str | None) -> x509.Certificate:
    now = datetime.datetime.now(datetime.timezone.utc)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (x509.CertificateBuilder().subject_name(name)
               .issuer_name(issuer.subject if issuer else name)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(hours=1))
               .not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
                              critical=False))
    if dns is None:  # a CA
        builder = (builder.add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                   .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                                key_encipherment=False, data_encipherment=False,
                                                key_agreement=False, key_cert_sign=True, crl_sign=True,
                                                encipher_only=False, decipher_only=False), critical=True))
    else:
        builder = (builder.add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                   .add_extension(x509.SubjectAlternativeName([x509.DNSName(dns)]), critical=False)
                   .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False))
    return builder.sign(issuer_key, hashes.SHA256())


class Certs:
    """A CA and edge certificates it signed, plus one edge certificate from a CA nobody trusts."""

    def __init__(self, where: Path) -> None:
        self.where = where
        self.ca = where / "ca.pem"
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca = _cert("load test CA", ca_key, None, ca_key, None)
        self.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
        rogue_key = ec.generate_private_key(ec.SECP256R1())
        rogue = _cert("rogue CA", rogue_key, None, rogue_key, None)
        for label, dns, issuer, issuer_key in ((EDGE1, EDGE1, ca, ca_key), (EDGE2, EDGE2, ca, ca_key),
                                               ("rogue", EDGE1, rogue, rogue_key)):
            key = ec.generate_private_key(ec.SECP256R1())
            (where / f"{label}.pem").write_bytes(
                _cert(dns, key, issuer, issuer_key, dns).public_bytes(serialization.Encoding.PEM)
                + key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()))

    def pem(self, label: str) -> Path:
        return self.where / f"{label}.pem"


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return Certs(tmp_path_factory.mktemp("certs"))


# --- the site ------------------------------------------------------------------------------

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive
    wbufsize = -1  # a response in one write, flushed after each request (no Nagle delay between parts)
    server: Site

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self.answer(None)

    def do_POST(self) -> None:
        self.answer(json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0)))))

    def answer(self, body: object) -> None:
        site = self.server
        with site.lock:
            site.received[self.path] += 1
            site.hosts.add(self.headers["Host"])
            site.authorization.setdefault(self.path, Counter())[self.headers.get("Authorization")] += 1
            if body is not None:
                site.bodies.append(body)
        known = self.path in (HEALTH, QUERY, PAGE) or self.path in PAGE_ASSETS
        action = site.actions.get(self.path, 200 if known else 404)
        served = getattr(self, "served", 0)  # requests answered on this connection (one handler each)
        if action == "stale":  # a kept-alive connection closes as the next request arrives on it
            action = "drop" if served else 200
        self.served = served + 1
        if action in ("drop", "hang"):
            if action == "hang":
                site.release.wait(60)
            self.close_connection = True  # no response: the connection closes
            return
        time.sleep(site.delay.get(self.path, 0.0))
        payload = (PAGE_HTML if self.path == PAGE else json.dumps({"status": "ok"})).encode()
        with site.lock:
            site.answered[self.path] += 1
        self.send_response(int(action))
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


class Site(ThreadingHTTPServer):
    """HTTPS on loopback; each new connection gets the next certificate in turn."""

    daemon_threads = True

    def __init__(self, chains: list[Path]) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.lock = threading.Lock()
        self.received: Counter[str] = Counter()
        self.answered: Counter[str] = Counter()
        self.handshakes: Counter[str] = Counter()  # completed, by the certificate's file name
        self.sni: set[str | None] = set()
        self.hosts: set[str] = set()
        self.bodies: list[object] = []
        self.authorization: dict[str, Counter[str | None]] = {}  # path -> Authorization headers received
        self.actions: dict[str, int | str] = {}
        self.delay: dict[str, float] = {}
        self.release = threading.Event()
        self.contexts = []
        for chain in chains:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(chain)
            context.sni_callback = self._sni
            self.contexts.append((chain.stem, context))
        self._turn = itertools.cycle(self.contexts)
        self.url = f"https://127.0.0.1:{self.server_address[1]}"

    def _sni(self, _sock: ssl.SSLObject, name: str | None, _ctx: ssl.SSLContext) -> None:
        with self.lock:
            self.sni.add(name)

    def finish_request(self, request, client_address) -> None:  # type: ignore[no-untyped-def]
        with self.lock:
            label, context = next(self._turn)
        try:  # the handshake in the connection's own thread, not the accept loop
            tls = context.wrap_socket(request, server_side=True)
        except OSError:
            return  # the client rejected the certificate (or the reverse)
        with self.lock:
            self.handshakes[label] += 1
        try:
            super().finish_request(tls, client_address)
        finally:
            tls.close()


@pytest.fixture
def site(certs: Certs) -> Iterator[Callable[..., Site]]:
    sites: list[Site] = []

    def start(*labels: str) -> Site:
        s = Site([certs.pem(label) for label in labels or (EDGE1, EDGE2)])
        threading.Thread(target=s.serve_forever, daemon=True).start()
        sites.append(s)
        return s

    yield start
    for s in sites:
        s.release.set()
        s.shutdown()
        s.server_close()


def run_for(url: str, certs: Certs, seconds: float, **kw) -> load.Result:
    kw.setdefault("accept_names", [EDGE1, EDGE2])
    kw.setdefault("server_name", SITE_NAME)
    kw.setdefault("ca", certs.ca)
    with LoadRun(url, seconds=seconds, **kw) as run:
        run.wait()
    assert run.result is not None
    return run.result


# --- tests ---------------------------------------------------------------------------------

def test_counts_and_percentiles_are_those_of_the_requests_the_site_answered(site, certs) -> None:
    s = site()
    s.delay[QUERY] = 0.1
    result = run_for(s.url, certs, 1.5, concurrency=2, collection="shop", seed=1)
    assert result.failures == [], result.describe_failures()
    health, query = result.stats(HEALTH), result.stats(QUERY)
    assert health["requests"] == s.answered[HEALTH] > 0
    assert query["requests"] == s.answered[QUERY] > 0
    assert result.requests == result.ok == sum(s.answered.values())
    # Every query waited 100 ms at the site: no percentile of its latencies can be shorter.
    assert 100 <= query["p50_ms"] <= query["p95_ms"] <= query["p99_ms"] <= max(result.latencies_ms[QUERY])
    assert health["p50_ms"] <= health["p95_ms"] <= health["p99_ms"] <= max(result.latencies_ms[HEALTH])
    assert result.stats()["rps"] == pytest.approx(result.requests / result.seconds)
    assert all(b == {"query": b["query"], "collection_name": "shop"} and b["query"] in load.QUESTIONS
               for b in s.bodies)
    assert s.sni == {SITE_NAME} and s.hosts == {SITE_NAME}
    # Both edges' certificates were accepted, and each worker kept its one connection alive.
    assert s.handshakes == {EDGE1: 1, EDGE2: 1}


def test_new_connection_workers_open_a_connection_per_request(site, certs) -> None:
    s = site()
    result = run_for(s.url, certs, 0.6, concurrency=2, query_share=0.0, pause=0.05, new_connections=1)
    assert result.failures == [], result.describe_failures()
    # kept alive, two workers shake hands twice in all (the test above); here the second worker
    # shook hands for each of its requests
    assert 4 <= sum(s.handshakes.values()) <= result.requests
    with pytest.raises(ValueError, match="new_connections"):
        LoadRun(s.url, concurrency=1, new_connections=2)


def test_query_share_sets_the_mix(site, certs) -> None:
    s = site()
    run_for(s.url, certs, 0.5, concurrency=1, query_share=0.0)
    assert set(s.received) == {HEALTH}
    health = s.received[HEALTH]
    run_for(s.url, certs, 0.5, concurrency=1, query_share=1.0)
    assert s.received[HEALTH] == health and s.received[QUERY] == len(s.bodies) > 0


def test_a_status_other_than_200_is_a_failure_with_its_status(site, certs) -> None:
    s = site()
    s.actions[QUERY] = 503
    result = run_for(s.url, certs, 1.0, concurrency=2, seed=2, pause=0.01)
    assert result.stats(HEALTH)["failures"] == 0 and result.stats(HEALTH)["ok"] == s.answered[HEALTH]
    assert len(result.failures) == s.answered[QUERY] > 0
    assert {(f.kind, f.status, f.path) for f in result.failures} == {("http", 503, QUERY)}
    assert result.failures_by_kind() == {"http 503": s.answered[QUERY]}
    assert all(f.message.startswith("HTTP 503") and 0 <= f.at <= result.seconds for f in result.failures)
    assert "http 503" in result.describe_failures()


def test_a_dropped_connection_is_a_read_failure(site, certs) -> None:
    s = site()
    s.actions[HEALTH] = "drop"
    result = run_for(s.url, certs, 0.5, concurrency=2, query_share=0.0, pause=0.01)
    assert len(result.failures) == s.received[HEALTH] > 0
    assert {f.kind for f in result.failures} == {"read"}
    assert all(f.message for f in result.failures)
    # each was a new connection, so none was sent again
    assert result.stale_retries == []


def test_a_kept_alive_connection_closed_under_a_request_is_retried_once_on_a_new_one(site, certs) -> None:
    s = site()
    s.actions[HEALTH] = s.actions[QUERY] = "stale"
    result = run_for(s.url, certs, 0.6, concurrency=2, seed=3, pause=0.01, collection="shop")
    assert result.failures == [], result.describe_failures()
    # every request but a worker's first met a closing kept-alive connection, and was answered
    # on a new one: the site received each of those twice
    assert result.ok == sum(s.answered.values()) > 4
    assert len(result.stale_retries) == sum(s.received.values()) - result.ok >= result.ok - 2
    assert {f.kind for f in result.stale_retries} == {"read"}
    assert len(s.bodies) == s.received[QUERY]  # a query sent again carried its body again
    assert "sent again" in result.report()
    assert result.summary()["stale_retries"] == len(result.stale_retries)


def test_a_refused_connection_is_a_connect_failure(certs) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens once the socket is closed
    result = run_for(f"https://127.0.0.1:{port}", certs, 0.3, concurrency=1, pause=0.02)
    assert result.failures and {f.kind for f in result.failures} == {"connect"}
    assert result.ok == 0


def test_a_certificate_matching_no_accepted_name_fails_before_any_request(site, certs) -> None:
    s = site()
    result = run_for(s.url, certs, 0.3, concurrency=2, accept_names=["edge-3.querygpt.test"], pause=0.02)
    assert result.failures and {f.kind for f in result.failures} == {"tls"}
    assert all("match none of the accepted names" in f.message for f in result.failures)
    assert sum(s.received.values()) == 0
    # One accepted name: the connections that get the other edge fail, the others do not.
    result = run_for(s.url, certs, 0.5, concurrency=2, accept_names=[EDGE2], pause=0.02)
    assert result.ok == sum(s.answered.values()) > 0
    assert result.failures and {f.kind for f in result.failures} == {"tls"}
    assert EDGE1 in result.failures[0].message


def test_an_accepted_name_from_another_ca_fails(site, certs) -> None:
    s = site("rogue")  # edge-1's name, signed by a CA the client does not trust
    result = run_for(s.url, certs, 0.3, concurrency=1, pause=0.02)
    assert result.failures and {f.kind for f in result.failures} == {"tls"}
    assert all("certificate verify failed" in f.message for f in result.failures)
    assert sum(s.received.values()) == 0


def test_without_accept_names_the_server_name_is_checked(site, certs) -> None:
    s = site(EDGE1)
    ok = run_for(s.url, certs, 0.3, concurrency=1, accept_names=None, server_name=EDGE1,
                 ca=None, ca_data=certs.ca.read_text())  # the CA as PEM text, as tests/lab has it
    assert ok.failures == [] and ok.ok > 0
    bad = run_for(s.url, certs, 0.3, concurrency=1, accept_names=None, server_name=SITE_NAME, pause=0.02)
    assert bad.failures and {f.kind for f in bad.failures} == {"tls"}


def test_a_certificate_matches_when_one_of_its_names_covers_one_accepted_name() -> None:
    def accepted(sans: list[tuple[str, str]], names: list[str]) -> bool:
        try:
            load.check_accepted({"subjectAltName": tuple(sans)}, names)
            return True
        except ssl.SSLCertVerificationError:
            return False

    assert accepted([("DNS", "edge-2.querygpt.test")], ["edge-1.querygpt.test", "EDGE-2.querygpt.test"])
    assert accepted([("DNS", "*.querygpt.test")], ["edge-1.querygpt.test"])
    assert not accepted([("DNS", "*.querygpt.test")], ["a.edge-1.querygpt.test", "querygpt.test"])
    assert not accepted([("DNS", "edge-1.querygpt.test")], ["edge-2.querygpt.test"])
    assert accepted([("IP Address", "198.51.100.20")], ["198.51.100.20"])
    assert not accepted([("IP Address", "198.51.100.20")], ["198.51.100.21"])
    assert not accepted([], ["edge-1.querygpt.test"])


def test_the_run_ends_within_its_duration_and_the_timeout(site, certs) -> None:
    s = site()
    s.actions[HEALTH] = "hang"  # never answers
    started = time.monotonic()
    result = run_for(s.url, certs, 0.5, concurrency=2, query_share=0.0, timeout=0.5)
    # Bounded by seconds + timeout; the slack is for a busy machine, not a measurement.
    assert time.monotonic() - started < 0.5 + 0.5 + 15
    assert result.failures and {f.kind for f in result.failures} == {"timeout"}
    assert all(f.elapsed_ms >= 400 for f in result.failures)


def test_leaving_the_block_lets_the_requests_in_flight_complete(site, certs) -> None:
    s = site()
    s.delay[HEALTH] = 0.3
    with LoadRun(s.url, ca=certs.ca, server_name=SITE_NAME, accept_names=[EDGE1, EDGE2],
                 concurrency=3, query_share=0.0) as run:  # no duration: until the block ends
        deadline = time.monotonic() + 30
        while s.received[HEALTH] < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
    result = run.result
    assert result is not None and result.failures == [], result.describe_failures()
    # Every request the site received was answered and counted: none was cut off.
    assert result.requests == s.answered[HEALTH] == s.received[HEALTH] >= 3


def test_only_the_questions_carry_the_token_one_per_worker_in_turn(site, certs) -> None:
    s = site()
    result = run_for(s.url, certs, 0.8, concurrency=3, pause=0.02, page_share=0.2, seed=3,
                     token=["qgpt_first", "qgpt_second"])
    assert result.failures == [], result.describe_failures()
    # workers 0 and 2 send the first token, worker 1 the second; /health and the page none
    assert set(s.authorization[QUERY]) == {"Bearer qgpt_first", "Bearer qgpt_second"}, s.authorization
    assert {path: set(seen) for path, seen in s.authorization.items() if path != QUERY} == {
        path: {None} for path in s.authorization if path != QUERY}
    s2 = site()
    run_for(s2.url, certs, 0.3, concurrency=1, pause=0.02, query_share=1.0, token="qgpt_only")
    assert set(s2.authorization[QUERY]) == {"Bearer qgpt_only"}
    s3 = site()
    run_for(s3.url, certs, 0.3, concurrency=1, pause=0.02, query_share=1.0)
    assert set(s3.authorization[QUERY]) == {None}


def test_the_command_takes_the_token_from_the_option_or_the_environment(site, certs, monkeypatch, capsys) -> None:
    args = ["--seconds", "0.3", "--concurrency", "1", "--ca", str(certs.ca), "--server-name", SITE_NAME,
            "--accept-names", EDGE1, EDGE2, "--pause", "0.01", "--query-share", "1", "--json"]
    monkeypatch.setenv("QUERYGPT_TOKEN", "qgpt_from_env")
    s = site()
    assert load.main([s.url, *args]) == 0
    assert set(s.authorization[QUERY]) == {"Bearer qgpt_from_env"}
    s = site()
    assert load.main([s.url, *args, "--token", "qgpt_from_option"]) == 0
    assert set(s.authorization[QUERY]) == {"Bearer qgpt_from_option"}
    monkeypatch.delenv("QUERYGPT_TOKEN")
    s = site()
    assert load.main([s.url, *args]) == 0
    assert set(s.authorization[QUERY]) == {None}
    capsys.readouterr()


def test_the_command_exits_non_zero_on_failures(site, certs, capsys) -> None:
    s = site()
    args = [s.url, "--seconds", "0.5", "--concurrency", "2", "--ca", str(certs.ca), "--server-name", SITE_NAME,
            "--accept-names", EDGE1, EDGE2, "--pause", "0.01"]
    assert load.main([*args, "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["requests"] == sum(s.answered.values()) > 0
    assert summary["failures"] == 0 and summary["failure_records"] == []
    assert set(summary["paths"]) == {HEALTH, QUERY, PAGE}

    s.actions[QUERY] = 503
    assert load.main([*args, "--query-share", "1"]) == 1
    out = capsys.readouterr().out
    assert "failed" in out and "http 503" in out and QUERY in out


def test_the_command_without_a_duration_runs_until_sigterm(site, certs) -> None:
    s = site()
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "benchmarks" / "load.py"), s.url, "--seconds", "0", "--ca", str(certs.ca),
         "--server-name", SITE_NAME, "--accept-names", EDGE1, EDGE2, "--pause", "0.01", "--json"],
        stdout=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while sum(s.answered.values()) < 5 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, out
    summary = json.loads(out)
    assert summary["requests"] == sum(s.answered.values()) >= 5 and summary["failures"] == 0


def test_a_page_load_fetches_the_page_then_each_asset_it_names(site, certs) -> None:
    s = site()
    result = run_for(s.url, certs, 0.6, concurrency=2, query_share=0.0, page_share=1.0, pause=0.01)
    assert result.failures == [], result.describe_failures()
    pages = result.stats(PAGE)["ok"]
    assert pages == s.answered[PAGE] > 0 and result.requests == pages
    # each asset once per page, though the page names one of them twice
    assert all(s.answered[a] == pages for a in PAGE_ASSETS), s.answered


def test_a_page_whose_asset_is_missing_fails_naming_the_asset(site, certs) -> None:
    s = site()
    s.actions[PAGE_ASSETS[1]] = 404
    result = run_for(s.url, certs, 0.5, concurrency=1, query_share=0.0, page_share=1.0, pause=0.01)
    assert len(result.failures) == s.answered[PAGE] > 0
    assert {(f.path, f.status) for f in result.failures} == {(PAGE, 404)}
    assert all(f.message.startswith(PAGE_ASSETS[1] + ": HTTP 404") for f in result.failures)
    with pytest.raises(ValueError, match="page_share"):
        LoadRun(s.url, query_share=0.6, page_share=0.5)
