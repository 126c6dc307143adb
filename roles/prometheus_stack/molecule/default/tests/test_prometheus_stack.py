"""Verify the prometheus_stack role on a converged monitoring host, read back live.

The other groups hold inventory-only hosts (TEST-NET-1 addresses that never answer), so their
targets are listed but down, and their alerts really fire and reach the lab webhook receiver
that prepare.yml installed. Another real host found through the inventory and scraped up with
its labels is the lab's test (tests/lab/test_lab_monitoring.py).
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[5] / "molecule" / "shared"))

from unit_security import CEILING, exposure, failed_checks  # noqa: E402

testinfra_hosts = ["monitoring"]
# The monitoring host's inventory name (bin/test gives each scenario its own container).
ME = os.environ.get("QGPT_MOLECULE_INSTANCE", "instance")
# The monitoring host's address on the scenario network (molecule.yml).
MONITORING_IP = "10.43.77.10"

SERVICES = ("prometheus", "prometheus-alertmanager", "prometheus-blackbox-exporter")
# Every alert the role's rules template declares must be loaded: read from the template, so a
# new rule is checked without editing this list (a hard-coded copy went stale once).
ALERTS = set(re.findall(r"^\s*- alert: (\w+)\s*$",
                        (Path(__file__).resolve().parents[3] / "templates" / "alerts.rules.yml.j2").read_text(),
                        flags=re.MULTILINE))
# The alerts the runbooks and the lab tests name must stay among them.
assert {"InstanceDown", "QdrantNotReady", "OllamaDown", "OllamaPoolDown", "BackupFailed"} <= ALERTS, ALERTS


@pytest.fixture(scope="module")
def private_address(host):
    facts = host.ansible("setup", "filter=ansible_default_ipv4", check=False)
    return facts["ansible_facts"]["ansible_default_ipv4"]["address"]


# The UIs' user and the file the role writes its password to (Prometheus logs in with it).
WEB_USER = "querygpt"
WEB_PASSWORD_FILE = "/etc/prometheus/web-password"
INTERNAL_CA = "/etc/prometheus/internal-ca.pem"


def get_json(host, url):
    """GET a JSON API; Prometheus's and Alertmanager's (https) over TLS verified against the
    internal CA, with the UIs' user and password."""
    auth = f"--cacert {INTERNAL_CA} -u {WEB_USER}:$(cat {WEB_PASSWORD_FILE})" if url.startswith("https://") else ""
    return json.loads(host.check_output(f"curl -sf --max-time 10 {auth} '{url}'"))


@pytest.mark.parametrize("service", SERVICES)
def test_services_run_enabled_and_sandboxed(host, service):
    unit = host.service(service)
    assert unit.is_running and unit.is_enabled
    props = unit.systemd_properties
    assert props["User"] == "prometheus"
    assert props["ProtectSystem"] == "strict"
    assert props["NoNewPrivileges"] == "yes"
    assert host.check_output(f"systemctl show {service} -p CapabilityBoundingSet --value").strip() == ""


@pytest.mark.parametrize("service", SERVICES)
def test_unit_exposure_at_most_the_ceiling(host, service):
    # Debian's units scored 3.9 (prometheus) and 9.2; the drop-ins bring each under the
    # ceiling while scraping, probing and alert delivery (the tests below) still work.
    assert exposure(host, service) <= CEILING, failed_checks(host, service)


def test_listeners_private_or_loopback_only(host, private_address):
    listening = {line.split()[3] for line in host.check_output("ss -Hltn").splitlines()}
    assert f"{private_address}:9090" in listening
    assert f"{private_address}:9093" in listening
    assert "127.0.0.1:9115" in listening
    for port in (9090, 9093, 9094, 9115):
        assert not {a for a in listening if a.endswith(f":{port}")} - {
            f"{private_address}:9090", f"{private_address}:9093", "127.0.0.1:9115"}, listening
    # Alertmanager's HA gossip port is off
    assert not any(a.endswith(":9094") for a in listening)


def test_prometheus_args_from_the_role(host, private_address):
    args = host.file("/etc/default/prometheus").content_string
    assert f"--web.listen-address={private_address}:9090" in args
    # side_effect.yml changed the retention from the default 15d
    assert "--storage.tsdb.retention.time=30d" in args
    # and the size cap (the default) bounds it on the shared root volume whatever the time says
    assert "--storage.tsdb.retention.size=6GB" in args
    assert "--storage.tsdb.path=/var/lib/prometheus/metrics2" in args


def test_config_files_valid_and_protected(host):
    assert host.run("promtool check config /etc/prometheus/prometheus.yml").rc == 0
    assert host.run("promtool check rules /etc/prometheus/rules/querygpt.yml").rc == 0
    assert host.run("amtool check-config /etc/prometheus/alertmanager.yml").rc == 0
    for path in ("/etc/prometheus/alertmanager.yml", "/etc/prometheus/qdrant-api-key"):
        f = host.file(path)
        assert (f.user, f.group, f.mode) == ("root", "prometheus", 0o640), path
    assert host.file("/etc/prometheus/qdrant-api-key").content_string == "molecule-test-qdrant-key"


