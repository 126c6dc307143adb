"""Verify the postgresql role on the converged primary and standby, read back live.

Both hosts are real Debian PostgreSQL servers: the tests check the cluster's shape (who is
primary, synchronous streaming through the slot, a commit readable on the standby), the way
in (TLS verified against the internal CA, scram-sha-256 only, only the listed addresses),
the sandbox and the exporter.
"""

import json
import os
import sys
import time
import uuid
from pathlib import Path

import pytest
import testinfra

sys.path.insert(0, str(Path(__file__).resolve().parents[5] / "molecule" / "shared"))

from unit_security import CEILING, exposure, failed_checks  # noqa: E402

# The inventory also holds backend-fake: a pg_hba source, never created.
testinfra_hosts = ["postgres"]

UNIT = "postgresql@17-main"
CONF = "/etc/postgresql/17/main"
APP_PASSWORD = "molecule-test-app-password"
REPLICATION_PASSWORD = "molecule-test-replication-password"
CA = f"{CONF}/tls/ca.crt"


def psql(host, sql, check=True):
    """Run SQL as postgres over the local socket."""
    cmd = host.run(f"runuser -u postgres -- psql -XAtq -c {sql!r}")
    if check:
        assert cmd.rc == 0, cmd.stderr
    return cmd


def is_primary(host):
    return psql(host, "SELECT NOT pg_is_in_recovery()").stdout.strip() == "t"


def replication_login(host, address, sslmode="verify-full", root=CA, password=REPLICATION_PASSWORD):
    """IDENTIFY_SYSTEM over a replication connection from `host` to the server at `address`."""
    return host.run(f"PGPASSWORD={password} psql -XAtq 'host={address} dbname=replication user=replicator "
                    f"replication=true sslmode={sslmode} sslrootcert={root}' -c 'IDENTIFY_SYSTEM'")


@pytest.fixture(scope="module")
def address(host):
    facts = host.ansible("setup", "filter=ansible_default_ipv4", check=False)
    return facts["ansible_facts"]["ansible_default_ipv4"]["address"]


@pytest.fixture(scope="module")
def cluster():
    """(primary, standby) as testinfra hosts, whichever way the run orders the hosts."""
    inventory = os.environ["MOLECULE_INVENTORY_FILE"]
    instance = os.environ.get("QGPT_MOLECULE_INSTANCE", "instance")
    hosts = [testinfra.get_host(f"ansible://{name}", ansible_inventory=inventory)
             for name in (instance, f"{instance}-standby")]
    primaries = [h for h in hosts if is_primary(h)]
    assert len(primaries) == 1, "exactly one primary"
    return primaries[0], next(h for h in hosts if h is not primaries[0])


def test_the_first_host_is_the_primary_and_the_other_a_standby(host):
    first = not host.check_output("hostname").strip().endswith("-standby")
    assert is_primary(host) is first
    assert host.file("/var/lib/postgresql/17/main/standby.signal").exists is not first


def test_the_server_runs_enabled_in_its_sandbox(host):
    service = host.service(UNIT)
    assert service.is_running and service.is_enabled
    assert service.systemd_properties["User"] == "postgres"
    score = exposure(host, UNIT)
    assert score <= CEILING, f"{UNIT} scores {score}:\n{failed_checks(host, UNIT)}"


def test_data_checksums_are_on(host):
    assert psql(host, "SHOW data_checksums").stdout.strip() == "on"


def test_it_listens_on_the_private_address_only(host, address):
    sockets = [s for s in host.socket.get_listening_sockets() if s.endswith(":5432")]
    assert sockets == [f"tcp://{address}:5432"], sockets


def test_the_standby_streams_synchronously_through_its_slot(cluster):
    primary, _ = cluster
    rows = psql(primary, "SELECT application_name || ' ' || state || ' ' || sync_state FROM pg_stat_replication")
    name, *state = rows.stdout.split()
    assert state == ["streaming", "quorum"], rows.stdout
    slot = psql(primary, "SELECT slot_name || ' ' || active FROM pg_replication_slots").stdout.split()
    assert slot == [name, "true"], slot
    assert psql(primary, "SHOW synchronous_standby_names").stdout.strip() == f"ANY 1 ({name})"


