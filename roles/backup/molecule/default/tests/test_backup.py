"""Verify the backup role on the converged instance, live: schedule, program, S3 objects
with their metadata, textfile metrics, and the drill side_effect.yml ran (index, back up,
delete, restore with the runbook)."""

import json
import re

import pytest

testinfra_hosts = ["qdrant"]

BUCKET = "querygpt-lab-backups"
ENDPOINT = "http://127.0.0.1:5000"
PROGRAM = "/usr/local/bin/querygpt-backup"
METRICS = "/var/lib/prometheus/node-exporter/querygpt_backup.prom"

S3_LIST = f"""
import boto3, json
s3 = boto3.client("s3", endpoint_url="{ENDPOINT}", region_name="us-east-1",
                  aws_access_key_id="x", aws_secret_access_key="x")
out = []
for o in s3.list_objects_v2(Bucket="{BUCKET}", Prefix="molecule/qdrant/").get("Contents", []):
    out.append(dict(key=o["Key"], size=o["Size"],
                    meta=s3.head_object(Bucket="{BUCKET}", Key=o["Key"])["Metadata"]))
print(json.dumps(out))
"""


def s3_objects(host):
    return json.loads(host.check_output(f"python3 -c '{S3_LIST}'"))


def metrics(host):
    text = host.file(METRICS).content_string
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
            for line in text.splitlines() if line and not line.startswith("#")}


def test_cron_runs_the_program_daily_into_the_journal(host):
    cron = host.file("/etc/cron.d/querygpt-backup")
    assert cron.exists and cron.user == "root"
    lines = [line for line in cron.content_string.splitlines() if line and not line.startswith("#")]
    assert lines == [f"17 2 * * * root systemd-cat -t querygpt-backup {PROGRAM} --log-format journal backup"]
    assert host.service("cron").is_running and host.service("cron").is_enabled


def test_program_and_config(host):
    program = host.file(PROGRAM)
    assert program.mode == 0o755 and program.user == "root"
    config = host.file("/etc/querygpt/backup.json")
    assert (config.user, config.group, config.mode) == ("root", "root", 0o600)
    data = json.loads(config.content_string)
    assert data["s3_bucket"] == BUCKET and data["s3_prefix"] == "molecule/qdrant"
    assert data["retention_days"] == 7 and isinstance(data["s3_max_concurrency"], int)
    assert host.run(f"{PROGRAM} check-config").rc == 0
    for pkg in ("python3-boto3", "python3-requests", "cron"):
        assert host.package(pkg).is_installed


def test_no_mail_transport_agent_came_with_cron(host):
    """cron's recommended MTA (exim4 on Debian) is not installed: the job logs to the journal,
    and a mail daemon on a Qdrant host would be one more service nobody runs on purpose."""
    mtas = host.run("dpkg-query -W -f='${db:Status-Status} ${Package} ${Provides}\\n' 2>/dev/null"
                    " | awk '$1 == \"installed\" && /mail-transport-agent/ {print $2}'")
    assert mtas.rc == 0 and mtas.stdout.split() == [], mtas.stdout
    assert not host.socket("tcp://0.0.0.0:25").is_listening and not host.socket("tcp://127.0.0.1:25").is_listening


def test_drill_restored_the_same_points(host):
    drill = json.loads(host.file("/var/tmp/molecule-backup-drill.json").content_string)
    before = json.loads(host.file("/var/tmp/molecule-backup-before.json").content_string)
    assert drill["count"] == 50
    assert drill["top"] == before and len(before) == 5


def test_the_backup_is_in_s3_with_its_metadata(host):
    objects = [o for o in s3_objects(host) if "/molecule_docs/" in o["key"]]
    assert objects, "no backup of molecule_docs in S3"
    obj = objects[-1]
    assert re.fullmatch(r"molecule/qdrant/molecule_docs/\d{8}T\d{6}Z\.snapshot", obj["key"])
    meta = obj["meta"]
    assert re.fullmatch(r"[0-9a-f]{64}", meta["sha256"])
    assert meta["size"] == str(obj["size"])
    assert meta["collection"] == "molecule_docs"
    assert meta["qdrant-version"] == "1.19.0"
    assert meta["points-count"] == "50"


def test_a_run_now_succeeds_and_writes_metrics(host):
    run = host.run(f"{PROGRAM} backup")
    assert run.rc == 0, run.stderr
    m = metrics(host)
    assert m["querygpt_backup_last_run_success"] == 1
    assert m['querygpt_backup_bytes{collection="molecule_docs"}'] > 0
    assert m['querygpt_backup_last_success_timestamp_seconds{collection="molecule_docs"}'] > 0
    assert m['querygpt_backup_failures_total{collection="molecule_docs"}'] == 0
    for name in ("querygpt_backup_last_run_timestamp_seconds", "querygpt_backup_duration_seconds"):
        assert name in m
    # no local snapshot is left behind
    assert host.run("find /var/lib/qdrant/snapshots -name '*.snapshot'").stdout.strip() == ""


def test_runs_are_logged_to_the_journal(host):
    journal = host.check_output("journalctl -t querygpt-backup --no-pager -o cat")
    assert "uploaded s3://querygpt-lab-backups/molecule/qdrant/molecule_docs/" in journal


@pytest.mark.parametrize("port", [5000])
def test_lab_s3_endpoint_is_loopback_only(host, port):
    assert host.socket(f"tcp://127.0.0.1:{port}").is_listening
    assert not host.socket(f"tcp://0.0.0.0:{port}").is_listening
