"""Verify the qdrant role on a converged host, read back live.

The binary is the lab stand-in (a test fixture packaged like upstream's archive), so these
tests check what the role controls: install layout, sandbox, binding, keys, firewall, facts.
"""

import json
import re
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[5] / "molecule" / "shared"))

from unit_security import CEILING, cpu_quota_percent, exposure, failed_checks, memory_total, vcpus  # noqa: E402

# The inventory also holds backend-fake and monitoring-fake: firewall sources, never created.
testinfra_hosts = ["qdrant"]

FULL_KEY = "molecule-test-full-access-key"
READ_ONLY_KEY = "molecule-test-read-only-key"
PORTS = (6333, 6334)
FAKE_SOURCES = {"192.0.2.21", "192.0.2.40"}
# Every port speaks TLS with the host's certificate from the scenario's internal CA.
CA = "/etc/qdrant/tls/ca.pem"
CURL = f"curl --cacert {CA}"


@pytest.fixture(scope="module")
def private_address(host):
    facts = host.ansible("setup", "filter=ansible_default_ipv4", check=False)
    return facts["ansible_facts"]["ansible_default_ipv4"]["address"]


@pytest.fixture(scope="module")
def props(host):
    return host.service("qdrant").systemd_properties


def http_status(host, method, url, key=None, body=None):
    cmd = f"{CURL} -s -o /dev/null -w '%{{http_code}}' -X {method} --max-time 10"
    if key:
        cmd += f" -H 'api-key: {key}'"
    if body:
        cmd += f" -H 'Content-Type: application/json' -d '{body}'"
    return int(host.check_output(f"{cmd} {url}"))


def test_service_runs_enabled_as_qdrant(host, props):
    service = host.service("qdrant")
    assert service.is_running
    assert service.is_enabled
    assert props["User"] == "qdrant"
    main_pid = props["MainPID"]
    assert host.check_output(f"ps -o user= -p {main_pid}").strip() == "qdrant"


def test_unit_is_sandboxed(props):
    assert props["ProtectSystem"] == "strict"
    assert props["NoNewPrivileges"] == "yes"
    assert props["PrivateTmp"] == "yes"
    assert props["ProtectHome"] == "yes"
    assert int(props["LimitNOFILE"]) >= 65536
    assert props["Restart"] == "on-failure"
    assert props["ReadWritePaths"].split() == ["/var/lib/qdrant/storage", "/var/lib/qdrant/snapshots"]
    assert "--config-path /etc/qdrant/config.yaml" in props["ExecStart"]
    assert "/opt/qdrant/1.19.0/qdrant" in props["ExecStart"]


def test_no_capabilities(host, props):
    # systemd prints an empty set as "CapabilityBoundingSet=" (testinfra drops empty values)
    assert host.check_output("systemctl show qdrant -p CapabilityBoundingSet --value").strip() == ""
    status = host.file(f"/proc/{props['MainPID']}/status").content_string
    assert re.search(r"^CapBnd:\s+0+$", status, re.M), status
    assert re.search(r"^CapEff:\s+0+$", status, re.M), status
    assert re.search(r"^NoNewPrivs:\s+1$", status, re.M), status


def test_unit_exposure_at_most_the_ceiling(host):
    # The score as this host's systemd computes it, with the service still answering
    # (test_api_keys_enforced, test_config_change_restarted_then_idempotence_did_not).
    assert exposure(host, "qdrant") <= CEILING, failed_checks(host, "qdrant")


def test_memory_and_cpu_limits(host, props):
    # The role's defaults: 85% of the RAM, 90% of all the CPUs.
    assert int(props["MemoryMax"]) == pytest.approx(0.85 * memory_total(host), rel=0.01)
    assert cpu_quota_percent(host, "qdrant") == pytest.approx(90 * vcpus(host))


def _open_files(limits_text):
    soft, hard = re.search(r"^Max open files\s+(\d+)\s+(\d+)", limits_text, re.M).groups()
    return int(soft), int(hard)


def test_process_gets_the_open_file_limit(host, props):
    # The unit asks for >= 65536 (test_unit_is_sandboxed). A container cannot go above its
    # own hard limit (20000 under this machine's docker, which cannot be raised here), so the
    # live process must get the unit's limit capped at PID 1's hard limit; systemd's default
    # for services is 1024.
    _, pid1_hard = _open_files(host.file("/proc/1/limits").content_string)
    soft, _ = _open_files(host.file(f"/proc/{props['MainPID']}/limits").content_string)
    assert soft == min(int(props["LimitNOFILE"]), pid1_hard)
    assert soft > 1024


def test_versioned_install_and_fact(host):
    link = host.file("/usr/local/bin/qdrant")
    assert link.is_symlink
    assert link.linked_to == "/opt/qdrant/1.19.0/qdrant"
    binary = host.file("/opt/qdrant/1.19.0/qdrant")
    assert binary.user == "root" and binary.mode == 0o755
    assert "1.19.0" in host.check_output("/usr/local/bin/qdrant --version").split()
    fact = json.loads(host.file("/etc/ansible/facts.d/qdrant.fact").content_string)
    assert fact["version"] == "1.19.0"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", fact["installed_at"])


