"""Verify the nginx role on a converged instance: what a user, an operator and Prometheus see."""

import io
import json
import os
import re
import shlex
import time
from pathlib import Path

import pytest

testinfra_hosts = ["edge"]

NAME = "edge.querygpt.test"
RESOLVE = f"--resolve {NAME}:443:127.0.0.1 --resolve {NAME}:80:127.0.0.1"
ROOT = "/var/tmp/pebble-root.pem"
WAF_REFUSAL = {"detail": "Forbidden: the edge refused this request. If it is legitimate, report it with its X-Request-ID"}
AUDIT = "querygpt-waf-audit"


@pytest.fixture(scope="module")
def private_ip(host):
    return host.ansible("setup", "filter=ansible_default_ipv4")["ansible_facts"]["ansible_default_ipv4"]["address"]


@pytest.fixture(scope="module")
def pebble_root(host):
    """The root pebble generated at its start (what lab clients fetch to trust the edges)."""
    host.check_output(f"curl -sf --cacert /etc/pebble/ca.crt https://127.0.0.1:15000/roots/0 -o {ROOT}")
    return ROOT


def curl(host, args):
    """(status, headers lower-cased, body) of a request made on the instance."""
    out = host.check_output(f"curl -s -D /tmp/h -o /tmp/b -w '%{{http_code}}' {RESOLVE} {args}")
    headers = {}
    for line in host.check_output("cat /tmp/h").splitlines()[1:]:
        if ":" in line:
            key, value = line.split(":", 1)
            headers[key.strip().lower()] = value.strip()
    return int(out), headers, host.check_output("cat /tmp/b")


def timed_curl(host, args):
    """curl() and the seconds the request took (curl's time_total)."""
    out = host.check_output(f"curl -s -D /tmp/h -o /tmp/b -w '%{{http_code}} %{{time_total}}' {RESOLVE} {args}")
    status, seconds = out.split()
    headers = {}
    for line in host.check_output("cat /tmp/h").splitlines()[1:]:
        if ":" in line:
            key, value = line.split(":", 1)
            headers[key.strip().lower()] = value.strip()
    return int(status), headers, host.check_output("cat /tmp/b"), float(seconds)


def header_lines(host, path, name):
    """Every value of header `name` in a curl -D file (curl() above keeps only the last one)."""
    return [line.split(":", 1)[1].strip() for line in host.check_output(f"cat {path}").splitlines()
            if line.lower().startswith(name + ":")]


def served_cert(host, option=""):
    return host.run(
        f"openssl s_client -connect 127.0.0.1:443 -servername {NAME} {option} </dev/null 2>/dev/null"
        " | openssl x509 -noout -issuer -subject -serial -ext subjectAltName"
    )


def test_packages_and_services(host):
    for package in ("nginx", "certbot", "prometheus-nginx-exporter"):
        assert host.package(package).is_installed
    for service in ("nginx", "prometheus-nginx-exporter"):
        assert host.service(service).is_running and host.service(service).is_enabled
    assert host.service("certbot.timer").is_enabled


def test_certificate_issued_by_pebble_and_trusted(host, pebble_root):
    cert = served_cert(host)
    assert cert.rc == 0, cert.stderr
    assert "Pebble Intermediate CA" in cert.stdout
    assert f"DNS:{NAME}" in cert.stdout and "DNS:www.querygpt.test" in cert.stdout
    # Full chain, name and validity checked against pebble's root only (not the system store).
    status, _, _ = curl(host, f"--cacert {pebble_root} --capath /nonexistent https://{NAME}/")
    assert status == 200
    for name in ("fullchain.pem", "privkey.pem"):
        link = host.check_output(f"readlink /etc/nginx/tls/{NAME}/{name}")
        assert link == f"/etc/letsencrypt/live/{NAME}/{name}"
    renewal = host.file("/etc/letsencrypt/renewal/edge.querygpt.test.conf").content_string
    assert "server = https://127.0.0.1:14000/dir" in renewal
    assert "authenticator = webroot" in renewal


def test_renewal_reloaded_nginx_with_a_new_serial(host):
    record = json.loads(host.file("/var/tmp/molecule-nginx-renewal.json").content_string)
    assert record["before"] != record["after"]
    assert served_cert(host).stdout.splitlines()[2] == record["after"]
    hook = host.file("/etc/letsencrypt/renewal-hooks/deploy/50-querygpt-reload-nginx")
    assert hook.mode == 0o755 and "nginx -t" in hook.content_string


