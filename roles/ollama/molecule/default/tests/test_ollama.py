"""Verify the ollama role on a converged instance: read back what an operator relies on."""

import hashlib
import json
import re

import pytest

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


def api_get(host, private_ip, path):
    script = (
        "import sys, urllib.request; "
        f"sys.stdout.write(urllib.request.urlopen('http://{private_ip}:11434{path}', timeout=5).read().decode())"
    )
    return json.loads(host.check_output(f'python3 -c "{script}"'))


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


def test_environment_from_variables(props, private_ip):
    env = dict(item.split("=", 1) for item in props["Environment"].split())
    assert env["OLLAMA_HOST"] == f"{private_ip}:11434"
    assert env["OLLAMA_MODELS"] == MODELS_DIR
    # side_effect.yml changed it from 5m; the restart and the second idempotence ran with it
    assert env["OLLAMA_KEEP_ALIVE"] == "10m"
    assert env["OLLAMA_NUM_PARALLEL"] == "1"
    assert env["OLLAMA_MAX_LOADED_MODELS"] == "2"
    assert env["OLLAMA_MAX_QUEUE"] == "512"
    assert env["OLLAMA_STANDIN_MIRROR"] == "/srv/ollama-mirror"


def test_api_bound_only_on_private_address(host, private_ip):
    listening = [s for s in host.socket.get_listening_sockets() if s.endswith(":11434")]
    assert listening == [f"tcp://{private_ip}:11434"]
    assert host.run("python3 -c \"import urllib.request; urllib.request.urlopen('http://127.0.0.1:11434/')\"").rc != 0


def test_api_answers_version(host, private_ip):
    assert api_get(host, private_ip, "/api/version")["version"] == "0.20.0"


def test_declared_models_listed_with_their_manifest_digests(host, private_ip):
    listed = {m["name"]: m["digest"] for m in api_get(host, private_ip, "/api/tags")["models"]}
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
