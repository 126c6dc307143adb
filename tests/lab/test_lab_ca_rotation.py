"""The internal CA replaced under load (playbooks/runbooks/rotate_internal_ca.yml), as
docs/runbooks/rotate_internal_ca.md has the operator do it: `bin/new-env --rotate-ca`'s step on
the lab's vault (labctl.secrets.rotate_ca, the same function), the runbook, then the finishing
step. Meanwhile benchmarks/load.py's clients ask questions through the load balancer: every TLS
hop behind them (nginx to the backends, the backends to Qdrant, Ollama's proxy and PostgreSQL)
changes CA, and no request may fail. The lab's S3 stand-in, whose certificate from the internal
CA stands in for S3's public one, follows (lab/playbooks/rotate_ca_standins.yml). Afterwards every internal endpoint presents a certificate
from the new CA and verifies against it alone (the endpoints of test_lab_internal_tls.py, each
reached from the host the firewall admits, with that host's own certificate and CA file).
"""
from __future__ import annotations

import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))
sys.path.insert(0, str(REPO / "lab"))
from labctl import secrets  # noqa: E402
from labview import INTERNAL_CA, lab_vault, lb_edges  # noqa: E402
from rollouts import playbook, under_load  # noqa: E402
from test_lab_internal_tls import ENDPOINTS  # noqa: E402
from test_lab_monitoring import curl_json, prom, wait_for  # noqa: E402

NEW_CA_NAME = "QueryGPT lab internal CA rotated by the lab tests"
# Every copy of the PKI's files a service reads, per group (the roles' tls.yml): certificate, CA.
COPIES = {
    "all": [("/etc/journal-tls/host.pem", INTERNAL_CA),
            ("/etc/prometheus/exporter-tls/server.pem", "/etc/prometheus/exporter-tls/ca.pem")],
    "backend": [("/etc/querygpt/server.pem", "/etc/querygpt/database-ca.pem")],
    "qdrant": [("/etc/qdrant/tls/cert.pem", "/etc/qdrant/tls/ca.pem")],
}


def scraped_at(stamp: str) -> float:
    """Prometheus's RFC 3339 time with nanoseconds, as seconds since the epoch."""
    whole, _, rest = stamp.partition(".")
    fraction = rest.rstrip("Z").split("+")[0]
    return datetime.fromisoformat(whole + "+00:00").timestamp() + float("0." + (fraction or "0"))


class Rotation(NamedTuple):
    new_ca: str
    rollout: Any
    ended: float
    nginx_reloads: dict[str, tuple[str, str, str]]  # edge -> (main PID before, after, reloads)
    lb_before: dict[str, dict[str, dict[str, str]]]  # listener -> edge -> HAProxy's stats row
    lb_after: dict[str, dict[str, dict[str, str]]]


LISTENERS = ("http", "https")


@pytest.fixture(scope="module")
def rotation(lab, rollout_site):
    """Rotate under load once; the tests below read what it left."""
    site = rollout_site
    old_ca = lab_vault()[secrets.INTERNAL_CA_CERT]
    nginx_before = {edge: nginx_master(lab, edge) for edge in lab.groups["edge"]}
    lb_before = {listener: lb_edges(lab, listener) for listener in LISTENERS}
    started = int(time.time())
    secrets.edit_vault(lambda vault: secrets.rotate_ca(vault, NEW_CA_NAME))
    lab_vault.cache_clear()
    with under_load(site, "internal CA rotation") as run:
        run["output"] = playbook("playbooks/runbooks/rotate_internal_ca.yml", timeout=1500).stdout
    # the lab's S3 stand-in, whose certificate stands in for S3's public one (lab only)
    playbook("lab/playbooks/rotate_ca_standins.yml")
    # Only after a complete run: a failed one leaves the rotation under way, as an operator
    # would find it, and running the runbook again finishes it.
    ended = time.time()
    secrets.edit_vault(secrets.finish_ca_rotation)
    lab_vault.cache_clear()
    new_ca = lab_vault()[secrets.INTERNAL_CA_CERT]
    assert new_ca != old_ca and secrets.INTERNAL_CA_PREVIOUS not in lab_vault()
    nginx_reloads = {edge: (nginx_before[edge], nginx_master(lab, edge), lab.exec(
        edge, f"journalctl -u nginx.service --since @{started} -o cat | grep -c '^Reloaded nginx'").stdout.strip())
        for edge in lab.groups["edge"]}
    return Rotation(new_ca, run["rollout"], ended, nginx_reloads, lb_before,
                    {listener: lb_edges(lab, listener) for listener in LISTENERS})


def nginx_master(lab, edge: str) -> str:
    return lab.exec(edge, "systemctl show -p MainPID --value nginx.service").stdout.strip()


def test_the_rotation_under_load_fails_no_request(rotation):
    rollout = rotation.rollout
    result = rollout.result
    assert not result.failures, result.describe_failures()
    assert result.stats("/api/query")["requests"] >= 10, result.report()
    # every phase restarted each backend and Qdrant peer once, one at a time, and re-signed once
    assert rollout.output.count("RUNNING HANDLER [backend : Restart querygpt-backend]") == 3 * 2, rollout.output[-4000:]
    assert rollout.output.count("RUNNING HANDLER [qdrant : Restart qdrant]") == 3 * 3, rollout.output[-4000:]