def test_tls_versions(host):
    assert served_cert(host, "-tls1_2").rc == 0
    assert served_cert(host, "-tls1_3").rc == 0
    assert host.run(f"openssl s_client -connect 127.0.0.1:443 -servername {NAME} -tls1_1 </dev/null").rc != 0


def test_http_redirects_to_https_except_the_acme_challenge(host):
    status, headers, _ = curl(host, f"http://{NAME}/query?x=1")
    assert status == 301 and headers["location"] == f"https://{NAME}/query?x=1"
    host.check_output("echo token > /var/www/acme/.well-known/acme-challenge/molecule-probe"
                      " || (mkdir -p /var/www/acme/.well-known/acme-challenge"
                      " && echo token > /var/www/acme/.well-known/acme-challenge/molecule-probe)")
    status, _, body = curl(host, f"http://{NAME}/.well-known/acme-challenge/molecule-probe")
    assert status == 200 and body == "token"


def test_security_headers(host):
    status, headers, _ = curl(host, f"-k https://{NAME}/")
    assert status == 200
    # side_effect.yml changed nginx_hsts_max_age to one year
    assert headers["strict-transport-security"] == "max-age=31536000"
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["x-frame-options"] == "DENY"
    assert "default-src 'self'" in headers["content-security-policy"]
    assert "referrer-policy" in headers
    assert "server" in headers and "/" not in headers["server"]  # server_tokens off
    # also on errors and API responses
    assert "strict-transport-security" in curl(host, f"-k https://{NAME}/assets/missing.js")[1]
    assert "strict-transport-security" in curl(host, f"-k https://{NAME}/api/health")[1]


def test_api_reaches_the_backend_with_the_prefix_stripped(host):
    status, headers, body = curl(host, f"-k -H 'X-Request-ID: molecule-42' https://{NAME}/api/health")
    assert status == 200
    answer = json.loads(body)
    assert answer["stub"] and answer["path"] == "/health"
    assert answer["request_id"] == "molecule-42" and headers["x-request-id"] == "molecule-42"
    assert answer["forwarded_proto"] == "https"
    assert headers["cache-control"] == "private, max-age=60"  # the backend decides
    # a generated id when the client sends none (or a malformed one)
    _, headers, body = curl(host, f"-k -H 'X-Request-ID: bad id!' https://{NAME}/api/health")
    generated = json.loads(body)["request_id"]
    assert len(generated) == 32 and generated == headers["x-request-id"]
    _, _, body = curl(host, f"-k -X POST --data-binary 'q' https://{NAME}/api/upload")
    assert json.loads(body)["path"] == "/upload"


def test_passive_failover_over_a_backend_that_fails_verification(host):
    """The second upstream server (127.0.0.1:8001) presents the backends' name from another CA:
    nginx refuses it as it would a dead backend, and every request still succeeds on the stub,
    whose certificate the internal CA signed (docs/architecture.md, "Internal TLS")."""
    host.check_output("truncate -s 0 /var/log/nginx/error.log")
    # Until nginx has tried the impostor (an earlier test may have it skipped for fail_timeout).
    deadline = time.monotonic() + 30
    while "upstream SSL certificate verify error" not in host.file("/var/log/nginx/error.log").content_string:
        assert time.monotonic() < deadline, "nginx never tried the impostor"
        assert curl(host, f"-k https://{NAME}/api/health")[0] == 200
        time.sleep(0.5)
    for _ in range(6):
        assert curl(host, f"-k https://{NAME}/api/health")[0] == 200
    conf = host.file("/etc/nginx/nginx.conf").content_string
    assert "server 127.0.0.1:8000 " in conf and "server 127.0.0.1:8001 " in conf
    assert "keepalive 32;" in conf
    assert "proxy_pass https://querygpt_backend/health;" in conf and "proxy_pass http://querygpt_backend" not in conf
    errors = host.file("/var/log/nginx/error.log").content_string
    assert "upstream SSL certificate verify error" in errors and '"https://127.0.0.1:8001/health"' in errors, errors
    assert '"https://127.0.0.1:8000/health"' not in errors, errors


def test_frontend_spa_and_caching(host):
    status, headers, body = curl(host, f"-k https://{NAME}/")
    assert status == 200 and "QueryGPT fixture" in body and headers["cache-control"] == "no-cache"
    status, headers, body = curl(host, f"-k https://{NAME}/some/client/route")
    assert status == 200 and "QueryGPT fixture" in body and headers["cache-control"] == "no-cache"
    status, headers, _ = curl(host, f"-k https://{NAME}/assets/index-3f2a9c1b.js")
    assert status == 200 and headers["cache-control"] == "public, max-age=31536000, immutable"
    assert curl(host, f"-k https://{NAME}/assets/missing.js")[0] == 404


