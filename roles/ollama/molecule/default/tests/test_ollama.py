"""Verify the ollama role on a converged instance: read back what an operator relies on."""

import hashlib
import json
import re
import shlex
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[5] / "molecule" / "shared"))

from unit_security import CEILING, cpu_quota_percent, exposure, failed_checks, memory_total, vcpus  # noqa: E402

testinfra_hosts = ["ollama"]

MODELS = ("all-minilm:l6-v2", "qwen2.5-coder:1.5b")  # converge.yml pins both, tag and digest
FAKE_SOURCES = {"192.0.2.21", "192.0.2.22", "192.0.2.40"}  # backend x2 + monitoring (inventory)
MODELS_DIR = "/var/lib/ollama/models"


@pytest.fixture(scope="module")
def private_ip(host):
    return host.ansible("setup", "filter=ansible_default_ipv4")["ansible_facts"]["ansible_default_ipv4"]["address"]


@pytest.fixture(scope="module")
def props(host):
    return host.service("ollama").systemd_properties


CA = "/etc/journal-tls/ca.pem"  # the internal CA (converge.yml), which signed the proxy's certificate

# One HTTP request from inside the instance; the path is sent exactly as given (http.client
# does not normalise it), so the proxy sees what a hostile client could send. The proxy on the
# private address is reached over TLS, verified against the internal CA and the address, as
# the backend does; Ollama itself on the loopback over plain HTTP.
CALL = """
import http.client, json, ssl, sys
address, method, path, body = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
if address == "127.0.0.1":
    connection = http.client.HTTPConnection(address, 11434, timeout=30)
else:
    context = ssl.create_default_context(cafile="/etc/journal-tls/ca.pem")
    connection = http.client.HTTPSConnection(address, 11434, timeout=30, context=context)
connection.request(method, path, body=body.encode() if body else None,
                   headers={"Content-Type": "application/json"} if body else {})
response = connection.getresponse()
print(json.dumps({"status": response.status, "type": response.getheader("Content-Type", ""),
                  "body": response.read().decode(errors="replace")}))
"""


def call(host, address, method, path, body=None):
    """(status, Content-Type, body text) of one request to address:11434."""
    payload = "" if body is None else json.dumps(body)
    args = " ".join(shlex.quote(a) for a in (CALL, address, method, path, payload))
    answer = json.loads(host.check_output(f"python3 -c {args}"))
    return answer["status"], answer["type"], answer["body"]


def api_get(host, address, path):
    status, _, body = call(host, address, "GET", path)
    assert status == 200, (address, path, status, body)
    return json.loads(body)


def test_release_installed_from_verified_archive(host):
    assert host.file("/opt/ollama/current").linked_to == "/opt/ollama/0.20.0"
    binary = host.file("/opt/ollama/0.20.0/bin/ollama")
    assert binary.user == "root" and binary.mode == 0o755
    assert host.file("/opt/ollama/0.20.0/lib/ollama").is_directory
    assert "0.20.0" in host.check_output("/opt/ollama/current/bin/ollama --version")
    assert host.package("zstd").is_installed


def test_service_runs_as_ollama(host, props):
    service = host.service("ollama")
    assert service.is_running and service.is_enabled
    pid = props["MainPID"]
    assert host.check_output(f"ps -o user= -p {pid}").strip() == "ollama"
    assert host.user("ollama").shell == "/usr/sbin/nologin"


def test_unit_is_sandboxed(host, props):
    assert props["ProtectSystem"] == "strict"
    assert props["NoNewPrivileges"] == "yes"
    assert props["PrivateTmp"] == "yes"
    assert props["ProtectHome"] == "yes"
    assert props["PrivateDevices"] == "yes"  # ollama_gpu is false here
    # empty bounding set: systemd lists no capability at all (testinfra drops empty values)
    bounding = host.check_output("systemctl show ollama --property CapabilityBoundingSet --value")
    assert "cap_" not in bounding
    assert props["ReadWritePaths"].split() == [MODELS_DIR]
    assert props["Restart"] == "on-failure"
    assert props["User"] == "ollama"


