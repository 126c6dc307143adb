"""Verify the backend role on a converged instance: read back what an operator relies on."""

import json
import secrets
import shlex
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[5] / "molecule" / "shared"))

from unit_security import CEILING, cpu_quota_percent, exposure, failed_checks, memory_total, vcpus  # noqa: E402

testinfra_hosts = ["backend"]

PREFIX = "/opt/querygpt/backend"
ENV_FILE = "/etc/querygpt/backend.env"
CLI = f"{PREFIX}/current/bin/querygpt-backend"
# curl's `-H @file` with the verifier's API token: the token never leaves the instance.
AUTH_HEADER = "/root/molecule-api-token.header"
# The internal CA the API's certificate is verified against (roles/internal_pki put it there).
CA = "/etc/journal-tls/ca.pem"


@pytest.fixture(scope="module")
def private_ip(host):
    return host.ansible("setup", "filter=ansible_default_ipv4")["ansible_facts"]["ansible_default_ipv4"]["address"]


@pytest.fixture(scope="module")
def version(host):
    return host.check_output(f"{PREFIX}/current/bin/querygpt-backend --version").split()[-1]


@pytest.fixture(scope="module")
def props(host):
    return host.service("querygpt-backend").systemd_properties


@pytest.fixture(scope="module")
def auth(host):
    """curl arguments authenticating as an admin (docs/access-control.md): made with the CLI as
    an operator does, the password on stdin, then an API token written straight to a root-only
    header file on the instance."""
    password = secrets.token_urlsafe(24)
    made = host.run(f"printf %s {shlex.quote(password)}"
                    f" | {CLI} create-admin --username molecule-admin --env-file {ENV_FILE}")
    assert made.rc == 0, made.stderr
    token = host.run(
        f"umask 077 && t=$({CLI} create-token --username molecule-admin --name molecule-verify --expires-in-days 1"
        f" --env-file {ENV_FILE} | grep -E '^qgpt_[A-Za-z0-9_-]{{43}}$' | tail -n 1)"
        f" && test -n \"$t\" && printf 'Authorization: Bearer %s\\n' \"$t\" > {AUTH_HEADER}")
    assert token.rc == 0, token.stderr
    return f"-H @{AUTH_HEADER}"


def http(host, method, url, body=None, content_type=None, auth=""):
    """(status, parsed JSON) of a request made on the instance with curl; `auth`: the `auth`
    fixture's curl arguments (every API call but /health, /ready and /metrics needs them)."""
    args = f"-s --cacert {CA} -o /tmp/resp -w '%{{http_code}}' {auth} -X {method} '{url}'"
    if content_type == "multipart":
        args += " " + body
    elif body is not None:
        args += f" -H 'Content-Type: application/json' --data '{json.dumps(body)}'"
    status = int(host.check_output(f"curl {args}"))
    text = host.check_output("cat /tmp/resp")
    return status, json.loads(text) if text.startswith(("{", "[")) else text


def test_release_installed_in_its_virtualenv(host, version):
    assert version == host.check_output(
        "sed -n 's/^__version__ = \"\\(.*\\)\"/\\1/p' "
        f"{PREFIX}/current/lib/python3.13/site-packages/querygpt/__init__.py"
    )
    current = host.file(f"{PREFIX}/current")
    assert current.is_symlink and current.linked_to == f"{PREFIX}/releases/{version}"
    assert host.file(f"{PREFIX}/releases/{version}/pyvenv.cfg").exists
    assert not host.file(f"{PREFIX}/.current.tmp").exists
    assert host.package("python3-venv").is_installed


def test_service_runs_as_querygpt(host, props):
    service = host.service("querygpt-backend")
    assert service.is_running and service.is_enabled
    assert host.check_output(f"ps -o user= -p {props['MainPID']}").strip() == "querygpt"
    # the uvicorn workers too
    users = host.check_output(f"ps -o user= --ppid {props['MainPID']}").split()
    assert users and set(users) == {"querygpt"}
    assert host.user("querygpt").shell == "/usr/sbin/nologin"
    assert props["ExecStart"].startswith("{ path=/opt/querygpt/backend/current/bin/querygpt-backend")


def test_unit_is_sandboxed(host, props):
    assert props["User"] == "querygpt"
    assert props["ProtectSystem"] == "strict"
    assert props["ProtectHome"] == "yes"
    assert props["NoNewPrivileges"] == "yes"
    assert props["PrivateTmp"] == "yes"
    assert props["Restart"] == "on-failure"
    assert props["RuntimeDirectory"] == "querygpt-backend"
    bounding = host.check_output("systemctl show querygpt-backend --property CapabilityBoundingSet --value")
    assert "cap_" not in bounding
    assert "PROMETHEUS_MULTIPROC_DIR=/run/querygpt-backend" in props["Environment"]
    assert props["EnvironmentFiles"].startswith(ENV_FILE)