def test_only_the_public_api_is_routed(host):
    # the stub backend answers every path: a 404 here is the edge's own, in the API's shape
    for path in ("/api/ready", "/api/metrics", "/api/docs", "/api/openapi.json", "/api/health/../ready"):
        status, headers, body = curl(host, f"-k --path-as-is https://{NAME}{path}")
        assert (status, json.loads(body)) == (404, {"detail": "Not Found"}), (path, body)
        assert headers["content-type"] == "application/json" and "strict-transport-security" in headers


# --- the API of docs/access-control.md: each path with exactly its methods -----------------------
USER = "alice.o-brien_2"
TOKEN = "qgpt_" + "Zq3-x_9KpL2mN8vB4cD6fG1hJ5kR7tY0wE2aS4dF6gH"  # shaped like a real one: 43 base64url
DOCUMENT = "0b1c2d3e-4f50-4a6b-8c7d-9e0f1a2b3c4d"
TOKEN_ID = "5e6f7a8b-9c0d-4e1f-8a2b-3c4d5e6f7a8b"
ROUTES = [  # (path at the edge, path at the backend, the methods it serves)
    ("/api/auth/login", "/auth/login", ["POST"]),
    ("/api/auth/logout", "/auth/logout", ["POST"]),
    ("/api/auth/me", "/auth/me", ["GET", "HEAD"]),
    ("/api/users", "/users", ["GET", "HEAD", "POST"]),
    (f"/api/users/{USER}", f"/users/{USER}", ["PATCH"]),
    (f"/api/users/{USER}/grants/ecommerce", f"/users/{USER}/grants/ecommerce", ["PUT", "DELETE"]),
    ("/api/tokens", "/tokens", ["GET", "HEAD", "POST"]),
    (f"/api/tokens/{TOKEN_ID}", f"/tokens/{TOKEN_ID}", ["DELETE"]),
    ("/api/collections", "/collections", ["GET", "HEAD", "POST"]),
    ("/api/collections/ecommerce/documents", "/collections/ecommerce/documents", ["GET", "HEAD"]),
    ("/api/history", "/history", ["GET", "HEAD"]),
    (f"/api/documents/{DOCUMENT}", f"/documents/{DOCUMENT}", ["DELETE"]),
    ("/api/audit", "/audit", ["GET", "HEAD"]),
]
METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


def request(host, method, path, extra=""):
    """curl() with the method (HEAD as curl -I: no body to wait for)."""
    how = "-I" if method == "HEAD" else f"-X {method}"
    body = "" if method in ("GET", "HEAD", "DELETE") else "-H 'Content-Type: application/json' --data '{}'"
    return curl(host, f"-k {how} {body} {extra} https://{NAME}{path}")


@pytest.mark.parametrize(("path", "upstream", "allowed"), ROUTES, ids=[r[0] for r in ROUTES])
def test_each_api_path_serves_exactly_its_methods(host, path, upstream, allowed):
    for method in METHODS:
        status, headers, body = request(host, method, path)
        if method in allowed:
            assert status == 200, (method, path, status, body)
            if method != "HEAD":
                answer = json.loads(body)
                assert (answer["method"], answer["path"]) == (method, upstream), answer
        else:
            # the edge's own 405, before the WAF's verdict: JSON, naming the methods the path serves
            assert status == 405, (method, path, status, body)
            assert headers["allow"] == ", ".join(allowed), (method, path, headers)
            assert headers["content-type"] == "application/json" and "strict-transport-security" in headers
            if method != "HEAD":
                assert json.loads(body) == {"detail": "Method Not Allowed"}


def test_a_query_string_reaches_the_backend(host):
    for path, upstream in (("/api/tokens?all=true", "/tokens?all=true"), ("/api/audit?limit=5&before=9", "/audit?limit=5&before=9"),
                           ("/api/history?collection=ecommerce", "/history?collection=ecommerce")):
        status, _, body = curl(host, f"-k 'https://{NAME}{path}'")
        assert status == 200 and json.loads(body)["path"] == upstream, body


def test_names_the_backend_could_never_accept_stop_at_the_edge(host):
    for method, path in (("PATCH", "/api/users/Al"), ("PATCH", "/api/users/.hidden"), ("PATCH", "/api/users/a"),
                         ("PUT", f"/api/users/{USER}/grants/not%20a%20name"), ("DELETE", "/api/tokens/42"),
                         ("GET", "/api/users/alice/tokens"), ("POST", "/api/auth/register")):
        status, _, body = request(host, method, path)
        assert (status, json.loads(body)) == (404, {"detail": "Not Found"}), (method, path, body)


