"""The monitoring configuration, checked with Prometheus's and Alertmanager's own tools.

The role's templates are rendered on the controller as the role renders them (render.yml:
same defaults, vars, filter plugin and template module) against a production-shaped inventory,
then checked with promtool/amtool of the hosts' Debian 13 packages, unpacked into .cache/tools by
lab/labctl/promtools.py (never installed: the package would start a daemon).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import ssl
import subprocess
import sys
import urllib.parse
from pathlib import Path

import bcrypt
import pytest
import trustme
import yaml

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
ROLE = REPO / "roles" / "prometheus_stack"
RULE_TESTS = ROLE / "files" / "rule_tests"
sys.path.insert(0, str(REPO))

from lab.labctl.promtools import ensure_promtools  # noqa: E402

RECEIVERS = {
    "prometheus_stack_alertmanager_webhook_urls": ["http://127.0.0.1:9099/alerts"],
    "prometheus_stack_alertmanager_email_to": ["oncall@example.com"],
    "prometheus_stack_alertmanager_email_smarthost": "smtp.example.com:587",
    "prometheus_stack_alertmanager_email_username": "alertmanager",
    "prometheus_stack_alertmanager_email_password": "test-password",
    "prometheus_stack_alertmanager_slack_api_url": "https://hooks.slack.com/services/T000/B000/XXXX",
}


@pytest.fixture(scope="module")
def tools() -> dict[str, Path]:
    return ensure_promtools()


# The UIs' password in this test (a real one is 48 random characters from bin/new-env).
WEB_PASSWORD = "render-test-web-password"


# Production's edges share the site's public name (group_vars/all/services.yml wires each
# edge's nginx_server_name); the lab's each have their own, from an ACME CA no system trusts.
PROD_EDGE_NAMES = {"edge-a": "querygpt.example.com", "edge-b": "querygpt.example.com"}
LAB_EDGE_NAMES = {"edge-a": "edge-1.querygpt.test", "edge-b": "edge-2.querygpt.test"}


def render(out: Path, **overrides) -> Path:
    """The role's templates rendered into `out` as the role renders them (render.yml)."""
    (out / "qdrant-api-key").write_text("test-key")
    # the monitoring host's pair (Prometheus's client certificate, the UIs' server certificate):
    # promtool checks the files, and loads them for the web configuration
    ca = trustme.CA()
    pair = ca.issue_cert("10.42.1.40", "monitoring.querygpt.internal")
    pair.cert_chain_pems[0].write_to_path(out / "client.pem")
    pair.private_key_pem.write_to_path(out / "client.key")
    (out / "web-password").write_text(WEB_PASSWORD)
    extra = dict(
        RECEIVERS,
        render_dir=str(out),
        prometheus_stack_bind_address="10.42.1.40",
        prometheus_stack_qdrant_api_key="test-key",
        prometheus_stack_extra_scrape_configs=[{"job_name": "extra", "static_configs": [{"targets": ["10.0.0.9:9999"]}]}],
        prometheus_stack_edge_server_names=PROD_EDGE_NAMES,
        _prometheus_stack_rules_dir=str(out / "rules"),
        _prometheus_stack_qdrant_credentials_file=str(out / "qdrant-api-key"),
        prometheus_stack_tls_certificate=str(out / "client.pem"),
        prometheus_stack_tls_key=str(out / "client.key"),
        prometheus_stack_web_password=WEB_PASSWORD,
        _prometheus_stack_web_password_file=str(out / "web-password"),
        prometheus_stack_internal_ca_pem=ca.cert_pem.bytes().decode(),
    )
    extra.update(overrides)
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_STDOUT_CALLBACK="ansible.builtin.default", ANSIBLE_CALLBACKS_ENABLED="ansible.builtin.timer",
               ANSIBLE_FACT_CACHING="memory")
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "ansible-playbook"), str(HERE / "render.yml"), "-i", str(HERE / "inventory.yml"),
         "-e", json.dumps(extra)],
        cwd=REPO, env=env, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return out


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> Path:
    """Production-shaped: the edges share one public name, verified against the system CAs."""
    return render(tmp_path_factory.mktemp("prometheus_stack"))


def run(cmd: list, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], cwd=cwd, capture_output=True, text=True, check=False, timeout=60)