def test_unit_exposure_at_most_the_ceiling(host):
    # The score as this host's systemd computes it, with the API still answering
    # (test_api_answers_version, test_declared_models_listed_with_their_manifest_digests).
    assert exposure(host, "ollama") <= CEILING, failed_checks(host, "ollama")


def test_memory_and_cpu_limits(host, props):
    # The role's defaults: 85% of the RAM, 90% of all the CPUs.
    assert int(props["MemoryMax"]) == pytest.approx(0.85 * memory_total(host), rel=0.01)
    assert cpu_quota_percent(host, "ollama") == pytest.approx(90 * vcpus(host))


def test_environment_from_variables(props):
    env = dict(item.split("=", 1) for item in props["Environment"].split())
    assert env["OLLAMA_HOST"] == "127.0.0.1:11434"  # other hosts reach it through ollama-proxy only
    assert env["OLLAMA_MODELS"] == MODELS_DIR
    # side_effect.yml changed it from 5m; the restart and the second idempotence ran with it
    assert env["OLLAMA_KEEP_ALIVE"] == "10m"
    assert env["OLLAMA_NUM_PARALLEL"] == "1"
    assert env["OLLAMA_MAX_LOADED_MODELS"] == "2"
    assert env["OLLAMA_MAX_QUEUE"] == "512"
    assert env["OLLAMA_STANDIN_MIRROR"] == "/srv/ollama-mirror"


def test_ollama_listens_on_loopback_and_the_proxy_on_the_private_address(host, private_ip):
    listening = sorted(s for s in host.socket.get_listening_sockets() if s.endswith(":11434"))
    assert listening == sorted([f"tcp://{private_ip}:11434", "tcp://127.0.0.1:11434"])
    # Who is behind each (ss -p cannot see other users' sockets without CAP_SYS_PTRACE): the
    # loopback is Ollama itself, the private address the proxy, which refuses /api/tags.
    assert call(host, "127.0.0.1", "GET", "/api/tags")[0] == 200
    assert call(host, private_ip, "GET", "/api/tags")[0] == 403


def test_proxy_serves_tls_only_with_the_internal_certificate(host, private_ip):
    """Plaintext to the private address gets nginx's 400, never Ollama's answer; TLS below 1.2 is
    refused; the certificate is the instance's from the internal CA, naming its address."""
    plain = CALL.replace("if address ==", "if True or address ==", 1)
    args = " ".join(shlex.quote(a) for a in (plain, private_ip, "GET", "/api/version", ""))
    answer = json.loads(host.check_output(f"python3 -c {args}"))
    assert answer["status"] == 400 and "version" not in answer["body"], answer
    assert "plain HTTP request was sent to HTTPS port" in answer["body"], answer
    old_tls = host.run(f"openssl s_client -connect {private_ip}:11434 -tls1_1 </dev/null")
    assert old_tls.rc != 0, old_tls.stdout
    verified = host.check_output(
        f"openssl s_client -connect {private_ip}:11434 -CAfile {CA} -verify_ip {private_ip} "
        "-verify_return_error -brief </dev/null 2>&1")
    assert "Verification: OK" in verified, verified


def test_a_client_trusting_another_ca_refuses_the_proxy(host, private_ip):
    host.check_output(
        "test -f /tmp/foreign-ca.pem || openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "
        "-keyout /tmp/foreign-ca.key -out /tmp/foreign-ca.pem -days 1 -subj /CN=foreign-ca 2>/dev/null")
    foreign = CALL.replace(CA, "/tmp/foreign-ca.pem", 1)
    args = " ".join(shlex.quote(a) for a in (foreign, private_ip, "GET", "/api/version", ""))
    result = host.run(f"python3 -c {args}")
    assert result.rc != 0 and "CERTIFICATE_VERIFY_FAILED" in result.stderr, result.stderr