def test_sessions_and_tokens_pass_through_and_are_never_cached(host):
    cookie = "querygpt_session=Zk3vQ9x_2Lp-MN8a.0f1e2d3c4b5a69788796a5b4c3d2e1f0"
    status, headers, body = curl(host, f"-k -H 'Cookie: {cookie}' -H 'Authorization: Bearer {TOKEN}'"
                                       f" https://{NAME}/api/auth/me")
    assert status == 200, body
    answer = json.loads(body)
    assert answer["cookie"] == cookie and answer["authorization"] == f"Bearer {TOKEN}"
    assert headers["set-cookie"] == "querygpt_session=stub.mac; Secure; HttpOnly; SameSite=Strict; Path=/api"
    for method, path in (("POST", "/api/auth/login"), ("POST", "/api/auth/logout"), ("GET", "/api/auth/me"),
                         ("GET", "/api/tokens"), ("POST", "/api/tokens"), ("DELETE", f"/api/tokens/{TOKEN_ID}")):
        status, _, _ = request(host, method, path, f"-H 'Authorization: Bearer {TOKEN}'")
        assert status == 200
        assert header_lines(host, "/tmp/h", "cache-control") == ["no-store"], (method, path)
    # elsewhere the backend's own Cache-Control stands
    request(host, "GET", "/api/users")
    assert header_lines(host, "/tmp/h", "cache-control") == ["private, max-age=60"]


def test_errors_the_edge_generates_are_json(host):
    # every backend down (the stub stopped, 127.0.0.1:8001 never verifies): 502 from nginx itself
    host.check_output("systemctl stop stub-backend")
    try:
        status, headers, body = curl(host, f"-k https://{NAME}/api/health")
    finally:
        host.check_output("systemd-run --unit=stub-backend python3 /opt/molecule-stub/backend.py 127.0.0.1 8000"
                          " /etc/journal-tls/host.pem /etc/journal-tls/host.key")
        # back through the edge before the next test (nginx skips a failed server for fail_timeout)
        host.check_output(f"for i in $(seq 30); do curl -sfk -o /dev/null {RESOLVE} https://{NAME}/api/health && exit 0;"
                          " sleep 1; done; exit 1")
    assert status == 502 and headers["content-type"] == "application/json", body
    assert json.loads(body) == {"detail": "The service is unavailable: try again shortly"}
    assert "127.0.0.1" not in body and "nginx" not in body.lower()


def test_upload_body_limit(host):
    host.check_output("head -c 2097152 /dev/zero > /tmp/two-mib")
    # 2 MiB is over the default 1m elsewhere but within nginx_client_max_body_size on /api/upload
    status, headers, body = curl(host, f"-k -X POST --data-binary @/tmp/two-mib https://{NAME}/api/health")
    assert status == 413 and headers["content-type"] == "application/json"
    assert "at most 25m" in json.loads(body)["detail"]
    # as a file part: the WAF holds a body without files to nginx_default_max_body_size as well
    assert curl(host, f"-k -F 'pdf_file=@/tmp/two-mib;type=application/pdf' https://{NAME}/api/upload")[0] in (200, 429)
    # without: refused by the WAF (REQBODY_ERROR), as is a body it cannot parse
    status, _, body = curl(host, f"-k -X POST --data-binary @/tmp/two-mib https://{NAME}/api/upload")
    assert (status, json.loads(body)) == (403, WAF_REFUSAL)
    status, _, body = curl(host, f"-k -H 'Content-Type: application/json' --data '{{\"query\": ' https://{NAME}/api/query")
    assert (status, json.loads(body)) == (403, WAF_REFUSAL)


def test_rate_limit_on_query(host):
    codes = host.check_output(
        f"for i in $(seq 20); do curl -sk -o /tmp/query-$i -D /tmp/query-$i.h -w '%{{http_code}} ' {RESOLVE} "
        f"-X POST --data '{{}}' https://{NAME}/api/query; done"
    ).split()
    assert "200" in codes and "429" in codes, codes
    refused = json.loads(host.check_output(f"cat /tmp/query-{codes.index('429') + 1}"))
    # shaped like the backend's own 429 ({"detail", "reason"}); the reason names the edge's limit
    assert refused == {"detail": "Too many requests: slow down and try again", "reason": "edge_rate"}
    assert header_lines(host, f"/tmp/query-{codes.index('429') + 1}.h", "content-type") == ["application/json"]
    # like the backend's own 429: when to try again (converge.yml's 1r/s: a token a second)
    assert header_lines(host, f"/tmp/query-{codes.index('429') + 1}.h", "retry-after") == ["1"]
    # an accepted request carries none
    assert header_lines(host, f"/tmp/query-{codes.index('200') + 1}.h", "retry-after") == []


