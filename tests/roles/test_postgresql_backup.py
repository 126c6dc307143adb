"""The postgresql role's pgBackRest wiring and backup program, without a host.

The configuration files are rendered by Ansible from the role's defaults and vars with
production-shaped inputs (Amazon S3 by region, the instance profile, KMS, three hosts in three
zones) as well as the lab's (an S3-compatible endpoint over TLS with its own CA and a static
key): what differs between them is only what must. The backup program's decisions (back up
only on the primary, metrics from `pgbackrest info`) are checked against recorded pgBackRest
output. Molecule (roles/postgresql/molecule/default) and the lab's PITR drill run all of it
against real servers.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
from pathlib import Path

import pytest

from preflight_harness import REPO, render_template

ROLE = REPO / "roles" / "postgresql"

# Production: three hosts in three zones, this one first; S3 by region with the instance profile.
PROD = {
    "postgresql_hosts": ["localhost", "querygpt-prod-postgres-2", "querygpt-prod-postgres-3"],
    "postgresql_host_addresses": {"localhost": "10.0.3.10", "querygpt-prod-postgres-2": "10.0.19.10",
                                  "querygpt-prod-postgres-3": "10.0.35.10"},
    "postgresql_listen_address": "10.0.3.10",
    "postgresql_app_client_addresses": ["10.0.1.10", "10.0.17.10"],
    "postgresql_backup_s3_bucket": "querygpt-prod-backups-123456789012",
    "postgresql_backup_s3_region": "eu-west-1",
    "postgresql_backup_s3_kms_key_id": "arn:aws:kms:eu-west-1:123456789012:key/0a1b2c3d-0000-4000-8000-000000000000",
}
# The lab: two hosts, moto behind TLS on the s3 host, a static key, the internal CA.
LAB = {
    "postgresql_hosts": ["localhost", "querygpt-lab-postgres-2"],
    "postgresql_host_addresses": {"localhost": "172.30.0.21", "querygpt-lab-postgres-2": "172.30.0.22"},
    "postgresql_listen_address": "172.30.0.21",
    "postgresql_app_client_addresses": ["172.30.0.11"],
    "postgresql_backup_s3_bucket": "querygpt-lab-backups",
    "postgresql_backup_s3_region": "us-east-1",
    "postgresql_backup_s3_kms_key_id": "arn:aws:kms:us-east-1:123456789012:key/lab",
    "postgresql_backup_s3_endpoint": "172.30.0.90:443",
    "postgresql_backup_s3_ca_file": "/etc/journal-tls/ca.pem",
    "postgresql_backup_s3_access_key_id": "lab-access-key",
    "postgresql_backup_s3_secret_access_key": "lab-secret-key",
}


def render(tmp_path: Path, template: str, inputs: dict) -> str:
    """roles/postgresql/templates/<template> over the role's defaults and vars, this host the primary."""
    return render_template(tmp_path, "postgresql", template, {"__postgresql_primary": "localhost", **inputs})


