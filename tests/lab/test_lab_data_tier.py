"""The data tier on the lab: reachable from the backends only, keys enforced, models present."""

from __future__ import annotations

import json

import pytest

from labview import lab_vault

PROBE = "timeout 3 bash -c '</dev/tcp/{address}/{port}' && echo open || echo closed"
# The internal CA on every host (roles/internal_pki; group_vars/all/tls.yml).
INTERNAL_CA = "/etc/journal-tls/ca.pem"


@pytest.fixture(scope="module")
def vault() -> dict:
    return lab_vault()


@pytest.mark.parametrize("port", [6333, 6334])
def test_qdrant_is_open_to_every_backend_across_azs(lab, port):
    qdrant = lab.address(lab.groups["qdrant"][0])
    for backend in lab.groups["backend"]:
        assert lab.exec(backend, PROBE.format(address=qdrant, port=port)).stdout.strip() == "open", backend


def test_every_ollama_host_is_open_to_every_backend(lab):
    assert len(lab.groups["ollama"]) >= 2, "the lab runs an Ollama pool"
    for host in lab.groups["ollama"]:
        ollama = lab.address(host)
        for backend in lab.groups["backend"]:
            assert lab.exec(backend, PROBE.format(address=ollama, port=11434)).stdout.strip() == "open", (backend, host)


@pytest.mark.parametrize("group", ["edge", "bastion"])
def test_data_tier_is_closed_to_other_tiers(lab, group):
    source = lab.groups[group][0]
    qdrant = lab.address(lab.groups["qdrant"][0])
    ollama = lab.address(lab.groups["ollama"][0])
    assert lab.exec(source, PROBE.format(address=qdrant, port=6333)).stdout.strip() == "closed"
    assert lab.exec(source, PROBE.format(address=ollama, port=11434)).stdout.strip() == "closed"


def test_services_bind_only_the_private_address(lab):
    host = lab.groups["qdrant"][0]
    listeners = lab.ssh(host, "ss -Hltn 'sport = :6333'").stdout.split()
    local = [field for field in listeners if field.endswith(":6333")]
    assert local == [f"{lab.address(host)}:6333"], f"{host}: {listeners}"


def test_ollama_listens_on_loopback_behind_its_proxy(lab):
    """Ollama itself on 127.0.0.1 only; the allow-list proxy on the private address (it refuses
    /api/tags, which Ollama itself answers)."""
    for host in lab.groups["ollama"]:
        listeners = lab.ssh(host, "ss -Hltn 'sport = :11434'").stdout.split()
        local = sorted(field for field in listeners if field.endswith(":11434"))
        assert local == sorted(["127.0.0.1:11434", f"{lab.address(host)}:11434"]), f"{host}: {listeners}"
        status = "curl -s -o /dev/null -w '%{{http_code}}' --max-time 10 {scheme}://{address}:11434/api/tags"
        assert lab.exec(host, status.format(scheme="http", address="127.0.0.1")).stdout == "200", host
        proxy = status.replace("curl", f"curl --cacert {INTERNAL_CA}", 1)
        assert lab.exec(host, proxy.format(scheme="https", address=lab.address(host))).stdout == "403", host


def test_ollama_proxies_serve_only_tls_verified_by_the_internal_ca(lab):
    """docs/architecture.md, "Internal TLS": plaintext to the proxy gets nginx's 400, never an
    Ollama answer; the certificate verifies against the internal CA for the host's address."""
    backend = lab.groups["backend"][0]
    for host in lab.groups["ollama"]:
        address = lab.address(host)
        plain = lab.exec(backend, f"curl -s --max-time 10 http://{address}:11434/api/version").stdout
        assert "plain HTTP request was sent to HTTPS port" in plain and '"version"' not in plain, (host, plain)
        verified = lab.exec(backend, f"openssl s_client -connect {address}:11434 -CAfile {INTERNAL_CA}"
                                     f" -verify_ip {address} -verify_return_error -brief </dev/null 2>&1").stdout
        assert "Verification: OK" in verified, (host, verified)


def _ollama_call(lab, source: str, ollama: str, method: str, path: str, body: str = "") -> tuple[str, str]:
    """(HTTP status, body) of one call from `source` to the ollama host's private address."""
    data = f"-H 'Content-Type: application/json' -d '{body}'" if body else ""
    done = lab.exec(source, f"curl -s --cacert {INTERNAL_CA} --max-time 60 -o /tmp/ollama-call.out"
                            f" -w '%{{http_code}}' -X {method} {data}"
                            f" https://{lab.address(ollama)}:11434{path}; echo; cat /tmp/ollama-call.out", timeout=90)
    status, _, text = done.stdout.partition("\n")
    return status, text