def test_the_backends_own_429_keeps_its_retry_after(host):
    status, _, _ = curl(host, f"-k -H 'X-Stub-Status: 429' https://{NAME}/api/history")
    assert status == 429
    assert header_lines(host, "/tmp/h", "retry-after") == ["7"], "one Retry-After, the backend's"


def test_stub_status_only_on_loopback(host, private_ip):
    assert "Active connections" in host.check_output("curl -sf http://127.0.0.1:8080/stub_status")
    assert host.run(f"curl -sf --max-time 3 http://{private_ip}:8080/stub_status").rc != 0
    listening = host.check_output("ss -Htln")
    assert "127.0.0.1:8080" in listening
    assert "0.0.0.0:443" in listening and "0.0.0.0:80" in listening


def test_json_access_log(host):
    curl(host, f"-k -H 'X-Request-ID: log-probe-7' https://{NAME}/api/health")
    line = [entry for entry in host.check_output("tail -n 50 /var/log/nginx/access.log").splitlines()
            if "log-probe-7" in entry][-1]
    entry = json.loads(line)
    assert entry["request_id"] == "log-probe-7" and entry["status"] == 200
    assert entry["uri"] == "/api/health" and entry["upstream_addr"].startswith("127.0.0.1:")
    assert isinstance(entry["request_time"], float)
    assert entry["upstream_response_time"] not in ("", "-")


def test_exporter_on_the_private_address_over_tls_with_a_client_certificate(host, private_ip):
    """The host's exporter web configuration (roles/node_exporter, prepare.yml): TLS only, and
    only to a client certificate from the internal CA that the exporter allows (the host's own
    here; Prometheus's in the lab). Which certificates it refuses: node_exporter's scenario."""
    tls = "/etc/prometheus/exporter-tls"
    client = f"curl -s --max-time 5 --cacert {tls}/ca.pem"
    metrics = host.check_output(f"{client} -f --cert {tls}/server.pem --key {tls}/server.key "
                                f"https://{private_ip}:9113/metrics")
    assert "nginx_up 1" in metrics
    assert "nginx_connections_accepted" in metrics
    anonymous = host.run(f"{client} -o /dev/null -w '%{{http_code}}' https://{private_ip}:9113/metrics")
    assert anonymous.stdout == "000", "the exporter answered a client without a certificate"
    plain = host.run(f"curl -s --max-time 5 http://{private_ip}:9113/metrics")
    assert "nginx_up" not in plain.stdout
    assert host.run("curl -sk --max-time 3 https://127.0.0.1:9113/metrics").rc == 7
    assert f"{private_ip}:9113" in host.check_output("ss -Htln")


def _unit_security():
    """molecule/shared/unit_security.py, imported here so the module's head stays as it was."""
    import importlib
    import sys
    from pathlib import Path

    shared = str(Path(__file__).resolve().parents[5] / "molecule" / "shared")
    if shared not in sys.path:
        sys.path.insert(0, shared)
    return importlib.import_module("unit_security")


@pytest.mark.parametrize("unit", ["nginx", "prometheus-nginx-exporter", "certbot"])
def test_unit_exposure_at_most_the_ceiling(host, unit):
    # Debian's units scored 9.6 and 9.2; the drop-ins bring both under the ceiling while the
    # tests above (TLS, renewal with a reload, routing, logs, metrics) still pass.
    security = _unit_security()
    assert host.file(f"/etc/systemd/system/{unit}.service.d/hardening.conf").exists
    assert security.exposure(host, unit) <= security.CEILING, security.failed_checks(host, unit)


def test_nginx_master_keeps_only_the_capabilities_it_uses(host):
    pid = host.check_output("systemctl show nginx -p MainPID --value").strip()
    status = host.file(f"/proc/{pid}/status").content_string
    bounding = int(next(line.split()[1] for line in status.splitlines() if line.startswith("CapBnd:")), 16)
    # CAP_CHOWN 0, CAP_DAC_OVERRIDE 1, CAP_SETGID 6, CAP_SETUID 7, CAP_NET_BIND_SERVICE 10
    assert bounding == sum(1 << bit for bit in (0, 1, 6, 7, 10))
    # reload (the certbot hook's and the role's handler's way) still works under the sandbox
    assert host.run("systemctl reload nginx").rc == 0
    assert host.service("nginx").is_running