def test_every_edge_reloaded_nginx_under_load(rotation):
    """An nginx reload under load: each phase's new CA file, CRL or certificate reloads every
    edge's nginx (internal_pki's handler), which answers what is in flight on its old workers
    (test_the_rotation_under_load_fails_no_request: no request failed meanwhile). The same
    master process throughout: reloaded, never restarted."""
    for edge, (before, after, reloaded) in rotation.nginx_reloads.items():
        assert before.isdigit() and before != "0", f"{edge}: nginx's main PID unread: {before!r}"
        assert after == before, f"{edge}: nginx was restarted ({before} -> {after}), not reloaded"
        assert int(reloaded or 0) >= 3, f"{edge}: nginx reloaded {reloaded} times, one per phase expected"


def test_no_edge_left_the_load_balancer_during_the_rotation(rotation):
    """A failed request would show in the load's figures; an edge the load balancer took out
    would not: new connections would go to the other edge, and the site would run on half
    its edges unnoticed. Every edge stayed in both listeners: UP before and after, its health
    check never took it out (HAProxy's `chkdown`, the NLB's unhealthy host count), and each
    took some of the load's connections (all on HTTPS)."""
    for listener in LISTENERS:
        before, after = rotation.lb_before[listener], rotation.lb_after[listener]
        assert set(before) == set(after) == set(rotation.nginx_reloads), (listener, sorted(before), sorted(after))
        for edge in before:
            states = (before[edge]["status"], after[edge]["status"])
            assert states == ("UP", "UP"), (listener, edge, states)
            taken_out = int(after[edge]["chkdown"]) - int(before[edge]["chkdown"])
            assert taken_out == 0, f"{listener}: the load balancer took {edge} out {taken_out} time(s) during the rotation"
            if listener == "https":
                assert int(after[edge]["stot"]) > int(before[edge]["stot"]), (edge, "took no connection of the load")


# The CRLs the checking clients load (roles/internal_pki's crl.pem, the backend's copy).
CRLS = {"all": "/etc/journal-tls/crl.pem", "backend": "/etc/querygpt/internal-crl.pem"}


@pytest.mark.parametrize("group", sorted(COPIES))
def test_every_copy_holds_a_certificate_from_the_new_ca_and_trusts_it_alone(lab, rotation, group):
    new_ca = rotation.new_ca
    hosts = [h for h in lab.groups[group] if h not in lab.groups.get("external_services", [])]
    for host in hosts:
        for cert, ca in COPIES[group]:
            issuer = lab.exec(host, f"openssl x509 -in {cert} -noout -issuer -nameopt multiline").stdout
            assert NEW_CA_NAME in issuer, f"{host}:{cert} issued by {issuer}"
            trusted = lab.exec(host, f"cat {ca}").stdout
            assert trusted.count("BEGIN CERTIFICATE") == 1 and trusted.strip() == new_ca.strip(), f"{host}:{ca}"
        if group in CRLS:
            # the old CA's CRL left with it; the new CA's verifies against the new CA
            crl = CRLS[group]
            assert lab.exec(host, f"cat {crl}").stdout.count("BEGIN X509 CRL") == 1, f"{host}:{crl}"
            checked = lab.exec(host, f"openssl crl -in {crl} -CAfile {INTERNAL_CA} -noout 2>&1").stdout
            assert "verify OK" in checked, f"{host}:{crl}: {checked}"


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=[e[0] for e in ENDPOINTS])
def test_every_internal_endpoint_serves_the_new_ca_and_verifies_against_it_alone(lab, rotation, endpoint):
    """The running service, not only its files: a service that missed its restart would still
    present the old CA's certificate, which the source host no longer trusts."""
    label, (src_group, src_index), (dst_group, dst_index), port, starttls = endpoint
    source, target = lab.groups[src_group][src_index], lab.groups[dst_group][dst_index]
    done = lab.exec(source, (
        f"openssl s_client -connect {lab.address(target)}:{port} -CAfile {INTERNAL_CA} -verify_return_error"
        f" -cert /etc/journal-tls/host.pem -key /etc/journal-tls/host.key"
        f" {'-starttls ' + starttls if starttls else ''} </dev/null 2>&1"), timeout=30)
    assert "Verify return code: 0 (ok)" in done.stdout, f"{label}: {done.stdout[-2000:]}"
    assert f"CN = {NEW_CA_NAME}" in done.stdout or f"CN={NEW_CA_NAME}" in done.stdout, f"{label}: {done.stdout[-2000:]}"


def test_prometheus_scrapes_and_probes_every_target_after_the_rotation(lab, rotation):
    """Every scrape and probe verifies its target against the new CA alone: Prometheus reads its
    CA file again when it changes, the blackbox exporter was reloaded."""
    ended = rotation.ended
    mon = lab.groups["monitoring"][0]

    def unhealthy():
        targets = curl_json(lab, mon, f"{prom(lab, mon)}/api/v1/targets?state=active")["data"]["activeTargets"]
        return [(t["labels"]["job"], t["labels"]["instance"], t["health"], t["lastError"]) for t in targets
                if t["health"] != "up" or scraped_at(t["lastScrape"]) < ended]

    wait_for(lambda: not unhealthy(), 90)
    down = unhealthy()
    assert not down, down


def test_pgbackrest_archives_to_s3_after_the_rotation(lab, rotation):
    """pgBackRest verifies S3 against its own copy of the CA file, which the runbook replaced."""
    for host in lab.groups["postgres"]:
        role = lab.exec(host, "runuser -u postgres -- psql -XAtq -c 'SELECT NOT pg_is_in_recovery()'").stdout.strip()
        if role == "t":
            done = lab.exec(host, "runuser -u postgres -- pgbackrest --stanza=querygpt check", timeout=180)
            assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
            return
    pytest.fail("no PostgreSQL primary in the lab")
