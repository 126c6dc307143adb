"""Bad input to the qdrant role fails before anything changes, naming the variable.

The preflight-only cases run together through preflight_harness.run_batch (one
ansible-playbook run, a host per case); the host checks (installed version) and the checksum
(the `download` entry point) run the role with ansible-playbook against localhost in check mode. Preflight only asserts,
so nothing on this machine changes; the download writes only into a temporary cache.
Facts are stubbed: no gathering, the installed version comes from a fact file in a
temporary directory read with `setup: fact_path=...`. Every bad case has a passing twin,
so a failure here means the input was refused, not that the harness is broken.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

import preflight_harness as harness

REPO = Path(__file__).resolve().parents[2]
ANSIBLE_PLAYBOOK = Path(sys.executable).with_name("ansible-playbook")

GOOD_VARS: dict[str, object] = {
    "qdrant_version": "1.19.0",
    "qdrant_checksum": "0" * 64,
    "qdrant_api_key": "test-full-access-key",
    "qdrant_read_only_api_key": "test-read-only-key",
    "qdrant_bind_address": "10.0.0.5",
    "qdrant_http_port": 6333,
    "qdrant_grpc_port": 6334,
}

PLAYBOOK = """\
- name: Run qdrant {entry} with stubbed facts
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Stub the local facts (installed version)
      ansible.builtin.setup:
        gather_subset: ['!all', '!min', 'local']
        fact_path: {fact_dir}
{includes}
"""

INCLUDE = """\
    - name: Include qdrant {entry}
      ansible.builtin.include_role:
        name: qdrant
        tasks_from: {entry}