# --- the web application firewall (ModSecurity + OWASP CRS, blocking at paranoia level 1) ---------



def audit_entry(host, request_id, timeout=60):
    """The audit log entry (journal, one JSON line) whose unique_id is the request's X-Request-ID.

    The reader service starts on the FIFO's first line, which takes seconds on a busy machine.
    """
    for _ in range(timeout):
        for line in host.check_output(f"journalctl -t {AUDIT} -o cat --no-pager").splitlines():
            if f'"unique_id":"{request_id}"' in line:
                return json.loads(line)["transaction"], line
        host.check_output("sleep 1")
    raise AssertionError(f"no audit log entry for {request_id} in the journal within {timeout}s")


def retry_429(host, args, tries=15):
    """curl() until the rate limit (1r/s on /api/query, 10r/m on /api/upload) lets it through."""
    for _ in range(tries):
        result = curl(host, args)
        if result[0] != 429:
            return result
        host.check_output("sleep 2")
    return result


ATTACKS = {
    # CRS test payloads: SQL injection and XSS in a query string, a form field and a JSON field.
    "sqli-query-string": f"'https://{NAME}/?id=1%27%20OR%20%271%27=%271'",
    "xss-query-string": f"'https://{NAME}/api/health?q=%3Cscript%3Ealert(1)%3C/script%3E'",
    "sqli-form-field": "-X POST --data-urlencode " + shlex.quote("collection_name=1' OR '1'='1")
                       + f" https://{NAME}/api/upload",
    "xss-multipart-field": f"--form-string {shlex.quote('collection_name=<script>alert(document.cookie)</script>')}"
                           f" https://{NAME}/api/upload",
    "xss-json-question": f"-X POST -H 'Content-Type: application/json'"
                         f" --data {shlex.quote(json.dumps({'query': '<script>alert(document.cookie)</script>'}))}"
                         f" https://{NAME}/api/query",
    # The question's exclusion is for SQL injection only, and only in the question.
    "sqli-json-collection": f"-X POST -H 'Content-Type: application/json' --data "
                            + shlex.quote(json.dumps({"query": "Which customers ordered?",
                                                      "collection_name": "x' UNION SELECT password FROM users--"}))
                            + f" https://{NAME}/api/query",
}


@pytest.mark.parametrize("attack", ATTACKS)
def test_waf_blocks_attacks_with_a_json_403(host, attack):
    status, headers, body = curl(host, f"-k -H 'X-Request-ID: waf-{attack}' {ATTACKS[attack]}")
    assert status == 403, (attack, body)
    assert headers["content-type"] == "application/json" and json.loads(body) == WAF_REFUSAL
    assert headers["x-request-id"] == f"waf-{attack}" and "strict-transport-security" in headers
    # the audit log names what matched (the transaction ModSecurity restarts in @error_403)
    entry, _ = audit_entry(host, f"waf-{attack}")
    rules = {m["details"]["ruleId"] for m in entry["messages"]}
    assert entry["response"]["http_code"] == 403 and "949110" in rules, rules
    assert rules & {"942100", "941100", "941110"}, rules


SQL_QUESTIONS = [
    # each was blocked before exclusion 10001 (SQL injection rules, and 932130, on the question)
    "Which customers placed orders? SELECT name FROM customers JOIN orders ON orders.customer_id = customers.id;"
    " DROP TABLE orders",
    "What does HAVING COUNT(*) > 1 mean in: SELECT customer_id FROM orders GROUP BY customer_id HAVING COUNT(*) > 1",
    "SELECT id FROM products UNION ALL SELECT id FROM archived_products",
    "select id from users where email like '%@example.com'",
    "Which employees have salary > (select avg(salary) from employees)?",
]


@pytest.mark.parametrize("number", range(len(SQL_QUESTIONS)))
def test_waf_passes_questions_that_are_sql(host, number):
    request_id = f"waf-sql-question-{number}"
    payload = shlex.quote(json.dumps({"query": SQL_QUESTIONS[number], "collection_name": "ecommerce"}))
    status, _, body = retry_429(host, f"-k -H 'X-Request-ID: {request_id}' -H 'Content-Type: application/json'"
                                      f" -X POST --data {payload} https://{NAME}/api/query")
    assert status == 200, body
    answer = json.loads(body)
    assert answer["stub"] and answer["path"] == "/query" and answer["body_bytes"] > 0