def test_api_answers_version(host, private_ip):
    assert api_get(host, private_ip, "/api/version")["version"] == "0.20.0"
    assert api_get(host, "127.0.0.1", "/api/version")["version"] == "0.20.0"


def test_declared_models_listed_with_their_manifest_digests(host):
    listed = {m["name"]: m["digest"] for m in api_get(host, "127.0.0.1", "/api/tags")["models"]}
    assert set(listed) == set(MODELS)
    for name in MODELS:
        model, tag = name.split(":")
        manifest = host.file(f"{MODELS_DIR}/manifests/registry.ollama.ai/library/{model}/{tag}")
        assert manifest.user == "ollama"
        assert re.fullmatch(r"[0-9a-f]{64}", listed[name])
        assert listed[name] == hashlib.sha256(manifest.content).hexdigest()


def test_models_dir_private_to_ollama(host):
    models = host.file(MODELS_DIR)
    assert models.user == "ollama" and models.group == "ollama" and models.mode == 0o750
    key = host.file("/var/lib/ollama/.ollama/id_ed25519")
    assert key.user == "ollama" and key.mode == 0o600


# --- the allow-list proxy ------------------------------------------------------------------
EMBED = {"model": "all-minilm:l6-v2", "input": ["an allowed call"]}
ALLOWED = [  # what the backend calls (ollama_proxy_allowed_calls), through the private address
    ("GET", "/api/version", None),
    ("POST", "/api/show", {"model": "all-minilm:l6-v2"}),
    ("POST", "/api/embed", EMBED),
    ("POST", "/api/embeddings", {"model": "all-minilm:l6-v2", "prompt": "an allowed call"}),
    ("POST", "/api/chat", {"model": "qwen2.5-coder:1.5b", "stream": False,
                           "messages": [{"role": "user", "content": "How many rows?"}]}),
    ("POST", "/api/generate", {"model": "qwen2.5-coder:1.5b", "stream": False, "prompt": "How many rows?"}),
]
DENIED = [  # model management and everything else; (method, raw path, body)
    ("POST", "/api/pull", {"model": "all-minilm:l6-v2"}),
    ("DELETE", "/api/delete", {"model": "all-minilm:l6-v2"}),
    ("POST", "/api/create", {"model": "mine", "from": "all-minilm:l6-v2"}),
    ("POST", "/api/copy", {"source": "all-minilm:l6-v2", "destination": "copy:1"}),
    ("POST", "/api/push", {"model": "all-minilm:l6-v2"}),
    ("GET", "/api/tags", None),
    ("GET", "/api/ps", None),
    ("GET", "/", None),
    ("HEAD", "/api/version", None),  # only the method listed
    ("GET", "/api/embed", None),
    ("POST", "/api/version", None),
    # a listed path cannot be bent into another one
    ("POST", "/api/embed/../pull", {"model": "all-minilm:l6-v2"}),
    ("POST", "/api/%70ull", {"model": "all-minilm:l6-v2"}),
    ("POST", "//api/pull", {"model": "all-minilm:l6-v2"}),
    ("POST", "/api/embed%2F..%2Fpull", {"model": "all-minilm:l6-v2"}),
]


@pytest.mark.parametrize(("method", "path", "body"), ALLOWED, ids=[f"{m} {p}" for m, p, _ in ALLOWED])
def test_proxy_passes_the_calls_the_backend_needs(host, private_ip, method, path, body):
    status, content_type, text = call(host, private_ip, method, path, body)
    assert status == 200, (status, text)
    answer = json.loads(text)
    if path == "/api/embed":
        assert len(answer["embeddings"]) == 1 and len(answer["embeddings"][0]) == 384
    if path in ("/api/chat", "/api/generate"):
        assert answer["done"] is True


@pytest.mark.parametrize(("method", "path", "body"), DENIED, ids=[f"{m} {p}" for m, p, _ in DENIED])
def test_proxy_refuses_every_other_call_with_a_json_error(host, private_ip, method, path, body):
    status, content_type, text = call(host, private_ip, method, path, body)
    assert status == 403, (status, text)
    if method != "HEAD":
        assert content_type.startswith("application/json")
        assert "model management runs on the Ollama host" in json.loads(text)["error"]