def test_unit_exposure_at_most_the_ceiling(host):
    # The score as this host's systemd computes it, with the API still answering
    # (test_health_and_ready, test_upload_and_query_end_to_end, test_metrics_in_multiprocess_mode).
    assert exposure(host, "querygpt-backend") <= CEILING, failed_checks(host, "querygpt-backend")


def test_memory_and_cpu_limits(host, props):
    # The role's defaults: 80% of the RAM, 90% of all the CPUs.
    assert int(props["MemoryMax"]) == pytest.approx(0.80 * memory_total(host), rel=0.01)
    assert cpu_quota_percent(host, "querygpt-backend") == pytest.approx(90 * vcpus(host))


def test_env_file_is_root_only_and_holds_the_settings(host, private_ip):
    env_file = host.file(ENV_FILE)
    assert env_file.user == "root" and env_file.group == "root"
    assert env_file.mode == 0o600  # not world- or group-readable: it holds the Qdrant key
    env = dict(
        line.split("=", 1) for line in host.check_output(f"cat {ENV_FILE}").splitlines() if "=" in line and not line.startswith("#")
    )
    assert env["QUERYGPT_HOST"] == private_ip
    assert env["QUERYGPT_PORT"] == "8000"
    assert env["QUERYGPT_QDRANT_API_KEY"] == '"molecule-test-qdrant-key"'
    assert env["QUERYGPT_SECRET_KEY"] == '"molecule-test-secret-key-not-for-production-use"'
    assert env["QUERYGPT_TOP_K"] == "3"  # side_effect.yml changed it from 8
    # the role's defaults for the Qdrant peers' cool-down and connect timeout
    assert env["QUERYGPT_QDRANT_COOLDOWN_SECONDS"] == "10.0"
    assert env["QUERYGPT_QDRANT_CONNECT_TIMEOUT_SECONDS"] == "2.0"
    # converge.yml sets 2; the default (1 per vCPU + 1, at most 8) is read back in the lab
    # (tests/lab/test_lab_app_tier.py)
    assert env["QUERYGPT_WORKERS"] == "2"
    # the running main process has exactly these values
    pid = host.service("querygpt-backend").systemd_properties["MainPID"]
    running = host.check_output(f"tr '\\0' '\\n' < /proc/{pid}/environ")
    assert "QUERYGPT_TOP_K=3" in running.splitlines()


def test_side_effect_restarted_the_service(host, props):
    restart = json.loads(host.file("/var/tmp/molecule-backend-restart.json").content_string)
    assert restart["before"] != restart["after"]
    # That restart was the side effect's last; idempotence and check mode must not restart it.
    settled = json.loads(host.file("/var/tmp/molecule-backend-settled.json").content_string)
    assert props["InvocationID"] == settled["invocation"]


def test_api_bound_only_on_private_address(host, private_ip):
    listening = [s for s in host.socket.get_listening_sockets() if s.endswith(":8000")]
    assert listening == [f"tcp://{private_ip}:8000"]
    assert host.run("curl -s -o /dev/null http://127.0.0.1:8000/health").rc != 0


def test_api_serves_verified_tls_only(host, private_ip):
    """The internal PKI's host pair, copied for the service (docs/architecture.md, "Internal
    TLS"): nginx and Prometheus verify it against the internal CA; plaintext gets no answer."""
    key = host.file("/etc/querygpt/server.key")
    assert (key.user, key.group, key.mode) == ("root", "querygpt", 0o640)
    assert host.file("/etc/querygpt/server.pem").content == host.file("/etc/journal-tls/host.pem").content
    verified = host.run(f"curl -sf --cacert {CA} https://{private_ip}:8000/health")
    assert verified.rc == 0, verified.stderr
    plain = host.run(f"curl -s --max-time 5 -o /dev/null -w '%{{http_code}}' http://{private_ip}:8000/health")
    assert plain.rc != 0 and plain.stdout in ("", "000")
    # TLS 1.1 refused: tests/app/test_backend_internal_tls.py, with a client that does offer it
    # (curl --tls-max 1.1 here would fail in the client's own OpenSSL, whatever the server does).


def test_health_and_ready(host, private_ip, version):
    status, body = http(host, "GET", f"https://{private_ip}:8000/health")
    assert status == 200 and body == {"status": "ok", "version": version}
    status, body = http(host, "GET", f"https://{private_ip}:8000/ready")
    assert status == 200, body


def test_an_anonymous_query_is_401_and_health_needs_no_token(host, private_ip):
    status, body = http(host, "POST", f"https://{private_ip}:8000/query",
                        {"query": "total of the orders of each customer", "collection_name": "molecule"})
    assert status == 401 and body["detail"], body
    assert http(host, "GET", f"https://{private_ip}:8000/health")[0] == 200