def test_a_committed_row_is_read_on_the_standby(cluster):
    """synchronous_commit = on with ANY 1: a commit returns once the standby has flushed it;
    the hot standby then serves it to readers, and refuses writes."""
    primary, standby = cluster
    marker = uuid.uuid4().hex
    psql(primary, "CREATE TABLE IF NOT EXISTS molecule_replication (marker text)")
    psql(primary, f"INSERT INTO molecule_replication VALUES ('{marker}')")
    for _ in range(50):
        seen = psql(standby, f"SELECT count(*) FROM molecule_replication WHERE marker = '{marker}'", check=False)
        if seen.stdout.strip() == "1":
            break
        time.sleep(0.2)
    assert seen.stdout.strip() == "1", seen.stderr
    refused = psql(standby, "INSERT INTO molecule_replication VALUES ('x')", check=False)
    assert refused.rc != 0 and "read-only transaction" in refused.stderr


def test_only_the_listed_clients_reach_the_app_database(cluster):
    """The standby is no app client: the primary has no pg_hba line for it and the app role."""
    primary, standby = cluster
    conf = primary.file(f"{CONF}/postgresql.conf").content_string
    address = next(line.split("'")[1] for line in conf.splitlines() if line.startswith("listen_addresses"))
    refused = standby.run(f"PGPASSWORD={APP_PASSWORD} psql -XAtq 'host={address} dbname=querygpt user=querygpt "
                          f"sslmode=verify-full sslrootcert={CA}' -c 'SELECT 1'")
    # The catch-all line at the end of pg_hba.conf rejects it, naming the host.
    assert refused.rc != 0 and "pg_hba.conf rejects connection for host" in refused.stderr, refused.stderr
    hba = primary.file(f"{CONF}/pg_hba.conf").content_string.splitlines()
    assert "hostssl querygpt querygpt 192.0.2.21/32 scram-sha-256" in [" ".join(line.split()) for line in hba]


def test_plaintext_and_wrong_passwords_are_refused(host, address):
    plain = replication_login(host, address, sslmode="disable")
    assert plain.rc != 0 and "no encryption" in plain.stderr, plain.stderr
    wrong = replication_login(host, address, password="not-the-password")
    assert wrong.rc != 0 and "password authentication failed" in wrong.stderr, wrong.stderr


def test_the_certificate_verifies_for_the_private_address_and_no_other_ca(host, address):
    ok = replication_login(host, address)
    assert ok.rc == 0, ok.stderr
    host.run("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=other "
             "-keyout /tmp/other-ca.key -out /tmp/other-ca.pem -days 1")
    other = replication_login(host, address, root="/tmp/other-ca.pem")
    assert other.rc != 0 and "certificate verify failed" in other.stderr, other.stderr


def test_passwords_are_stored_as_scram(cluster):
    primary, _ = cluster
    rows = psql(primary, "SELECT rolname || ' ' || left(rolpassword, 14) FROM pg_authid WHERE rolpassword IS NOT NULL")
    assert sorted(rows.stdout.strip().split("\n")) == ["querygpt SCRAM-SHA-256$", "replicator SCRAM-SHA-256$"]


def test_the_app_database_is_owned_by_the_app_role(cluster):
    primary, _ = cluster
    owner = psql(primary, "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'querygpt'")
    assert owner.stdout.strip() == "querygpt"


def test_the_exporter_reports_the_server_in_its_sandbox(host, address):
    service = host.service("prometheus-postgres-exporter")
    assert service.is_running and service.is_enabled
    score = exposure(host, "prometheus-postgres-exporter")
    assert score <= CEILING, f"exporter scores {score}:\n{failed_checks(host, 'prometheus-postgres-exporter')}"
    # TLS with a client certificate, as every exporter (roles/node_exporter's web configuration)
    tls = "/etc/prometheus/exporter-tls"
    client = f"curl -s --max-time 10 --cacert {tls}/ca.pem"
    metrics = host.check_output(f"{client} -f --cert {tls}/server.pem --key {tls}/server.key https://{address}:9187/metrics")
    assert "\npg_up 1" in metrics
    anonymous = host.run(f"{client} -o /dev/null -w '%{{http_code}}' https://{address}:9187/metrics")
    assert anonymous.stdout == "000", "the exporter answered a client without a certificate"
    assert "pg_up" not in host.run(f"curl -s --max-time 10 http://{address}:9187/metrics").stdout


# --- pgBackRest: the repository on the instance's S3 stand-in (moto behind TLS) ----------------

def pgbackrest(host, *args):
    cmd = host.run("runuser -u postgres -- pgbackrest --stanza=querygpt " + " ".join(args))
    assert cmd.rc == 0, cmd.stdout + cmd.stderr
    return cmd.stdout


def test_pgbackrest_check_passes_on_every_host(host):
    """Archives a segment now (on the primary) and checks each host's configuration, the
    repository over TLS and, through the TLS servers, the other host."""
    pgbackrest(host, "check")