def test_denied_calls_changed_nothing_and_pull_works_on_the_loopback(host):
    # DELETE /api/delete through the proxy above did not reach Ollama: both models are still there
    assert {m["name"] for m in api_get(host, "127.0.0.1", "/api/tags")["models"]} == set(MODELS)
    status, _, text = call(host, "127.0.0.1", "POST", "/api/pull", {"model": "all-minilm:l6-v2", "stream": False})
    assert status == 200 and json.loads(text)["status"] == "success", (status, text)


def test_proxy_streams_ndjson(host, private_ip):
    status, content_type, text = call(host, private_ip, "POST", "/api/generate",
                                      {"model": "qwen2.5-coder:1.5b", "prompt": "How many rows?"})
    assert status == 200 and content_type.startswith("application/x-ndjson")
    lines = [json.loads(line) for line in text.splitlines() if line]
    assert len(lines) > 1 and lines[-1]["done"] is True


def test_proxy_refuses_a_body_over_the_limit_with_a_json_error(host, private_ip):
    # 17 MiB of input, over ollama_proxy_max_body_size (16m): written on the instance, then sent
    host.check_output("python3 -c " + shlex.quote(
        "import json; json.dump({'model': 'all-minilm:l6-v2', 'input': ['x' * (17 << 20)]}, open('/tmp/big.json', 'w'))"))
    script = CALL.replace("sys.argv[4]\n", "open(sys.argv[4]).read()\n", 1)
    args = " ".join(shlex.quote(a) for a in (script, private_ip, "POST", "/api/embed", "/tmp/big.json"))
    answer = json.loads(host.check_output(f"python3 -c {args}"))
    assert answer["status"] == 413, answer["status"]
    assert answer["type"].startswith("application/json")
    assert "16m" in json.loads(answer["body"])["error"]


def test_proxy_logs_each_request_to_the_journal(host, private_ip):
    call(host, private_ip, "POST", "/api/pull", {"model": "journal-probe:1"})
    lines = host.check_output("journalctl -t ollama_proxy -o cat --no-pager -n 200").splitlines()
    entries = [json.loads(line) for line in lines if line.startswith("{")]
    assert any(e["uri"] == "/api/pull" and e["status"] == 403 and e["method"] == "POST" for e in entries), lines[-5:]


def test_proxy_unit_runs_unprivileged_and_hardened(host):
    proxy = host.service("ollama-proxy")
    assert proxy.is_running and proxy.is_enabled
    props = proxy.systemd_properties
    assert props["User"] == "ollama-proxy"
    main = props["MainPID"]
    users = host.check_output(f"ps -o user= -p {main}; ps -o user= --ppid {main}").split()
    assert len(users) >= 2 and set(users) == {"ollama-proxy"}, users  # the master and its workers
    exposure = host.check_output("systemd-analyze security --no-pager ollama-proxy.service | tail -1")
    score = float(re.search(r"exposure level for ollama-proxy\.service: ([0-9.]+)", exposure).group(1))
    assert score <= 3.0, exposure
    # Debian's own nginx.service (its default site on port 80) is not running here
    assert not host.service("nginx").is_running and not host.service("nginx").is_enabled
    assert not [s for s in host.socket.get_listening_sockets() if s.endswith(":80")]


def test_proxy_answers_json_when_ollama_is_down(host, private_ip):
    """Last: stops Ollama for a moment. 502 in Ollama's error shape, so clients parse it."""
    host.check_output("systemctl stop ollama")
    try:
        status, content_type, text = call(host, private_ip, "GET", "/api/version")
        assert status == 502 and content_type.startswith("application/json")
        assert json.loads(text)["error"] == "Ollama is not answering behind its proxy"
    finally:
        host.check_output("systemctl start ollama")
    host.check_output("for i in $(seq 30); do curl -sf http://127.0.0.1:11434/api/version && exit 0; sleep 1; done; exit 1")