def test_rules_pass_promtool_check(tools, rendered):
    proc = run([tools["promtool"], "check", "rules", rendered / "rules" / "alerts.yml"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS: 25 rules found" in proc.stdout


def test_rule_unit_tests_pass(tools, rendered, tmp_path):
    shutil.copy(rendered / "rules" / "alerts.yml", tmp_path / "alerts.yml")
    for test in sorted(RULE_TESTS.glob("*_test.yml")):
        shutil.copy(test, tmp_path / test.name)
        proc = run([tools["promtool"], "test", "rules", test.name], cwd=tmp_path)
        assert proc.returncode == 0, f"{test.name}:\n{proc.stdout}{proc.stderr}"


def test_every_alert_has_a_runbook_section_and_tests_that_fire_and_do_not(rendered):
    rules = yaml.safe_load((rendered / "rules" / "alerts.yml").read_text())
    alerts = [r for g in rules["groups"] for r in g["rules"] if "alert" in r]
    runbook = (REPO / "docs" / "runbooks" / "alerts.md").read_text()
    anchors = {re.sub(r"[^a-z0-9 -]", "", h.lower()).replace(" ", "-") for h in re.findall(r"^## (.+)$", runbook, re.M)}
    fired: dict[str, int] = {}
    quiet: dict[str, int] = {}
    for test in RULE_TESTS.glob("*_test.yml"):
        for case in yaml.safe_load(test.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                bucket = fired if check.get("exp_alerts") else quiet
                bucket[check["alertname"]] = bucket.get(check["alertname"], 0) + 1
    for rule in alerts:
        name = rule["alert"]
        assert rule["labels"]["severity"] in {"critical", "warning"}, name
        url = rule["annotations"]["runbook_url"]
        assert url.endswith(f"docs/runbooks/alerts.md#{name.lower()}"), url
        assert name.lower() in anchors, f"docs/runbooks/alerts.md has no section '## {name}'"
        assert fired.get(name), f"no promtool test makes {name} fire"
        assert quiet.get(name), f"no promtool test checks {name} stays quiet"


def test_prometheus_config_passes_promtool(tools, rendered):
    proc = run([tools["promtool"], "check", "config", rendered / "prometheus.yml"])
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_alertmanager_config_with_every_receiver_passes_amtool(tools, rendered):
    proc = run([tools["amtool"], "check-config", rendered / "alertmanager.yml"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    config = yaml.safe_load((rendered / "alertmanager.yml").read_text())
    receiver = config["receivers"][0]
    assert receiver["webhook_configs"][0]["url"] == "http://127.0.0.1:9099/alerts"
    assert receiver["email_configs"][0]["to"] == "oncall@example.com"
    assert receiver["slack_configs"][0]["api_url"].startswith("https://hooks.slack.com/")
    assert config["global"]["smtp_auth_password"] == "test-password"
    assert config["route"]["group_by"] == ["alertname", "env", "tier"]
    assert any(r["source_matchers"] == ['alertname="InstanceDown"'] for r in config["inhibit_rules"])
    postgres = [r for r in config["inhibit_rules"] if r["source_matchers"] == ['alertname=~"PostgresDown|PostgresNoPrimary"']]
    assert postgres and postgres[0]["equal"] == ["env"], config["inhibit_rules"]


def _job(config: dict, name: str) -> dict:
    return next(j for j in config["scrape_configs"] if j["job_name"] == name)


def test_targets_and_labels_come_from_the_inventory(rendered):
    config = yaml.safe_load((rendered / "prometheus.yml").read_text())
    node = _job(config, "node")["static_configs"]
    assert [c["targets"] for c in node] == [["10.42.1.10:9100"], ["10.42.1.20:9100"], ["10.42.2.20:9100"],
                                            ["10.42.1.21:9100"], ["10.42.2.21:9100"], ["10.42.1.30:9100"],
                                            ["10.42.2.30:9100"], ["10.42.1.40:9100"]]
    assert node[2]["labels"] == {"instance": "edge-b", "tier": "edge", "az": "eu-central-1b", "env": "lab"}
    assert [c["targets"] for c in _job(config, "nginx")["static_configs"]] == [["10.42.1.20:9113"], ["10.42.2.20:9113"]]
    backend = _job(config, "backend")
    assert [c["targets"] for c in backend["static_configs"]] == [["10.42.1.21:8000"], ["10.42.2.21:8000"]]
    # TLS only, verified against the internal CA (the same file as the internal probes')
    assert backend["scheme"] == "https" and backend["tls_config"] == {"ca_file": "/etc/prometheus/internal-ca.pem"}
    # the exporters: TLS verified against the internal CA, with Prometheus's client certificate
    for job in ("node", "nginx", "postgres"):
        assert _job(config, job)["scheme"] == "https", job
        assert _job(config, job)["tls_config"] == {"ca_file": "/etc/prometheus/internal-ca.pem",
                                                   "cert_file": str(rendered / "client.pem"),
                                                   "key_file": str(rendered / "client.key")}, job
    qdrant = _job(config, "qdrant")
    assert qdrant["authorization"] == {"type": "Bearer", "credentials_file": str(rendered / "qdrant-api-key")}
    assert qdrant["scheme"] == "https"
    assert qdrant["tls_config"] == {"ca_file": "/etc/prometheus/internal-ca.pem"}
    assert qdrant["static_configs"][0]["targets"] == ["10.42.1.30:6333"]
    probes = {name: _job(config, name)
              for name in ("probe_edge_https", "probe_edge_api", "probe_qdrant", "probe_ollama", "probe_backend")}
    assert [c["targets"] for c in probes["probe_backend"]["static_configs"]] == [
        ["https://10.42.1.21:8000/health"], ["https://10.42.2.21:8000/health"]]
    assert probes["probe_backend"]["params"] == {"module": ["https_internal"]}
    assert probes["probe_edge_api"]["static_configs"][1]["targets"] == ["https://10.42.2.20/api/health"]
    assert probes["probe_qdrant"]["static_configs"][0]["targets"] == ["https://10.42.1.30:6333/readyz"]
    assert probes["probe_qdrant"]["params"] == {"module": ["https_internal"]}
    assert probes["probe_ollama"]["static_configs"][0]["targets"] == ["https://10.42.2.30:11434/api/version"]
    assert probes["probe_ollama"]["static_configs"][0]["labels"]["tier"] == "ollama"
    for job in probes.values():
        assert job["relabel_configs"][-1]["replacement"] == "127.0.0.1:9115"
    alertmanager = config["alerting"]["alertmanagers"][0]
    assert alertmanager["static_configs"][0]["targets"] == ["10.42.1.40:9093"]
    # Alertmanager, and the scrapes of both UIs: TLS verified against the internal CA, logged in
    web_login = {"scheme": "https", "basic_auth": {"username": "querygpt", "password_file": str(rendered / "web-password")},
                 "tls_config": {"ca_file": "/etc/prometheus/internal-ca.pem"}}
    assert {k: alertmanager[k] for k in web_login} == web_login
    for job in ("prometheus", "alertmanager"):
        assert {k: _job(config, job)[k] for k in web_login} == web_login, job
    assert _job(config, "extra")["static_configs"] == [{"targets": ["10.0.0.9:9999"]}]


def _edge_probes(tools: dict, rendered: Path) -> tuple[dict, dict]:
    """(the blackbox modules, each edge probe's module by job and instance), the module as
    Prometheus itself resolves it: `promtool check service-discovery` applies the job's params
    and relabeling to each target and prints the labels its scrape URL is built from."""
    modules = yaml.safe_load((rendered / "blackbox.yml").read_text())["modules"]
    chosen = {}
    for job in ("probe_edge_https", "probe_edge_api"):
        # static targets: discovered at once (promtool would otherwise wait its 30-s default)
        proc = run([tools["promtool"], "check", "service-discovery", "--timeout=2s", rendered / "prometheus.yml", job])
        assert proc.returncode == 0, proc.stdout + proc.stderr
        for target in json.loads(proc.stdout):
            labels = target["labels"]
            chosen[job, labels["instance"]] = labels["__param_module"]
    return modules, chosen


def _check_blackbox(tools: dict, rendered: Path) -> None:
    proc = run([tools["prometheus-blackbox-exporter"], "--config.check", f"--config.file={rendered / 'blackbox.yml'}"])
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_edge_probes_verify_the_shared_public_name(tools, rendered):
    """Production: every edge is probed at its address with the site's name as SNI and Host,
    its certificate verified for that name against the system CAs; nothing turns verification off."""
    _check_blackbox(tools, rendered)
    modules, chosen = _edge_probes(tools, rendered)
    module = "http_edge_querygpt.example.com"
    assert set(chosen.values()) == {module}, chosen
    assert len(chosen) == 4
    http = modules[module]["http"]
    assert http["headers"] == {"Host": "querygpt.example.com"}
    assert http["tls_config"] == {"server_name": "querygpt.example.com"}
    assert http["fail_if_not_ssl"] is True
    assert "insecure_skip_verify" not in (rendered / "blackbox.yml").read_text()


def test_edge_probes_verify_each_edges_own_name(tools, tmp_path):
    """The lab's shape: edges with names of their own, from a CA the probes are given; each edge's
    probes carry its own name and verify against that CA."""
    ca_pem = trustme.CA().cert_pem.bytes().decode()
    rendered = render(tmp_path, prometheus_stack_edge_server_names=LAB_EDGE_NAMES,
                      prometheus_stack_blackbox_ca_pem=ca_pem,
                      _prometheus_stack_blackbox_ca_file=str(tmp_path / "blackbox-ca.pem"))
    (tmp_path / "blackbox-ca.pem").write_text(ca_pem)
    _check_blackbox(tools, rendered)
    modules, chosen = _edge_probes(tools, rendered)
    for job in ("probe_edge_https", "probe_edge_api"):
        assert chosen[job, "edge-a"] == "http_edge_edge-1.querygpt.test"
        assert chosen[job, "edge-b"] == "http_edge_edge-2.querygpt.test"
    for host, name in LAB_EDGE_NAMES.items():
        tls = modules[f"http_edge_{name}"]["http"]["tls_config"]
        assert tls == {"server_name": name, "ca_file": str(tmp_path / "blackbox-ca.pem")}, host


def test_web_config_passes_promtool_and_holds_the_passwords_hash_only(tools, rendered):
    """The UIs' web configuration: TLS with the monitoring host's pair, basic auth whose bcrypt
    hash matches the password; rendering it again gives the same file (idempotent runs)."""
    proc = run([tools["promtool"], "check", "web-config", rendered / "web-config.yml"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    text = (rendered / "web-config.yml").read_text()
    web = yaml.safe_load(text)
    assert WEB_PASSWORD not in text
    assert bcrypt.checkpw(WEB_PASSWORD.encode(), web["basic_auth_users"]["querygpt"].encode())
    assert web["tls_server_config"]["cert_file"] == str(rendered / "client.pem")
    assert web["tls_server_config"]["min_version"] == "TLS12"
    assert all("GCM" in suite or "CHACHA20" in suite for suite in web["tls_server_config"]["cipher_suites"])


def _handshake(client: ssl.SSLContext, server: ssl.SSLContext, server_hostname: str) -> None:
    """A TLS handshake between two contexts in memory (no socket); raises what the client's
    verification raises."""
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    tls_client = client.wrap_bio(c_in, c_out, server_hostname=server_hostname)
    tls_server = server.wrap_bio(s_in, s_out, server_side=True)
    done = set()
    for _ in range(20):
        for name, end in (("client", tls_client), ("server", tls_server)):
            if name in done:
                continue
            try:
                end.do_handshake()
                done.add(name)
            except ssl.SSLWantReadError:
                pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if done == {"client", "server"}:
            return
    raise AssertionError(f"no handshake after 20 rounds (finished: {sorted(done)})")


def test_grafana_datasource_reaches_prometheus_as_its_web_config_admits(rendered):
    """Grafana's provisioned datasource holds what Prometheus's web configuration admits: the
    address Prometheus listens on, over TLS verified against the internal CA for that address,
    with the user and a password matching the configured hash. The handshake runs in memory
    between the UIs' certificate and a client that has only the datasource's settings."""
    source = yaml.safe_load((rendered / "grafana-datasource.yml").read_text())["datasources"][0]
    web = yaml.safe_load((rendered / "web-config.yml").read_text())
    url = urllib.parse.urlsplit(source["url"])
    assert (url.scheme, url.hostname, url.port) == ("https", "10.42.1.40", 9090)
    assert "--web.listen-address=10.42.1.40:9090" in (rendered / "prometheus.default").read_text()
    assert source["basicAuth"] is True and source["jsonData"]["tlsAuthWithCACert"] is True
    hashed = web["basic_auth_users"][source["basicAuthUser"]]
    assert bcrypt.checkpw(source["secureJsonData"]["basicAuthPassword"].encode(), hashed.encode())
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(web["tls_server_config"]["cert_file"], web["tls_server_config"]["key_file"])
    _handshake(ssl.create_default_context(cadata=source["secureJsonData"]["tlsCACert"]), server, url.hostname)
    # the same handshake with another CA's certificate fails: the check above can
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(ssl.create_default_context(cadata=trustme.CA().cert_pem.bytes().decode()), server, url.hostname)


def test_daemons_listen_on_the_private_address(rendered):
    prometheus = (rendered / "prometheus.default").read_text()
    assert "--web.listen-address=10.42.1.40:9090" in prometheus
    assert "--web.config.file=/etc/prometheus/web-config.yml" in prometheus
    assert "--storage.tsdb.retention.time=15d" in prometheus
    alertmanager = (rendered / "prometheus-alertmanager.default").read_text()
    assert "--web.listen-address=10.42.1.40:9093" in alertmanager
    assert "--web.config.file=/etc/prometheus/web-config.yml" in alertmanager
    assert "--web.external-url=https://10.42.1.40:9093/" in alertmanager
    assert '--cluster.listen-address="' in alertmanager
