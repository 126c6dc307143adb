"""Verify the postgresql role on a converged one-host cluster, read back live.

The host is a real Debian PostgreSQL server, the cluster's primary: the tests check the way
in (TLS verified against the internal CA, scram-sha-256 only, only the listed addresses),
the sandbox, the exporter and pgBackRest's backups. The standby's part (cloned from the
primary, synchronous streaming through its slot, the backups copied from it, its own timers
skipping) is tested on the lab's pair: tests/lab/test_lab_app_state.py.
"""

import json
import sys
from pathlib import Path

import pytest

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


def replication_login(host, address, sslmode="verify-full", root=CA, password=REPLICATION_PASSWORD):
    """IDENTIFY_SYSTEM over a replication connection from `host` to the server at `address`."""
    return host.run(f"PGPASSWORD={password} psql -XAtq 'host={address} dbname=replication user=replicator "
                    f"replication=true sslmode={sslmode} sslrootcert={root}' -c 'IDENTIFY_SYSTEM'")


@pytest.fixture(scope="module")
def address(host):
    facts = host.ansible("setup", "filter=ansible_default_ipv4", check=False)
    return facts["ansible_facts"]["ansible_default_ipv4"]["address"]


def test_the_only_host_bootstraps_as_the_primary_with_no_standby_to_wait_for(host):
    """A one-host cluster must not wait for a synchronous standby it does not have: a commit
    with synchronous_standby_names set and nobody streaming would hang."""
    assert psql(host, "SELECT pg_is_in_recovery()").stdout.strip() == "f"
    assert not host.file("/var/lib/postgresql/17/main/standby.signal").exists
    assert psql(host, "SHOW synchronous_standby_names").stdout.strip() == ""
    assert psql(host, "SELECT count(*) FROM pg_replication_slots").stdout.strip() == "0"


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


def test_only_the_listed_clients_reach_the_app_database(host, address):
    """The database host itself is no app client: pg_hba.conf has a line for the listed backend
    only, and the right password from any other address is refused."""
    refused = host.run(f"PGPASSWORD={APP_PASSWORD} psql -XAtq 'host={address} dbname=querygpt user=querygpt "
                       f"sslmode=verify-full sslrootcert={CA}' -c 'SELECT 1'")
    # The catch-all line at the end of pg_hba.conf rejects it, naming the host.
    assert refused.rc != 0 and "pg_hba.conf rejects connection for host" in refused.stderr, refused.stderr
    hba = host.file(f"{CONF}/pg_hba.conf").content_string.splitlines()
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


def test_passwords_are_stored_as_scram(host):
    rows = psql(host, "SELECT rolname || ' ' || left(rolpassword, 14) FROM pg_authid WHERE rolpassword IS NOT NULL")
    assert sorted(rows.stdout.strip().split("\n")) == ["querygpt SCRAM-SHA-256$", "replicator SCRAM-SHA-256$"]


def test_the_app_database_is_owned_by_the_app_role(host):
    owner = psql(host, "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'querygpt'")
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


def test_pgbackrest_check_passes(host):
    """Archives a segment now and checks the host's configuration and the repository over TLS."""
    pgbackrest(host, "check")


def test_the_first_full_backup_was_taken_at_converge(host):
    """With no standby to copy from, backup-standby=prefer copies from the primary."""
    info = json.loads(pgbackrest(host, "--output=json", "info"))
    assert info[0]["status"]["code"] == 0, info
    assert [b["type"] for b in info[0]["backup"]] == ["full"], info


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


def test_the_metrics_report_the_backup_and_the_archive(host):
    host.run_test("systemctl start querygpt-postgresql-backup-metrics.service")
    text = host.file("/var/lib/prometheus/node-exporter/querygpt_postgresql_backup.prom").content_string
    assert "querygpt_postgresql_backup_info_success 1\n" in text, text
    assert 'querygpt_postgresql_backup_last_completion_timestamp_seconds{type="full"}' in text, text
    assert "querygpt_postgresql_wal_archive_ready_segments" in text, text
    # the run of the first backup (by the primary's host) is recorded
    run = host.file("/var/lib/prometheus/node-exporter/querygpt_postgresql_backup_run.prom").content_string
    assert 'querygpt_postgresql_backup_last_run_success{type="full"} 1\n' in run


BACKUP_UNITS = ("querygpt-postgresql-backup@full.service", "querygpt-postgresql-backup-metrics.service")


@pytest.mark.parametrize("unit", BACKUP_UNITS)
def test_the_backup_units_score_at_most_the_ceiling(host, unit):
    """Root for runuser and the textfile directory only: no capability but switching users."""
    score = exposure(host, unit)
    assert score <= CEILING, f"{unit} scores {score}:\n{failed_checks(host, unit)}"
    caps = host.check_output(f"systemctl show {unit} -p CapabilityBoundingSet --value").split()
    assert sorted(caps) == ["cap_setgid", "cap_setuid"], caps


def test_the_primary_takes_a_diff_backup_through_its_sandboxed_unit(host):
    """The timers' own path, under the units' sandbox: the backup, its run metrics, and the
    archive's backlog the server lists (root in the unit cannot read the data directory)."""
    primary = host
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