def test_the_first_full_backup_was_copied_from_the_standby(cluster):
    primary, _ = cluster
    info = json.loads(pgbackrest(primary, "--output=json", "info"))
    assert info[0]["status"]["code"] == 0, info
    assert [b["type"] for b in info[0]["backup"]] == ["full"], info
    log = primary.file("/var/log/pgbackrest/querygpt-backup.log").content_string
    assert "backup-standby" in log and "wait for replay on the standby" in log, log[-2000:]


def test_the_backup_timers_and_the_tls_server_run(host, address):
    for timer in ("querygpt-postgresql-backup-full.timer", "querygpt-postgresql-backup-diff.timer",
                  "querygpt-postgresql-backup-metrics.timer"):
        unit = host.service(timer)
        assert unit.is_enabled and unit.is_running, timer
    server = host.service("querygpt-pgbackrest-server")
    assert server.is_running and server.is_enabled
    assert host.socket(f"tcp://{address}:8432").is_listening
    score = exposure(host, "querygpt-pgbackrest-server")
    assert score <= CEILING, f"pgbackrest server scores {score}:\n{failed_checks(host, 'querygpt-pgbackrest-server')}"


def test_the_metrics_report_the_backup_and_the_archive(cluster):
    primary, standby = cluster
    for h in (primary, standby):
        h.run_test("systemctl start querygpt-postgresql-backup-metrics.service")
        text = h.file("/var/lib/prometheus/node-exporter/querygpt_postgresql_backup.prom").content_string
        assert "querygpt_postgresql_backup_info_success 1\n" in text, text
        assert 'querygpt_postgresql_backup_last_completion_timestamp_seconds{type="full"}' in text, text
    assert "querygpt_postgresql_wal_archive_ready_segments" in primary.file(
        "/var/lib/prometheus/node-exporter/querygpt_postgresql_backup.prom").content_string
    # the run of the first backup (by the primary's host) is recorded
    run = primary.file("/var/lib/prometheus/node-exporter/querygpt_postgresql_backup_run.prom").content_string
    assert 'querygpt_postgresql_backup_last_run_success{type="full"} 1\n' in run


def test_a_standby_host_skips_the_backup(cluster):
    _, standby = cluster
    run = standby.run("systemctl start querygpt-postgresql-backup@diff.service && "
                      "journalctl -u querygpt-postgresql-backup@diff.service -n 5 --no-pager")
    assert run.rc == 0 and "this host is a standby" in run.stdout, run.stdout + run.stderr


BACKUP_UNITS = ("querygpt-postgresql-backup@full.service", "querygpt-postgresql-backup-metrics.service")


@pytest.mark.parametrize("unit", BACKUP_UNITS)
def test_the_backup_units_score_at_most_the_ceiling(host, unit):
    """Root for runuser and the textfile directory only: no capability but switching users."""
    score = exposure(host, unit)
    assert score <= CEILING, f"{unit} scores {score}:\n{failed_checks(host, unit)}"
    caps = host.check_output(f"systemctl show {unit} -p CapabilityBoundingSet --value").split()
    assert sorted(caps) == ["cap_setgid", "cap_setuid"], caps


def test_the_primary_takes_a_diff_backup_through_its_sandboxed_unit(cluster):
    """The timers' own path, under the units' sandbox: the backup, its run metrics, and the
    archive's backlog the server lists (root in the unit cannot read the data directory)."""
    primary, _ = cluster
    run = primary.run("systemctl start querygpt-postgresql-backup@diff.service")
    assert run.rc == 0, primary.run("journalctl -u querygpt-postgresql-backup@diff.service -n 30 --no-pager").stdout
    info = json.loads(pgbackrest(primary, "--output=json", "info"))
    assert [b["type"] for b in info[0]["backup"]] == ["full", "diff"], info
    textfile = "/var/lib/prometheus/node-exporter"
    run_metrics = primary.file(f"{textfile}/querygpt_postgresql_backup_run.prom").content_string
    assert 'querygpt_postgresql_backup_last_run_success{type="diff"} 1\n' in run_metrics, run_metrics
    metrics = primary.file(f"{textfile}/querygpt_postgresql_backup.prom").content_string
    assert 'querygpt_postgresql_backup_last_completion_timestamp_seconds{type="diff"}' in metrics, metrics
    assert "\nquerygpt_postgresql_wal_archive_ready_segments " in metrics, metrics
    assert primary.file(f"{textfile}/querygpt_postgresql_backup.prom").mode == 0o644