def pgbackrest_conf(text: str) -> dict[str, dict[str, list[str]]]:
    """Section -> option -> values (pgBackRest repeats a key for a list, as tls-server-auth)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        key, _, value = line.partition("=")
        assert current is not None and key and value, f"not an option line: {raw!r}"
        current.setdefault(key, []).append(value)
    return sections


@pytest.fixture(scope="module")
def confs(tmp_path_factory):
    base = tmp_path_factory.mktemp("pgbackrest")
    return {name: pgbackrest_conf(render(base / name, "pgbackrest.conf.j2", inputs))
            for name, inputs in (("prod", PROD), ("lab", LAB))}


def test_production_reaches_s3_by_region_with_the_instance_profile_and_kms(confs):
    g = confs["prod"]["global"]
    assert g["repo1-type"] == ["s3"] and g["repo1-path"] == ["/pgbackrest"]
    assert g["repo1-s3-endpoint"] == ["s3.eu-west-1.amazonaws.com"] and g["repo1-s3-uri-style"] == ["host"]
    assert g["repo1-s3-key-type"] == ["auto"]
    assert "repo1-s3-key" not in g and "repo1-s3-key-secret" not in g
    assert g["repo1-s3-kms-key-id"] == [PROD["postgresql_backup_s3_kms_key_id"]]
    # S3's certificate is publicly trusted: no CA file, no port, verification left on
    assert "repo1-storage-ca-file" not in g and "repo1-storage-port" not in g
    assert "repo1-storage-verify-tls" not in g


def test_the_lab_differs_only_in_the_endpoint_its_ca_and_a_static_key(confs):
    lab, prod = confs["lab"]["global"], confs["prod"]["global"]
    assert lab["repo1-s3-endpoint"] == ["172.30.0.90"] and lab["repo1-storage-port"] == ["443"]
    assert lab["repo1-s3-uri-style"] == ["path"]
    # a copy pgBackRest (postgres) can read: /etc/journal-tls is closed to it
    assert lab["repo1-storage-ca-file"] == ["/etc/pgbackrest/s3-ca.pem"]
    assert lab["repo1-s3-key-type"] == ["shared"] and lab["repo1-s3-key"] == ["lab-access-key"]
    endpoint = {"repo1-s3-endpoint", "repo1-storage-port", "repo1-s3-uri-style", "repo1-storage-ca-file",
                "repo1-s3-key-type", "repo1-s3-key", "repo1-s3-key-secret", "repo1-s3-bucket", "repo1-s3-region",
                "repo1-s3-kms-key-id", "tls-server-address", "tls-server-auth"}
    assert {k: v for k, v in lab.items() if k not in endpoint} == {k: v for k, v in prod.items() if k not in endpoint}


def test_every_other_host_is_a_tls_peer_and_may_connect(confs):
    prod = confs["prod"]
    assert prod["global"]["tls-server-address"] == ["10.0.3.10"]
    assert prod["global"]["tls-server-auth"] == ["querygpt-prod-postgres-2=querygpt", "querygpt-prod-postgres-3=querygpt"]
    stanza = prod["querygpt"]
    assert stanza["pg1-path"] == ["/var/lib/postgresql/17/main"] and "pg1-host" not in stanza
    assert stanza["pg2-host"] == ["10.0.19.10"] and stanza["pg3-host"] == ["10.0.35.10"]
    for n in (2, 3):
        assert stanza[f"pg{n}-host-type"] == ["tls"] and stanza[f"pg{n}-host-port"] == ["8432"]
        assert stanza[f"pg{n}-host-ca-file"] == ["/etc/postgresql/17/main/tls/ca.crt"]
    assert "pg4-host" not in stanza
    # backups copy from a standby where one runs; WAL is pushed asynchronously
    assert prod["global"]["backup-standby"] == ["prefer"] and prod["global"]["archive-async"] == ["y"]


def test_a_single_host_admits_no_peer(tmp_path):
    conf = pgbackrest_conf(render(tmp_path, "pgbackrest.conf.j2", {
        **PROD, "postgresql_hosts": ["localhost"], "postgresql_host_addresses": {"localhost": "10.0.3.10"}}))
    assert conf["global"]["tls-server-auth"] == ["localhost=querygpt"]
    assert "pg2-host" not in conf["querygpt"]


def test_the_server_archives_through_pgbackrest_and_may_write_its_spool(tmp_path):
    conf = render(tmp_path / "conf", "postgresql.conf.j2", PROD)
    assert "archive_mode = on" in conf
    assert "archive_command = 'pgbackrest --stanza=querygpt archive-push %p'" in conf
    assert "restore_command = 'pgbackrest --stanza=querygpt archive-get %f \"%p\"'" in conf
    assert "archive_timeout = 60" in conf
    hardening = render(tmp_path / "hardening", "postgresql-hardening.conf.j2", PROD)
    assert "ReadWritePaths=/var/spool/pgbackrest /var/log/pgbackrest" in hardening
    off = render(tmp_path / "off", "postgresql.conf.j2", {**PROD, "postgresql_backup_enabled": False})
    assert "archive_mode" not in off and "archive_command" not in off


def test_pg_hba_and_the_fence_list_every_production_host(tmp_path):
    """Production-shaped hostvars: three hosts, the backends' addresses (the review gap of the fence)."""
    hba = render(tmp_path / "hba", "pg_hba.conf.j2", PROD)
    replication = [line.split()[3] for line in hba.splitlines() if line.startswith("hostssl") and " replication " in line]
    assert replication == ["10.0.3.10/32", "10.0.19.10/32", "10.0.35.10/32"]
    app = [line.split()[3] for line in hba.splitlines() if line.startswith("hostssl") and " querygpt " in line]
    assert app == ["10.0.1.10/32", "10.0.17.10/32"]
    fence = render(tmp_path / "fence", "fence.conf.j2", PROD)
    start = next(line for line in fence.splitlines() if line.startswith("ExecStartPre="))
    assert start.endswith(" 10.0.19.10 10.0.35.10"), start