"""


def run_role(tmp_path: Path, overrides: dict[str, object], *, entries=("preflight",), installed=None):
    """ansible-playbook --check on localhost; returns (exit code, combined output)."""
    fact_dir = tmp_path / "facts.d"
    fact_dir.mkdir(exist_ok=True)
    if installed:
        (fact_dir / "qdrant.fact").write_text(json.dumps({"version": installed, "installed_at": "2026-01-01T00:00:00Z"}))
    playbook = tmp_path / "playbook.yml"
    playbook.write_text(
        PLAYBOOK.format(
            entry="+".join(entries),
            fact_dir=fact_dir,
            includes="".join(INCLUDE.format(entry=e) for e in entries),
        )
    )
    inventory = tmp_path / "inventory.ini"
    inventory.write_text(f"localhost ansible_connection=local ansible_python_interpreter={sys.executable}\n")
    extra = tmp_path / "vars.json"
    extra.write_text(json.dumps({**GOOD_VARS, "qdrant_download_cache_dir": str(tmp_path / "cache"), **overrides}))
    env = {
        **os.environ,
        "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
        "ANSIBLE_ROLES_PATH": str(REPO / "roles"),
        "ANSIBLE_CACHE_PLUGIN": "ansible.builtin.memory",
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_LOCAL_TEMP": str(tmp_path / "ansible-local"),
    }
    proc = subprocess.run(
        [str(ANSIBLE_PLAYBOOK), "-i", str(inventory), "--check", "-e", f"@{extra}", str(playbook)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return proc.returncode, proc.stdout + proc.stderr


def assert_refused(result: tuple[int, str], *needles: str) -> None:
    code, output = result
    assert code != 0, output
    for needle in needles:
        assert needle in output, f"{needle!r} not in output:\n{output}"


PEERS = ["10.0.11.20", "10.0.12.20", "10.0.13.20"]
ZONES = ["eu-central-1a", "eu-central-1b", "eu-central-1c"]
CLUSTER: dict[str, object] = {
    "qdrant_cluster_enabled": True,
    "qdrant_cluster_peers": PEERS,
    "qdrant_cluster_peer_zones": ZONES,
    "qdrant_bind_address": PEERS[0],
}

# The preflight-only cases, all in one ansible-playbook run (a host per case; most of a
# run's cost is starting Ansible). Each bad case has a passing twin here.
CASES: dict[str, dict[str, object]] = {
    "good": {},
    "no-api-key": {"qdrant_api_key": ""},
    "no-read-only-key": {"qdrant_read_only_api_key": ""},
    "equal-keys": {"qdrant_read_only_api_key": GOOD_VARS["qdrant_api_key"]},
    "no-checksum": {"qdrant_checksum": ""},
    "sha1-checksum": {"qdrant_checksum": "sha1:abc"},
    "http-port-range": {"qdrant_http_port": 70000},
    "grpc-port-range": {"qdrant_grpc_port": 70000},
    "http-port-text": {"qdrant_http_port": "abc"},
    "grpc-port-text": {"qdrant_grpc_port": "abc"},
    "bind-all": {"qdrant_bind_address": "0.0.0.0"},
    "bind-all-allowed": {"qdrant_bind_address": "0.0.0.0", "qdrant_allow_bind_all": True},
    "low-nofile": {"qdrant_limit_nofile": 1024},
    "tls-key-relative": {"qdrant_tls_key_source": "host.key"},
    "tls-ca-empty": {"qdrant_tls_ca_source": ""},
    "tls-other-paths": {"qdrant_tls_certificate_source": "/etc/pki/qdrant.pem",
                        "qdrant_tls_key_source": "/etc/pki/qdrant.key", "qdrant_tls_ca_source": "/etc/pki/ca.pem"},
    "three-problems": {"qdrant_api_key": "", "qdrant_checksum": "", "qdrant_limit_nofile": 1024},
    "device-path-as-volume-id": {"qdrant_data_volume_id": "/dev/sdf"},
    "volume-id": {"qdrant_data_volume_id": "vol-0123456789abcdef0"},
    "volume-id-and-device": {"qdrant_data_volume_id": "vol-0123456789abcdef0", "qdrant_data_device": "/dev/xvdf"},
    "device": {"qdrant_data_device": "/dev/xvdf"},
    # Distributed mode, production-shaped: three peers in three zones, as the wiring layer
    # passes them (private addresses of groups['qdrant'], zones from the EC2 inventory).
    "cluster": CLUSTER,
    "cluster-joining-peer": {**CLUSTER, "qdrant_bind_address": PEERS[2]},
    "cluster-bind-all-own-address": {**CLUSTER, "qdrant_bind_address": "0.0.0.0", "qdrant_allow_bind_all": True,
                                     "qdrant_cluster_address": PEERS[1]},
    "cluster-zones-unknown-spread-not-required": {**CLUSTER, "qdrant_cluster_peer_zones": [],
                                                  "qdrant_cluster_require_zone_spread": False},
    "cluster-off-ignores-bad-cluster-input": {"qdrant_cluster_peers": "10.0.1.10", "qdrant_p2p_port": 6333},
    "cluster-host-not-a-peer": {**CLUSTER, "qdrant_bind_address": "10.0.1.99"},
    "cluster-duplicate-peer": {**CLUSTER, "qdrant_cluster_peers": [PEERS[0], PEERS[1], PEERS[0]]},
    "cluster-two-peers": {**CLUSTER, "qdrant_cluster_peers": PEERS[:2], "qdrant_cluster_peer_zones": ZONES[:2]},
    "cluster-two-peers-allowed": {**CLUSTER, "qdrant_cluster_peers": PEERS[:2], "qdrant_cluster_peer_zones": ZONES[:2],
                                  "qdrant_cluster_min_peers": 2},
    "cluster-min-peers-one": {**CLUSTER, "qdrant_cluster_min_peers": 1},
    "cluster-no-peers": {**CLUSTER, "qdrant_cluster_peers": [], "qdrant_cluster_peer_zones": []},
    "cluster-peers-a-string": {**CLUSTER, "qdrant_cluster_peers": ",".join(PEERS)},
    "cluster-p2p-equals-http": {**CLUSTER, "qdrant_p2p_port": 6333},
    "cluster-one-zone": {**CLUSTER, "qdrant_cluster_peer_zones": ["eu-central-1a"] * 3},
    "cluster-one-zone-accepted": {**CLUSTER, "qdrant_cluster_peer_zones": ["eu-central-1a"] * 3,
                                  "qdrant_cluster_require_zone_spread": False},
    "cluster-zones-unknown": {**CLUSTER, "qdrant_cluster_peer_zones": ["eu-central-1a", "unknown", "eu-central-1c"]},
    "cluster-zones-missing": {**CLUSTER, "qdrant_cluster_peer_zones": []},
    "cluster-zones-short": {**CLUSTER, "qdrant_cluster_peer_zones": ZONES[:2], "qdrant_cluster_require_zone_spread": False},
    # the first peer rebuilt on empty storage joins the others (replace_qdrant_node.yml)
    "cluster-first-peer-joins-another": {**CLUSTER, "qdrant_cluster_bootstrap_peer": PEERS[1]},
    "cluster-bootstrap-through-itself": {**CLUSTER, "qdrant_cluster_bootstrap_peer": PEERS[0]},
    "cluster-bootstrap-not-a-peer": {**CLUSTER, "qdrant_cluster_bootstrap_peer": "10.0.1.99"},
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("qdrant")
    base = {**GOOD_VARS, "qdrant_download_cache_dir": str(tmp / "cache")}
    return harness.run_batch(tmp, {case: ("qdrant", {**base, **overrides}) for case, overrides in CASES.items()},
                             good=False)


@pytest.mark.parametrize("case", ["good", "bind-all-allowed", "volume-id", "device"])
def test_the_passing_twins_pass(runs, case):
    runs[case].assert_ok()


@pytest.mark.parametrize(("case", "var"), [("no-api-key", "qdrant_api_key"),
                                           ("no-read-only-key", "qdrant_read_only_api_key")])
def test_missing_api_key(runs, case, var):
    runs[case].assert_refused(f"{var}: is empty")


def test_equal_api_keys(runs):
    runs["equal-keys"].assert_refused("qdrant_read_only_api_key: is empty or equals qdrant_api_key")


def test_api_key_never_printed(runs):
    # the whole run's output: no case, failing or passing, prints the key
    assert GOOD_VARS["qdrant_api_key"] not in runs["no-read-only-key"].output


def test_missing_checksum_explains_how_to_pin(runs):
    runs["no-checksum"].assert_refused("qdrant_checksum: is empty", "sha256sum")


def test_malformed_checksum(runs):
    runs["sha1-checksum"].assert_refused("qdrant_checksum: is not a sha256")


@pytest.mark.parametrize("var", ["qdrant_http_port", "qdrant_grpc_port"])
def test_port_out_of_range(runs, var):
    runs[f"{var.split('_')[1]}-port-range"].assert_refused(var, "1-65535")


@pytest.mark.parametrize("var", ["qdrant_http_port", "qdrant_grpc_port"])
def test_port_not_a_number(runs, var):
    runs[f"{var.split('_')[1]}-port-text"].assert_refused(f"{var}: expected a TCP port")


def test_bind_all_refused_unless_allowed(runs):
    runs["bind-all"].assert_refused("qdrant_bind_address", "qdrant_allow_bind_all")


def test_low_nofile_limit(runs):
    runs["low-nofile"].assert_refused("qdrant_limit_nofile")


@pytest.mark.parametrize(("case", "needle"), [
    ("tls-key-relative", "qdrant_tls_key_source: expected the absolute path"),
    ("tls-ca-empty", "qdrant_tls_ca_source: expected the absolute path"),
])
def test_bad_tls_input_refused_naming_the_variable(runs, case, needle):
    runs[case].assert_refused(needle)


def test_tls_files_elsewhere_pass(runs):
    runs["tls-other-paths"].assert_ok()


HOST_CHECKS = ("preflight", "host_checks")


@pytest.mark.parametrize("case", ["cluster", "cluster-joining-peer", "cluster-bind-all-own-address",
                                  "cluster-zones-unknown-spread-not-required", "cluster-off-ignores-bad-cluster-input",
                                  "cluster-two-peers-allowed", "cluster-one-zone-accepted",
                                  "cluster-first-peer-joins-another"])
def test_cluster_passing_twins_pass(runs, case):
    runs[case].assert_ok()


@pytest.mark.parametrize(("case", "needles"), [
    ("cluster-host-not-a-peer", ["qdrant_cluster_address: is \"10.0.1.99\", which is not in qdrant_cluster_peers"]),
    ("cluster-duplicate-peer", ["qdrant_cluster_peers: lists a peer more than once"]),
    ("cluster-two-peers", ["qdrant_cluster_peers: has 2 peer(s), fewer than qdrant_cluster_min_peers (3)"]),
    ("cluster-min-peers-one", ["qdrant_cluster_min_peers: expected a number of peers, at least 2"]),
    ("cluster-no-peers", ["qdrant_cluster_peers: expected the peers' private addresses",
                          "qdrant_cluster_address: is \"10.0.11.20\", which is not in qdrant_cluster_peers"]),
    ("cluster-peers-a-string", ["qdrant_cluster_peers: expected the peers' private addresses"]),
    ("cluster-p2p-equals-http", ["qdrant_p2p_port: expected a TCP port 1-65535 other than qdrant_http_port"]),
    ("cluster-one-zone", ["qdrant_cluster_require_zone_spread: every peer sits in eu-central-1a"]),
    ("cluster-zones-unknown", ["qdrant_cluster_require_zone_spread: the zones of the peers are not known"]),
    ("cluster-zones-missing", ["qdrant_cluster_require_zone_spread: the zones of the peers are not known"]),
    ("cluster-zones-short", ["qdrant_cluster_peer_zones: has 2 zone(s) for 3 peer(s)"]),
    ("cluster-bootstrap-through-itself", ["qdrant_cluster_bootstrap_peer: is \"10.0.11.20\"", "other than this host's"]),
    ("cluster-bootstrap-not-a-peer", ["qdrant_cluster_bootstrap_peer: is \"10.0.1.99\"", "one of qdrant_cluster_peers"]),
])
def test_bad_cluster_input_refused_naming_the_variable(runs, case, needles):
    runs[case].assert_refused(*needles)


def test_cluster_address_default_needs_no_facts(tmp_path):
    # playbooks/preflight.yml runs without facts: the announced address then defaults to the
    # fact-based bind address, which is left alone; the rest of the cluster input is checked
    overrides = {k: v for k, v in CLUSTER.items() if k != "qdrant_bind_address"}
    harness.run_role(tmp_path, "qdrant", overrides).assert_ok()


def test_every_problem_is_reported_in_one_run(runs):
    runs["three-problems"].assert_refused("qdrant_api_key: is empty", "qdrant_checksum: is empty", "qdrant_limit_nofile:")


def test_data_volume_id_must_be_an_ebs_volume_id(runs):
    runs["device-path-as-volume-id"].assert_refused("qdrant_data_volume_id: got", "vol-")


def test_data_volume_id_and_device_are_exclusive(runs):
    runs["volume-id-and-device"].assert_refused("qdrant_data_device: is set together with qdrant_data_volume_id")


def test_bind_address_default_needs_no_facts(tmp_path):
    # playbooks/preflight.yml runs without facts: the fact-based default is then left alone
    overrides = {k: v for k, v in GOOD_VARS.items() if k != "qdrant_bind_address"}
    harness.run_role(tmp_path, "qdrant", overrides, good=False).assert_ok()


def test_minor_version_skip_refused(tmp_path):
    result = run_role(tmp_path, {}, installed="1.17.2", entries=HOST_CHECKS)
    assert_refused(result, "qdrant_version", "would skip 1.18", "one minor version at a time", "qdrant_force_upgrade")


def test_minor_version_skip_allowed_when_forced(tmp_path):
    code, output = run_role(tmp_path, {"qdrant_force_upgrade": True}, installed="1.17.2", entries=HOST_CHECKS)
    assert code == 0, output


@pytest.mark.parametrize("installed", ["1.18.4", "1.19.0"])
def test_next_minor_and_same_version_allowed(tmp_path, installed):
    code, output = run_role(tmp_path, {}, installed=installed, entries=HOST_CHECKS)
    assert code == 0, output


def test_downgrade_refused(tmp_path):
    assert_refused(run_role(tmp_path, {}, installed="1.19.2", entries=HOST_CHECKS), "qdrant_version",
                   "older than the installed 1.19.2")


def _small_tar(tmp_path: Path) -> tuple[Path, str]:
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w:gz") as tar:
        payload = b"#!/bin/sh\necho not qdrant\n"
        info = tarfile.TarInfo("qdrant")
        info.size = len(payload)
        info.mode = 0o755
        tar.addfile(info, io.BytesIO(payload))
    archive = tmp_path / "qdrant-x86_64-unknown-linux-gnu.tar.gz"
    archive.write_bytes(data.getvalue())
    return archive, hashlib.sha256(data.getvalue()).hexdigest()


def test_checksum_mismatch_refused_on_download(tmp_path):
    archive, real_sum = _small_tar(tmp_path)
    wrong_sum = ("f" if real_sum[0] != "f" else "e") + real_sum[1:]
    result = run_role(
        tmp_path,
        {"qdrant_download_url": f"file://{archive}", "qdrant_checksum": wrong_sum},
        entries=("preflight", "download"),
    )
    assert_refused(result, "qdrant_checksum", "did not match")
    # nothing unverified is left in the cache
    assert not any((tmp_path / "cache").glob("*.tar.gz"))


def test_matching_checksum_downloads(tmp_path):
    archive, real_sum = _small_tar(tmp_path)
    code, output = run_role(
        tmp_path,
        {"qdrant_download_url": f"file://{archive}", "qdrant_checksum": real_sum},
        entries=("preflight", "download"),
    )
    assert code == 0, output
    cached = list((tmp_path / "cache").glob("*.tar.gz"))
    assert [p.read_bytes() for p in cached] == [archive.read_bytes()]


def _host_with(tmp_path: Path, cluster_in_config: bool, collections: list[str]) -> dict[str, object]:
    """A host whose current config runs in the given mode, with these collections stored."""
    data = tmp_path / "data"
    for name in collections:
        (data / "storage" / "collections" / name).mkdir(parents=True)
    (data / "storage").mkdir(parents=True, exist_ok=True)
    config = tmp_path / "config.yaml"
    config.write_text("storage:\n  storage_path: x\n" + ("cluster:\n  enabled: true\n" if cluster_in_config else ""))
    return {**CLUSTER, "qdrant_bind_address": PEERS[0], "qdrant_data_dir": str(data), "_qdrant_config_file": str(config)}


def test_turning_a_single_node_holding_collections_into_a_peer_is_refused(tmp_path):
    result = run_role(tmp_path, _host_with(tmp_path, False, ["docs", "sales"]), installed="1.19.0", entries=HOST_CHECKS)
    assert_refused(result, "qdrant_cluster_enabled", "single-node Qdrant that holds", "docs, sales",
                   "restore_qdrant.yml")


@pytest.mark.parametrize(("cluster_in_config", "collections"), [(False, []), (True, ["docs"])],
                         ids=["empty-single-node", "already-a-peer"])
def test_a_peer_or_an_empty_single_node_may_run_in_cluster_mode(tmp_path, cluster_in_config, collections):
    code, output = run_role(tmp_path, _host_with(tmp_path, cluster_in_config, collections), installed="1.19.0",
                            entries=HOST_CHECKS)
    assert code == 0, output
