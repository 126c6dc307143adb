"""Verify the nginx role on a converged instance: what a user, an operator and Prometheus see."""

import json

import pytest

testinfra_hosts = ["edge"]

NAME = "edge.querygpt.test"
RESOLVE = f"--resolve {NAME}:443:127.0.0.1 --resolve {NAME}:80:127.0.0.1"
ROOT = "/var/tmp/pebble-root.pem"


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
    assert "cache-control" not in headers  # the backend decides
    # a generated id when the client sends none (or a malformed one)
    _, headers, body = curl(host, f"-k -H 'X-Request-ID: bad id!' https://{NAME}/api/health")
    generated = json.loads(body)["request_id"]
    assert len(generated) == 32 and generated == headers["x-request-id"]
    _, _, body = curl(host, f"-k -X POST --data-binary 'q' https://{NAME}/api/upload")
    assert json.loads(body)["path"] == "/upload"


def test_passive_failover_over_a_dead_backend(host):
    # the second upstream server (127.0.0.1:8001) refuses connections: every request still succeeds
    for _ in range(6):
        assert curl(host, f"-k https://{NAME}/api/health")[0] == 200
    conf = host.file("/etc/nginx/nginx.conf").content_string
    assert "server 127.0.0.1:8000 " in conf and "server 127.0.0.1:8001 " in conf
    assert "keepalive 32;" in conf


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


def test_errors_the_edge_generates_are_json(host):
    # every backend down (the stub stopped, 127.0.0.1:8001 never listens): 502 from nginx itself
    host.check_output("systemctl stop stub-backend")
    try:
        status, headers, body = curl(host, f"-k https://{NAME}/api/health")
    finally:
        host.check_output("systemd-run --unit=stub-backend python3 /opt/molecule-stub/backend.py 127.0.0.1 8000")
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
    assert curl(host, f"-k -X POST --data-binary @/tmp/two-mib https://{NAME}/api/upload")[0] in (200, 429)


def test_rate_limit_on_query(host):
    codes = host.check_output(
        f"for i in $(seq 20); do curl -sk -o /tmp/query-$i -w '%{{http_code}} ' {RESOLVE} "
        f"-X POST --data '{{}}' https://{NAME}/api/query; done"
    ).split()
    assert "200" in codes and "429" in codes, codes
    refused = json.loads(host.check_output(f"cat /tmp/query-{codes.index('429') + 1}"))
    assert refused == {"detail": "Too many requests: slow down and try again"}


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


def test_exporter_on_the_private_address(host, private_ip):
    metrics = host.check_output(f"curl -sf http://{private_ip}:9113/metrics")
    assert "nginx_up 1" in metrics
    assert "nginx_connections_accepted" in metrics
    assert host.run("curl -sf --max-time 3 http://127.0.0.1:9113/metrics").rc != 0
    assert f"{private_ip}:9113" in host.check_output("ss -Htln")