@pytest.fixture(scope="module")
def schema_pdf(host, tmp_path_factory):
    """A real binary PDF: a schema's text and a noise image (compressed streams), on the instance."""
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.utils import ImageReader
    from reportlab.pdfgen import canvas
    from PIL import Image

    noise = io.BytesIO()
    Image.frombytes("RGB", (400, 300), os.urandom(400 * 300 * 3)).save(noise, "PNG")
    noise.seek(0)
    path = tmp_path_factory.mktemp("pdf") / "schema.pdf"
    pdf = canvas.Canvas(str(path), pagesize=A4)
    y = 800
    for line in (Path(__file__).resolve().parents[5] / "benchmarks/data/schemas/ecommerce.txt").read_text().splitlines():
        pdf.drawString(30, y, line[:120])
        y -= 12
        if y < 40:
            pdf.showPage()
            y = 800
    pdf.drawImage(ImageReader(noise), 30, 100, 400, 300)
    pdf.showPage()
    pdf.save()
    host.ansible("copy", f"src={path} dest=/var/tmp/waf-schema.pdf mode=0644", check=False)
    return "/var/tmp/waf-schema.pdf", path.stat().st_size


def test_waf_passes_a_pdf_upload(host, schema_pdf):
    path, size = schema_pdf
    # an apostrophe in the file name was blocked before exclusion 10002 (920120 on FILES:pdf_file)
    form = shlex.quote(f'pdf_file=@{path};type=application/pdf;filename="O\'Brien\'s schema.pdf"')
    status, _, body = retry_429(host, f"-k -H 'X-Request-ID: waf-pdf-upload' -F {form}"
                                      f" -F collection_name=ecommerce https://{NAME}/api/upload")
    assert status == 200, body
    answer = json.loads(body)
    assert answer["stub"] and answer["path"] == "/upload" and answer["body_bytes"] > size


def test_waf_audit_log_in_the_journal_without_secrets(host):
    secret = "waf-secret-token-4711"
    # a passing request matches no rule: nothing is logged for it
    status, _, _ = curl(host, f"-k -H 'X-Request-ID: waf-clean' https://{NAME}/api/health")
    assert status == 200
    status, _, _ = curl(host, f"-k -H 'X-Request-ID: waf-audit-probe' -H 'Authorization: Bearer {secret}'"
                              f" -H 'Cookie: session={secret}' 'https://{NAME}/api/health?id=1%27%20OR%20%271%27=%271'")
    assert status == 403
    entry, line = audit_entry(host, "waf-audit-probe")
    assert entry["request"]["uri"] == "/api/health?id=1%27%20OR%20%271%27=%271"
    assert entry["producer"]["secrules_engine"] == "Enabled"
    assert any(m["details"]["ruleId"] == "942100" and "ARGS:id" in m["details"]["data"] for m in entry["messages"])
    assert secret not in line and "headers" not in entry["request"]  # parts A and H only
    # the FIFO is ordered: the clean request's line would have come before the probe's
    assert '"unique_id":"waf-clean"' not in host.check_output(f"journalctl -t {AUDIT} -o cat --no-pager")
    journal = json.loads(host.check_output(f"journalctl -t {AUDIT} -o json --no-pager -n 1"))
    assert journal["_SYSTEMD_UNIT"] == "querygpt-waf-audit.service" and journal["PRIORITY"] == "5"


def test_waf_audit_units(host):
    assert host.service("querygpt-waf-audit.socket").is_enabled
    assert host.service("querygpt-waf-audit.socket").is_running
    fifo = host.file("/run/querygpt-waf/audit.fifo")
    assert fifo.is_pipe and fifo.user == "root" and fifo.mode == 0o600
    exposure = host.check_output("systemd-analyze security --no-pager querygpt-waf-audit.service | tail -n 1")
    assert float(re.search(r"level for \S+: ([0-9.]+)", exposure).group(1)) <= 3.0, exposure


# A strong password: what every injection family scores as an attack (SQL, XSS, shell).
PASSWORD = "x' OR '1'='1' -- <script>alert(document.cookie)</script>"