def test_upload_and_query_end_to_end(host, private_ip, auth):
    status, body = http(
        host, "POST", f"https://{private_ip}:8000/upload",
        "-F 'pdf_file=@/var/tmp/schema.pdf;type=application/pdf' -F collection_name=molecule", "multipart", auth,
    )
    assert status == 200, body
    assert body["collection_name"] == "molecule" and body["pages"] == 1 and body["chunks"] >= 1
    status, body = http(
        host, "POST", f"https://{private_ip}:8000/query",
        {"query": "total of the orders of each customer", "collection_name": "molecule"}, auth=auth,
    )
    assert status == 200, body
    assert body["sources"] and body["sources"][0]["filename"] == "schema.pdf"
    assert "orders" in body["result"].lower()


def test_metrics_in_multiprocess_mode(host, private_ip):
    status, text = http(host, "GET", f"https://{private_ip}:8000/metrics")
    assert status == 200
    assert "querygpt_http_requests_total" in text
    assert host.run("ls /run/querygpt-backend/*.db").rc == 0


def _upload(host, private_ip, path, auth):
    return http(
        host, "POST", f"https://{private_ip}:8000/upload",
        f"-F 'pdf_file=@{path};type=application/pdf' -F collection_name=molecule", "multipart", auth,
    )


def test_pdf_bomb_is_refused_by_the_extraction_bounds(host, private_ip, auth):
    """The 10-page bomb of issue 16 (one stream inflating to 70 MiB): a 413 naming the bound,
    from the extraction child, and the service is still up."""
    pid = host.service("querygpt-backend").systemd_properties["MainPID"]
    status, body = _upload(host, private_ip, "/var/tmp/bomb.pdf", auth)
    assert status == 413, body
    assert "QUERYGPT_PDF_MAX_STREAM_BYTES" in body["detail"]
    assert host.service("querygpt-backend").systemd_properties["MainPID"] == pid
    assert http(host, "GET", f"https://{private_ip}:8000/health")[0] == 200


def test_encrypted_pdfs_need_the_cryptography_dependency_on_the_host(host, private_ip, auth):
    """AES needs cryptography in the release's virtualenv: an owner-password-only copy is
    indexed, a password-protected one is refused as encrypted (not "damaged")."""
    status, body = _upload(host, private_ip, "/var/tmp/aes-open.pdf", auth)
    assert status == 200, body
    status, body = _upload(host, private_ip, "/var/tmp/aes-locked.pdf", auth)
    assert status == 422, body
    assert body["detail"] == "The PDF is encrypted; upload a copy without a password."


def test_env_file_passes_the_pdf_bounds(host):
    env = host.check_output(f"cat {ENV_FILE}").splitlines()
    for line in ("QUERYGPT_PDF_MAX_PAGES=1000", "QUERYGPT_PDF_MAX_CHARS=2000000",
                 "QUERYGPT_PDF_MAX_CHUNKS=5000", "QUERYGPT_PDF_MAX_STREAM_BYTES=4194304",
                 "QUERYGPT_PDF_MEMORY_BYTES=536870912", "QUERYGPT_PDF_CPU_SECONDS=30"):
        assert line in env
def test_limits_reach_the_service(host, private_ip):
    env = dict(
        line.split("=", 1) for line in host.check_output(f"cat {ENV_FILE}").splitlines() if "=" in line and not line.startswith("#")
    )
    # the role's defaults, per worker process (roles/backend/README.md, "Limits")
    assert {k: env[k] for k in env if k.endswith(("_DEADLINE_SECONDS", "_RATE", "_BURST", "_CONCURRENCY", "_GPU_QUEUE"))} == {
        "QUERYGPT_QUERY_DEADLINE_SECONDS": "240", "QUERYGPT_UPLOAD_DEADLINE_SECONDS": "240",
        "QUERYGPT_GPU_CONCURRENCY": "1", "QUERYGPT_GPU_QUEUE": "4",
        "QUERYGPT_QUERY_RATE": "5.0", "QUERYGPT_QUERY_BURST": "10", "QUERYGPT_QUERY_CONCURRENCY": "8",
        "QUERYGPT_UPLOAD_RATE": "1.0", "QUERYGPT_UPLOAD_BURST": "5", "QUERYGPT_UPLOAD_CONCURRENCY": "2",
    }
    # the service accepted them (it refuses to start on an invalid one) and counts refusals
    status, text = http(host, "GET", f"https://{private_ip}:8000/metrics")
    assert status == 200
    assert 'querygpt_requests_rejected_total{endpoint="query",reason="gpu_queue_full"}' in text
    assert 'querygpt_deadline_exceeded_total{endpoint="query",stage="generate"}' in text