def test_every_alert_rule_is_loaded_with_a_runbook(host, private_address):
    rules = get_json(host, f"https://{private_address}:9090/api/v1/rules?type=alert")["data"]["groups"]
    loaded = {r["name"]: r for g in rules for r in g["rules"]}
    assert set(loaded) == ALERTS
    for name, rule in loaded.items():
        assert rule["annotations"]["runbook_url"].endswith(f"docs/runbooks/alerts.md#{name.lower()}")
        assert rule["duration"] == 10  # the scenario's short `for:`


def _targets(host, address):
    return get_json(host, f"https://{address}:9090/api/v1/targets?state=active")["data"]["activeTargets"]


def test_targets_come_from_the_inventory_with_tier_az_env(host, private_address):
    targets = _targets(host, private_address)
    by_job: dict[str, dict[str, dict]] = {}
    for t in targets:
        by_job.setdefault(t["labels"]["job"], {})[t["labels"]["instance"]] = t
    assert set(by_job["node"]) == {ME, "backend-fake", "bastion-fake", "edge-fake-a", "edge-fake-b",
                                   "qdrant-fake", "ollama-fake"}
    edge_b = by_job["node"]["edge-fake-b"]
    assert edge_b["scrapeUrl"] == "https://192.0.2.80:9100/metrics"  # TLS with a client certificate
    assert {k: edge_b["labels"][k] for k in ("tier", "az", "env")} == {"tier": "edge", "az": "az-b", "env": "molecule"}
    assert by_job["node"]["qdrant-fake"]["labels"]["az"] == "eu-central-1a"
    assert set(by_job["nginx"]) == {"edge-fake-a", "edge-fake-b"}
    assert set(by_job["backend"]) == {"backend-fake"}
    assert by_job["backend"]["backend-fake"]["scrapeUrl"] == "https://192.0.2.40:8000/metrics"  # TLS only
    assert by_job["backend"]["backend-fake"]["labels"]["az"] == "az-c"
    assert by_job["qdrant"]["qdrant-fake"]["scrapeUrl"] == "https://192.0.2.30:6333/metrics"
    probe = by_job["probe_ollama"]["ollama-fake"]
    assert probe["scrapeUrl"].startswith("http://127.0.0.1:9115/probe?")
    assert "target=https%3A%2F%2F192.0.2.81%3A11434%2Fapi%2Fversion" in probe["scrapeUrl"]
    assert "module=https_internal" in probe["scrapeUrl"]
    assert set(by_job["probe_edge_api"]) == {"edge-fake-a", "edge-fake-b"}
    backend_probe = by_job["probe_backend"]["backend-fake"]["scrapeUrl"]
    assert "target=https%3A%2F%2F192.0.2.40%3A8000%2Fhealth" in backend_probe and "module=https_internal" in backend_probe
    assert by_job["prometheus"][ME]["labels"]["tier"] == "monitoring"


def test_self_monitoring_targets_are_up(host, private_address):
    # node: its own exporter, scraped over TLS with the client certificate the exporter requires
    up = {t["labels"]["job"]: t["health"] for t in _targets(host, private_address)
          if t["labels"]["instance"] == ME}
    assert {up[j] for j in ("prometheus", "alertmanager", "blackbox_exporter", "node")} == {"up"}, up


@pytest.mark.parametrize("port", [9090, 9093])
def test_the_uis_serve_only_tls_and_ask_for_the_password(host, private_address, port):
    """docs/architecture.md, "Internal TLS": Prometheus's and Alertmanager's UIs and APIs serve
    the monitoring host's certificate (verified for its address against the internal CA), and
    answer only the web user with its password; plaintext gets no page."""
    url = f"https://{private_address}:{port}/-/ready"
    curl = f"curl -s --max-time 10 --cacert {INTERNAL_CA} -o /dev/null -w '%{{http_code}}'"
    assert host.check_output(f"{curl} -u {WEB_USER}:$(cat {WEB_PASSWORD_FILE}) {url}") == "200"
    assert host.check_output(f"{curl} {url}") == "401"
    assert host.check_output(f"{curl} -u {WEB_USER}:not-the-password-at-all {url}") == "401"
    # forward-secret AEAD suites only: a client offering nothing but a CBC suite is refused
    cbc = host.run(f"{curl} -u {WEB_USER}:$(cat {WEB_PASSWORD_FILE}) --tls-max 1.2 --ciphers ECDHE-ECDSA-AES128-SHA {url}")
    assert cbc.stdout == "000", cbc.stdout
    plain = host.run(f"curl -s --max-time 10 -w '\\n%{{http_code}}' http://{private_address}:{port}/-/ready")
    assert plain.stdout.endswith("\n400") and "Ready" not in plain.stdout, plain.stdout
    password = host.file(WEB_PASSWORD_FILE)
    assert (password.user, password.group, password.mode) == ("root", "prometheus", 0o640)
    config = host.file("/etc/prometheus/web-config.yml")
    assert (config.user, config.group, config.mode) == ("root", "prometheus", 0o640)
    assert password.content_string not in config.content_string, "the web configuration holds the hash only"