def test_data_directories(host):
    for path in ("/var/lib/qdrant/storage", "/var/lib/qdrant/snapshots"):
        d = host.file(path)
        assert d.is_directory and d.user == "qdrant" and d.mode == 0o750
    root = host.file("/var/lib/qdrant")
    assert root.user == "root" and root.group == "qdrant"


def test_config_file_protected_and_complete(host, private_address):
    conf = host.file("/etc/qdrant/config.yaml")
    assert (conf.user, conf.group, conf.mode) == ("root", "qdrant", 0o640)
    text = conf.content_string
    assert f'host: "{private_address}"' in text
    assert "telemetry_disabled: true" in text
    assert f'api_key: "{FULL_KEY}"' in text
    assert f'read_only_api_key: "{READ_ONLY_KEY}"' in text
    # side_effect.yml switched INFO -> DEBUG
    assert 'log_level: "DEBUG"' in text


def test_ports_bound_only_on_private_address(host, private_address):
    listening = host.check_output("ss -Hltn").splitlines()
    for port in PORTS:
        local = {line.split()[3] for line in listening if line.split()[3].endswith(f":{port}")}
        assert local == {f"{private_address}:{port}"}, local
        assert not host.socket(f"tcp://0.0.0.0:{port}").is_listening
        assert not host.socket(f"tcp://127.0.0.1:{port}").is_listening


def test_api_keys_enforced(host, private_address):
    base = f"https://{private_address}:6333"
    assert http_status(host, "GET", f"{base}/readyz") == 200
    assert http_status(host, "GET", f"{base}/collections") == 401
    assert http_status(host, "GET", f"{base}/collections", key="wrong-key") == 401
    assert http_status(host, "GET", f"{base}/collections", key=READ_ONLY_KEY) == 200
    body = '{"vectors": {"size": 4, "distance": "Cosine"}}'
    assert http_status(host, "PUT", f"{base}/collections/molecule_probe", key=READ_ONLY_KEY, body=body) == 403
    assert http_status(host, "GET", f"{base}/collections", key=FULL_KEY) == 200


def test_config_change_restarted_then_idempotence_did_not(host, props):
    # InvocationIDs side_effect.yml saw before and after its log-level change
    record = json.loads(host.file("/var/tmp/molecule-qdrant-restart.json").content_string)
    assert record["before"] and record["after"]
    assert record["before"] != record["after"]
    # the idempotence run that followed left the restarted service alone
    assert props["InvocationID"] == record["after"]


# --- distributed mode: the two peers of this scenario form one cluster ---------------------

P2P_PORT = 6335


def api(host, method, url, body=None):
    cmd = f"{CURL} -sf --max-time 10 -X {method} -H 'api-key: {FULL_KEY}'"
    if body:
        cmd += f" -H 'Content-Type: application/json' -d '{body}'"
    return json.loads(host.check_output(f"{cmd} {url}"))["result"]


@pytest.fixture(scope="module")
def cluster(host, private_address):
    return api(host, "GET", f"https://{private_address}:6333/cluster")


@pytest.fixture(scope="module")
def other_peer(cluster, private_address):
    """The other peer's address, as this peer's /cluster lists it."""
    others = [p["uri"] for p in cluster["peers"].values() if f"//{private_address}:" not in p["uri"]]
    assert len(others) == 1, cluster["peers"]
    return re.match(r"https://([0-9.]+):", others[0]).group(1)


def test_cluster_lists_every_peer_at_its_uri(host, cluster, private_address, other_peer):
    assert cluster["status"] == "enabled"
    uris = sorted(p["uri"].rstrip("/") for p in cluster["peers"].values())
    assert uris == sorted(f"https://{a}:{P2P_PORT}" for a in (private_address, other_peer))
    assert cluster["peers"][str(cluster["peer_id"])]["uri"].rstrip("/") == f"https://{private_address}:{P2P_PORT}"
    # the other peer's own run of this test checks its side (its 6333 is firewalled from here)


def test_unit_and_config_run_distributed_mode(host, props, private_address, cluster):
    exec_start = props["ExecStart"]
    assert f"--uri https://{private_address}:{P2P_PORT}" in exec_start
    text = host.file("/etc/qdrant/config.yaml").content_string
    assert re.search(rf"^cluster:\n  enabled: true\n  p2p:\n    port: {P2P_PORT}\n(    #.*\n)*    enable_tls: true\n",
                     text, re.M), text
    # the first peer bootstraps (no --bootstrap); the other joins through it
    first = host.ansible.get_variables()["groups"]["qdrant"][0]
    if host.ansible.get_variables()["inventory_hostname"] == first:
        assert "--bootstrap" not in exec_start
    else:
        assert re.search(rf"--bootstrap https://[0-9.]+:{P2P_PORT}", exec_start), exec_start
    # side_effect.yml restarted the joined peer: it rejoined from its storage, ignoring the flags
    journal = host.check_output("journalctl -u qdrant --no-pager -o cat")
    assert "Local raft state found - bootstrap and uri cli arguments were ignored" in journal