@pytest.mark.parametrize("index", [0, 1])
def test_backends_reach_only_the_calls_they_need_on_ollama(lab, index):
    ollama = lab.groups["ollama"][index]
    for backend in lab.groups["backend"]:
        status, text = _ollama_call(lab, backend, ollama, "POST", "/api/embed",
                                    '{"model": "all-minilm:l6-v2", "input": ["lab probe"]}')
        assert status == "200" and len(json.loads(text)["embeddings"]) == 1, (backend, status, text)
        status, text = _ollama_call(lab, backend, ollama, "GET", "/api/version")
        assert status == "200", (backend, status, text)


@pytest.mark.parametrize(("method", "path", "body"), [
    ("POST", "/api/pull", '{"model": "all-minilm:l6-v2"}'),
    ("DELETE", "/api/delete", '{"model": "all-minilm:l6-v2"}'),
    ("POST", "/api/create", '{"model": "mine", "from": "all-minilm:l6-v2"}'),
    ("GET", "/api/tags", ""),
    ("GET", "/api/ps", ""),
])
def test_ollama_model_management_is_refused_to_the_backends(lab, method, path, body):
    backend, ollama = lab.groups["backend"][0], lab.groups["ollama"][0]
    status, text = _ollama_call(lab, backend, ollama, method, path, body)
    assert status == "403", (status, text)
    assert "model management runs on the Ollama host" in json.loads(text)["error"]


def test_qdrant_enforces_its_api_keys(lab, vault):
    backend = lab.groups["backend"][0]
    url = f"https://{lab.address(lab.groups['qdrant'][0])}:6333/collections"
    status = "curl -s --cacert " + INTERNAL_CA + " -o /dev/null -w '%{{http_code}}' {headers} {url}"
    assert lab.exec(backend, status.format(headers="", url=url)).stdout == "401"
    # the keys reach curl on its stdin (-H @-), never on the host's command lines
    with_key = {"input": f"api-key: {vault['vault_qdrant_api_key']}\n"}
    assert lab.exec(backend, status.format(headers="-H @-", url=url), **with_key).stdout == "200"
    read_only = {"input": f"api-key: {vault['vault_qdrant_read_only_api_key']}\n"}
    create = status.format(headers="-H @- -X PUT -H 'Content-Type: application/json'"
                                   " -d '{\"vectors\":{\"size\":4,\"distance\":\"Cosine\"}}'",
                           url=url + "/lab-probe")
    assert lab.exec(backend, create, **read_only).stdout == "403"


@pytest.mark.parametrize("index", [0, 1])
def test_every_ollama_host_serves_the_pinned_models_at_their_pinned_digests(lab, index):
    ollama = lab.groups["ollama"][index]
    # /api/tags is model management: the backends get 403 for it, the host itself lists them
    tags = json.loads(lab.exec(ollama, "curl -sf http://127.0.0.1:11434/api/tags").stdout)
    served = {m["name"]: m["digest"] for m in tags["models"]}
    pinned = lab.render("ollama_models", ollama)
    assert {m["name"] for m in pinned} == {"all-minilm:l6-v2", "qwen2.5-coder:1.5b"}
    for model in pinned:
        assert served.get(model["name"]) == model["digest"].removeprefix("sha256:"), (model, served)


def test_qdrant_speaks_only_verified_tls_on_every_port(lab):
    """docs/architecture.md, "Internal TLS": REST and gRPC (from a backend) and p2p (from another
    peer) complete a TLS handshake verified against the internal CA for the peer's address, and a
    request in clear gets no HTTP answer on any of them. (s_client prints the verify result again
    for each TLS 1.3 session ticket it reads before it closes: one line is counted.)"""
    backend, peer, other = lab.groups["backend"][0], lab.groups["qdrant"][0], lab.groups["qdrant"][1]
    address = lab.address(peer)
    checks = {backend: (6333, 6334), other: (6335,)}
    for source, ports in checks.items():
        script = "; ".join(
            f"echo \"{port} plain $(curl -s -o /dev/null -w '%{{http_code}}' --max-time 5 http://{address}:{port}/)\"; "
            f"echo \"{port} tls $(openssl s_client -connect {address}:{port} -CAfile {INTERNAL_CA} -verify_return_error"
            f" -verify_ip {address} </dev/null 2>&1 | grep -m1 -c 'Verify return code: 0 (ok)')\""
            for port in ports)
        seen = dict(line.rsplit(" ", 1) for line in lab.exec(source, script, timeout=60).stdout.splitlines())
        for port in ports:
            assert seen.get(f"{port} plain") == "000", (source, port, seen)
            assert seen.get(f"{port} tls") == "1", (source, port, seen)