def test_alertmanager_loaded_the_receivers(host, private_address):
    status = get_json(host, f"https://{private_address}:9093/api/v2/status")
    config = status["config"]["original"]
    # Alertmanager >= 0.27 shows webhook URLs as <secret> (they may carry tokens); the file has it
    assert re.search(r"webhook_configs:\s*\n(\s+.*\n)*?\s+url: <secret>", config), config
    assert "http://127.0.0.1:9099/alerts" in host.file("/etc/prometheus/alertmanager.yml").content_string
    assert "slack_configs" in config
    assert re.search(r"group_by:\s*\n\s*- alertname\s*\n\s*- env\s*\n\s*- tier", config), config
    assert "InstanceDown" in config  # the inhibition


def test_an_alert_reaches_the_webhook_receiver(host):
    # The fake hosts never answer: InstanceDown (for: 10s) must be delivered end to end.
    deadline = time.time() + 120
    names: set[str] = set()
    while time.time() < deadline:
        received = get_json(host, "http://127.0.0.1:9099/alerts")
        names = {a["labels"]["alertname"] for r in received for a in r["payload"]["alerts"]}
        if any(a["labels"]["alertname"] == "InstanceDown" and a["labels"]["instance"] == "edge-fake-a"
               for r in received for a in r["payload"]["alerts"]):
            break
        time.sleep(5)
    assert "InstanceDown" in names, names
    down = [a for r in received for a in r["payload"]["alerts"]
            if a["labels"]["alertname"] == "InstanceDown" and a["labels"]["instance"] == "edge-fake-a"]
    assert down, names
    assert {k: down[0]["labels"][k] for k in ("tier", "az", "env", "severity")} == {
        "tier": "edge", "az": "az-a", "env": "molecule", "severity": "critical"}
    assert down[0]["annotations"]["runbook_url"].endswith("#instancedown")


def test_argument_change_restarted_prometheus_receiver_change_only_reloaded_alertmanager(host, private_address):
    record = json.loads(host.file("/var/tmp/molecule-prometheus-stack-restart.json").content_string)
    before, after = record["before"], record["after"]
    assert before["prometheus"] != after["prometheus"]
    assert before["prometheus-alertmanager"] == after["prometheus-alertmanager"]
    # the idempotence run that followed restarted nothing
    assert host.service("prometheus").systemd_properties["InvocationID"] == after["prometheus"]
    config = get_json(host, f"https://{private_address}:9093/api/v2/status")["config"]["original"]
    assert "#molecule-changed" in config


def _probe(host, module, target):
    return host.check_output(f"curl -s --max-time 20 'http://127.0.0.1:9115/probe?module={module}&target={target}'")


def test_internal_tls_probes_refuse_plaintext_and_other_cas(host):
    """https_internal (Ollama's proxy) trusts the internal CA only: a plaintext service and a
    TLS service with another CA's certificate both fail the probe (docs/architecture.md,
    "Internal TLS")."""
    ca = host.file("/etc/prometheus/internal-ca.pem")
    assert ca.exists and "BEGIN CERTIFICATE" in ca.content_string and ca.mode == 0o644
    # prepare.yml's alert receiver serves plaintext on 127.0.0.1:9099
    assert re.search(r"^probe_success 0$", _probe(host, "https_internal", "https://127.0.0.1:9099/alerts"), re.M)
    host.check_output(
        "test -f /tmp/foreign.pem || openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes"
        " -keyout /tmp/foreign.key -out /tmp/foreign.pem -days 1 -subj /CN=127.0.0.1"
        " -addext subjectAltName=IP:127.0.0.1 2>/dev/null")
    host.check_output("systemd-run --unit=molecule-foreign-tls --collect openssl s_server -quiet -www"
                      " -accept 127.0.0.1:9443 -cert /tmp/foreign.pem -key /tmp/foreign.key")
    try:
        host.check_output("for i in $(seq 20); do timeout 2 bash -c '</dev/tcp/127.0.0.1/9443' && exit 0; sleep 0.5; done; exit 1")
        foreign = _probe(host, "https_internal", "https://127.0.0.1:9443/")
        assert re.search(r"^probe_success 0$", foreign, re.M), foreign
        # the same server passes a probe that trusts its certificate: the failure above is the CA
        trusted = host.check_output("curl -s --max-time 10 --cacert /tmp/foreign.pem -o /dev/null -w '%{http_code}' https://127.0.0.1:9443/")
        assert trusted == "200", trusted
    finally:
        host.run("systemctl stop molecule-foreign-tls")