def test_replicated_collection_active_on_both_peers(host, private_address):
    base = f"https://{private_address}:6333/collections/molecule_replicated"
    # created once, by whichever peer's tests run first (the other finds it there)
    if not host.run(f"{CURL} -sf --max-time 10 -H 'api-key: {FULL_KEY}' {base}").succeeded:
        api(host, "PUT", base, '{"vectors": {"size": 4, "distance": "Cosine"}, "shard_number": 1, "replication_factor": 2}')
    for _ in range(20):
        info = api(host, "GET", f"{base}/cluster")
        states = [s["state"] for s in info["local_shards"] + info["remote_shards"]]
        if states == ["Active", "Active"]:
            break
        time.sleep(0.5)
    assert [s["shard_id"] for s in info["local_shards"]] == [0], info
    assert [(s["shard_id"], s["state"]) for s in info["remote_shards"]] == [(0, "Active")], info
    assert states == ["Active", "Active"], info


def test_p2p_port_open_to_the_peer_only(host, private_address, other_peer):
    # p2p: listening on the private address, reachable from the other peer over TLS (a TLS
    # handshake that verifies against the CA; the peer may then want a client certificate)
    assert host.socket(f"tcp://{private_address}:{P2P_PORT}").is_listening
    handshake = host.run(f"openssl s_client -connect {other_peer}:{P2P_PORT} -CAfile {CA} -verify_return_error "
                         f"-verify_ip {other_peer} </dev/null")
    assert "Verify return code: 0 (ok)" in handshake.stdout, handshake.stdout + handshake.stderr
    # the peers' HTTP API is not part of that opening (only backend and monitoring)
    code = host.run(f"{CURL} -s -o /dev/null -w '%{{http_code}}' --max-time 3 https://{other_peer}:6333/readyz").stdout
    assert code == "000", code


def test_every_port_refuses_plaintext(host, private_address):
    # An HTTP request in clear gets no HTTP answer on the REST, gRPC or p2p port.
    for port in (*PORTS, P2P_PORT):
        result = host.run(f"curl -s -o /dev/null -w '%{{http_code}}' --max-time 5 http://{private_address}:{port}/readyz")
        assert result.stdout == "000", (port, result.stdout)
    # and every port serves the host's certificate, verified against the internal CA for its address
    for port in (*PORTS, P2P_PORT):
        handshake = host.run(f"openssl s_client -connect {private_address}:{port} -CAfile {CA} -verify_return_error "
                             f"-verify_ip {private_address} </dev/null")
        assert "Verify return code: 0 (ok)" in handshake.stdout, (port, handshake.stdout + handshake.stderr)


def test_p2p_refuses_a_client_without_a_certificate_from_the_ca(host, private_address, other_peer):
    # Only peers (certificates from the internal CA) may talk p2p: a client without one is refused.
    url = f"https://{other_peer}:{P2P_PORT}/p2p/status"
    refused = host.run(f"{CURL} -s -o /dev/null -w '%{{http_code}}' --max-time 5 -X POST -d '{{}}' {url}")
    assert refused.stdout == "000", refused.stdout
    # with this host's own pair (issued by the internal CA), the same call gets through
    allowed = host.run(f"{CURL} -s -o /dev/null -w '%{{http_code}}' --max-time 5 -X POST -d '{{}}' "
                       f"--cert /etc/qdrant/tls/cert.pem --key /etc/qdrant/tls/key.pem {url}")
    assert allowed.stdout == "200", allowed.stdout


def test_tls_files_readable_by_the_service_only(host):
    key = host.file("/etc/qdrant/tls/key.pem")
    assert (key.user, key.group, key.mode) == ("root", "qdrant", 0o640)
    assert host.file("/etc/qdrant/tls").mode == 0o755
    assert host.file(CA).mode == 0o644
    # any user can verify Qdrant with the CA copy (the runbooks' plays without become do),
    # and none but root and qdrant can read the key or the config with its API keys
    assert host.run(f"runuser -u nobody -- cat {CA}").succeeded
    for secret in ("/etc/qdrant/tls/key.pem", "/etc/qdrant/config.yaml"):
        assert not host.run(f"runuser -u nobody -- cat {secret}").succeeded, secret
    assert host.file("/etc/qdrant/tls/cert.pem").content_string == host.file("/etc/journal-tls/host.pem").content_string
    text = host.file("/etc/qdrant/config.yaml").content_string
    assert "  enable_tls: true\n  verify_https_client_certificate: false\n" in text
    assert 'ca_cert: "/etc/qdrant/tls/ca.pem"' in text


def test_nftables_opens_p2p_to_the_qdrant_group(host, private_address, other_peer):
    openings = host.check_output("nft list chain inet host_firewall openings")
    rule = [line for line in openings.splitlines() if re.search(rf"dport (\{{ )?{P2P_PORT}\b", line)]
    assert rule, openings
    assert all(a in " ".join(rule) for a in (private_address, other_peer)), rule
    assert not any(a in " ".join(rule) for a in FAKE_SOURCES), rule