# --- the backup program ---------------------------------------------------------------------

def load_program():
    spec = importlib.util.spec_from_file_location("querygpt_postgresql_backup", ROLE / "files" / "querygpt_postgresql_backup.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


prog = load_program()

# `pgbackrest info --output=json`, as 2.55 prints it (trimmed to what the program reads).
INFO = [{
    "name": "querygpt", "status": {"code": 0, "message": "ok"},
    "backup": [
        {"label": "20261129-013000F", "type": "full", "timestamp": {"start": 1764379800, "stop": 1764379860}},
        {"label": "20261129-013000F_20261130-013000D", "type": "diff", "timestamp": {"start": 1764466200, "stop": 1764466230}},
        {"label": "20261129-013000F_20261201-013000D", "type": "diff", "timestamp": {"start": 1764552600, "stop": 1764552640}},
    ],
}]


def test_the_newest_backup_of_each_type_is_reported():
    assert prog.newest_backups(INFO) == {"full": 1764379860.0, "diff": 1764552640.0}
    assert prog.newest_backups([{"name": "querygpt", "status": {"code": 2}, "backup": []}]) == {}
    assert prog.stanza_status(INFO) == 0 and prog.stanza_status([]) == 99


def test_metrics_say_when_the_repository_cannot_be_read():
    text = prog.render_backup_metrics(None, None, None)
    assert "querygpt_postgresql_backup_info_success 0\n" in text
    assert "last_completion" not in text
    ok = prog.render_backup_metrics(INFO, {"archived": 42, "failed": 1, "last_archived": 1764552700.5,
                                           "last_failed": 1764000000}, 3)
    assert 'querygpt_postgresql_backup_last_completion_timestamp_seconds{type="diff"} 1764552640\n' in ok
    assert "querygpt_postgresql_wal_archive_ready_segments 3\n" in ok
    assert "querygpt_postgresql_wal_archive_last_archived_timestamp_seconds 1764552700.5\n" in ok


class Calls:
    def __init__(self, primary: bool, backup_rc: int = 0):
        self.primary, self.backup_rc, self.argv = primary, backup_rc, []

    def run(self, argv, **_):
        self.argv.append(argv)
        if "-c" in argv:  # psql
            query = argv[-1]
            out = "f" if self.primary else "t"
            if "pg_stat_archiver" in query:
                out = "5|0|1764552700|0"
            if "pg_ls_archive_statusdir" in query:  # the server lists its own archive_status
                out = "1"
            return subprocess.CompletedProcess(argv, 0, out + "\n", "")
        if argv[-1] == "backup":
            return subprocess.CompletedProcess(argv, self.backup_rc, "", "")
        if "info" in argv:
            return subprocess.CompletedProcess(argv, 0, json.dumps(INFO), "")
        raise AssertionError(argv)


def args_for(tmp_path, *extra):
    return prog.parse_args(["--stanza=querygpt", "--bin-dir=/usr/lib/postgresql/17/bin",
                            f"--textfile-dir={tmp_path}", *extra])


def test_a_standby_takes_no_backup(tmp_path, monkeypatch):
    calls = Calls(primary=False)
    monkeypatch.setattr(prog.subprocess, "run", calls.run)
    assert prog.backup(args_for(tmp_path, "backup", "--type=full")) == 0
    assert not any(argv[-1] == "backup" for argv in calls.argv)
    assert not (tmp_path / prog.RUN_METRICS_FILE).exists()


@pytest.mark.parametrize("rc", [0, 28])
def test_the_primary_backs_up_and_reports_the_outcome(tmp_path, monkeypatch, rc):
    calls = Calls(primary=True, backup_rc=rc)
    monkeypatch.setattr(prog.subprocess, "run", calls.run)
    assert prog.backup(args_for(tmp_path, "backup", "--type=diff")) == rc
    backup = next(argv for argv in calls.argv if argv[-1] == "backup")
    assert backup[:4] == ["runuser", "-u", "postgres", "--"] and "--type=diff" in backup
    run = (tmp_path / prog.RUN_METRICS_FILE).read_text()
    assert f'querygpt_postgresql_backup_last_run_success{{type="diff"}} {1 if rc == 0 else 0}\n' in run
    metrics = (tmp_path / prog.METRICS_FILE).read_text()
    assert "querygpt_postgresql_wal_archive_ready_segments 1\n" in metrics
    assert "querygpt_postgresql_wal_archive_archived_total 5\n" in metrics