@pytest.mark.parametrize(("method", "path", "fields"), [
    ("POST", "/api/auth/login", {"username": USER}),
    ("POST", "/api/users", {"username": USER, "role": "viewer"}),
    ("PATCH", f"/api/users/{USER}", {"disabled": False}),
], ids=["login", "create-user", "change-password"])
def test_waf_passes_a_password_that_looks_like_an_attack_where_passwords_are_sent(host, method, path, fields):
    payload = shlex.quote(json.dumps({**fields, "password": PASSWORD}))
    status, _, body = curl(host, f"-k -X {method} -H 'X-Request-ID: waf-password-{method}' -H 'Content-Type: application/json'"
                                 f" --data {payload} https://{NAME}{path}")
    assert status == 200, body
    assert json.loads(body)["path"] == path.removeprefix("/api")
    # the same string in any other field is refused
    payload = shlex.quote(json.dumps({**fields, "password": "long enough password", "username": PASSWORD}))
    status, _, body = curl(host, f"-k -X {method} -H 'Content-Type: application/json' --data {payload} https://{NAME}{path}")
    assert (status, json.loads(body)) == (403, WAF_REFUSAL)


def test_waf_inspects_a_password_field_anywhere_else(host):
    payload = shlex.quote(json.dumps({"name": "ecommerce", "password": PASSWORD}))
    status, _, body = curl(host, f"-k -H 'Content-Type: application/json' --data {payload} https://{NAME}/api/collections")
    assert (status, json.loads(body)) == (403, WAF_REFUSAL)


def test_waf_refuses_put_patch_delete_where_no_path_serves_them(host):
    # the methods pass the WAF only on the paths that serve them (10003-10006, and the test above)
    cases = (("PUT", "/api/health"), ("PATCH", "/api/health"), ("DELETE", "/api/query"), ("DELETE", "/"),
             ("PUT", "/index.html"))
    for number, (method, path) in enumerate(cases):
        status, _, body = curl(host, f"-k -X {method} -H 'X-Request-ID: waf-method-{number}' https://{NAME}{path}")
        assert (status, json.loads(body)) == (403, WAF_REFUSAL), (method, path, body)
    entry, _ = audit_entry(host, "waf-method-0")
    assert "911100" in {m["details"]["ruleId"] for m in entry["messages"]}


# Last: the timeout counts against the stub in nginx's passive health check (max_fails,
# fail_timeout), which no later test should have to wait out.
def test_a_backend_too_slow_gets_the_edges_json_504(host, private_ip):
    """The stub holds its answer (X-Stub-Delay) past proxy_read_timeout, which converge.yml
    shortens (nginx_proxy_read_timeout: 10): the edge gives up and answers its own JSON 504.
    A POST: nginx passes a request it has already sent on to no other backend
    (proxy_next_upstream without non_idempotent), so the answer is the timeout's 504 and never
    the impostor's refusal (a 502), whichever server nginx tries first."""
    conf = host.file("/etc/nginx/nginx.conf").content_string
    timeout = int(re.search(r"^\s*proxy_read_timeout (\d+)s;", conf, re.M).group(1))
    assert timeout <= 30, f"converge.yml must shorten nginx_proxy_read_timeout for this test, got {timeout}s"
    delay = timeout + 10
    timed_out_before = host.file("/var/log/nginx/error.log").content_string.count("upstream timed out")
    try:
        status, headers, body, seconds = timed_curl(
            host, f"-k -X POST -H 'Content-Type: application/json' --data '{{}}' -H 'X-Stub-Delay: {delay}'"
                  f" -H 'X-Request-ID: slow-backend-504' https://{NAME}/api/collections")
    finally:
        # the timeout counts against 127.0.0.1:8000 (max_fails): back through the edge before the
        # next test (nginx skips a failed server for fail_timeout)
        host.check_output(f"for i in $(seq 30); do curl -sfk -o /dev/null {RESOLVE} https://{NAME}/api/health && exit 0;"
                          " sleep 1; done; exit 1")
    assert status == 504 and headers["content-type"] == "application/json", (status, body)
    answer = json.loads(body)
    assert answer == {"detail": "The service took too long to answer"} and isinstance(answer["detail"], str)
    assert headers["x-request-id"] == "slow-backend-504" and "strict-transport-security" in headers
    # the edge's own answer, after its timeout and before the stub's late one
    assert timeout - 0.5 <= seconds < delay, seconds
    errors = host.file("/var/log/nginx/error.log").content_string
    assert errors.count("upstream timed out") > timed_out_before, errors[-2000:]
    # no internal address, port or name in what the client sees
    assert not re.search(r"\b\d{1,3}(?:\.\d{1,3}){3}\b", body), body
    seen = body + "\n" + "\n".join(f"{k}: {v}" for k, v in headers.items())
    for internal in ("127.0.0.1", private_ip, ":8000", ":8001", "querygpt_backend", "querygpt.internal"):
        assert internal not in seen, (internal, seen)
    assert "nginx" not in body.lower()
