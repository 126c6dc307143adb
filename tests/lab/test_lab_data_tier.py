"""The data tier on the lab: reachable from the backends only, keys enforced, models present."""

from __future__ import annotations

import json
import subprocess

import pytest
import yaml

from conftest import REPO, ansible_env

PROBE = "timeout 3 bash -c '</dev/tcp/{address}/{port}' && echo open || echo closed"


@pytest.fixture(scope="module")
def vault() -> dict:
    out = subprocess.run([".venv/bin/ansible-vault", "view", "inventories/lab/group_vars/all/vault.yml"],
                         cwd=REPO, env=ansible_env(), capture_output=True, text=True, check=True).stdout
    return yaml.safe_load(out)


@pytest.mark.parametrize("port", [6333, 6334])
def test_qdrant_is_open_to_every_backend_across_azs(lab, port):
    qdrant = lab.address(lab.groups["qdrant"][0])
    for backend in lab.groups["backend"]:
        assert lab.exec(backend, PROBE.format(address=qdrant, port=port)).stdout.strip() == "open", backend


def test_ollama_is_open_to_every_backend(lab):
    ollama = lab.address(lab.groups["ollama"][0])
    for backend in lab.groups["backend"]:
        assert lab.exec(backend, PROBE.format(address=ollama, port=11434)).stdout.strip() == "open", backend


@pytest.mark.parametrize("group", ["edge", "bastion"])
def test_data_tier_is_closed_to_other_tiers(lab, group):
    source = lab.groups[group][0]
    qdrant = lab.address(lab.groups["qdrant"][0])
    ollama = lab.address(lab.groups["ollama"][0])
    assert lab.exec(source, PROBE.format(address=qdrant, port=6333)).stdout.strip() == "closed"
    assert lab.exec(source, PROBE.format(address=ollama, port=11434)).stdout.strip() == "closed"


def test_services_bind_only_the_private_address(lab):
    for group, port in (("qdrant", 6333), ("ollama", 11434)):
        host = lab.groups[group][0]
        listeners = lab.ssh(host, f"ss -Hltn 'sport = :{port}'").stdout.split()
        local = [field for field in listeners if field.endswith(f":{port}")]
        assert local == [f"{lab.address(host)}:{port}"], f"{host}: {listeners}"


def test_qdrant_enforces_its_api_keys(lab, vault):
    backend = lab.groups["backend"][0]
    url = f"http://{lab.address(lab.groups['qdrant'][0])}:6333/collections"
    status = "curl -s -o /dev/null -w '%{{http_code}}' {headers} {url}"
    assert lab.exec(backend, status.format(headers="", url=url)).stdout == "401"
    with_key = f"-H 'api-key: {vault['vault_qdrant_api_key']}'"
    assert lab.exec(backend, status.format(headers=with_key, url=url)).stdout == "200"
    read_only = f"-H 'api-key: {vault['vault_qdrant_read_only_api_key']}' -X PUT -H 'Content-Type: application/json'"
    create = status.format(headers=read_only + " -d '{\"vectors\":{\"size\":4,\"distance\":\"Cosine\"}}'",
                           url=url + "/lab-probe")
    assert lab.exec(backend, create).stdout == "403"


def test_ollama_serves_the_pinned_models_at_their_pinned_digests(lab):
    backend = lab.groups["backend"][0]
    ollama = lab.groups["ollama"][0]
    tags = json.loads(lab.exec(backend, f"curl -sf http://{lab.address(ollama)}:11434/api/tags").stdout)
    served = {m["name"]: m["digest"] for m in tags["models"]}
    pinned = lab.render("ollama_models", ollama)
    assert {m["name"] for m in pinned} == {"all-minilm:l6-v2", "qwen2.5-coder:1.5b"}
    for model in pinned:
        assert served.get(model["name"]) == model["digest"].removeprefix("sha256:"), (model, served)
