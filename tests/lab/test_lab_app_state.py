"""The app state on the lab: PostgreSQL's primary and synchronous standby, a document's life
through the edge (listed, replaced, erased), checked in Qdrant, S3 and the database, and the
point-in-time restore drill (pgBackRest, playbooks/runbooks/restore_postgres.yml).

The API calls go through the edge as the lab-tests admin (conftest.py: `edge_api` sends its
token)."""

from __future__ import annotations

import json
import shlex
import subprocess
import time
import uuid

import pytest
from reportlab.lib.pagesizes import A4
from reportlab.pdfgen import canvas

from labview import REPO, ansible_env, lab_vault, qdrant_call


def psql(lab, host, sql, database="querygpt", *, check=True):
    """The statement's output as postgres over the local socket; with check=False, the run itself."""
    done = lab.exec(host, f"runuser -u postgres -- psql -XAtq -d {database} -c {shlex.quote(sql)}")
    if not check:
        return done
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.fixture(scope="module")
def primary(lab):
    primaries = [h for h in lab.groups["postgres"] if psql(lab, h, "SELECT NOT pg_is_in_recovery()") == "t"]
    assert len(primaries) == 1, f"exactly one primary, found {primaries}"
    return primaries[0]


def schema_pdf(path, table):
    pdf = canvas.Canvas(str(path), pagesize=A4)
    for i, line in enumerate([f"CREATE TABLE {table} (id INT PRIMARY KEY, customer TEXT, total NUMERIC);",
                              f"Each row of {table} is one invoice of a customer."]):
        pdf.drawString(40, 800 - 18 * i, line)
    pdf.save()
    return path


@pytest.fixture(scope="module")
def standby(lab, primary):
    return next(h for h in lab.groups["postgres"] if h != primary)


def test_the_primary_commits_synchronously_to_the_standby(lab, primary, standby):
    """The standby was cloned from the primary and streams through its slot; with ANY 1 a
    commit returns once the standby has flushed it, and the hot standby serves it to readers
    and refuses writes. (Molecule's postgresql scenario is a one-host cluster: the pair is
    tested here.)"""
    assert psql(lab, standby, "SELECT pg_is_in_recovery()") == "t"
    rows = psql(lab, primary, "SELECT application_name || ' ' || state || ' ' || sync_state FROM pg_stat_replication")
    name, *state = rows.split()
    assert state == ["streaming", "quorum"], rows
    assert psql(lab, primary, "SELECT slot_name || ' ' || active FROM pg_replication_slots").split() == [name, "true"]
    assert psql(lab, primary, "SHOW synchronous_standby_names") == f"ANY 1 ({name})"
    marker = uuid.uuid4().hex
    # In the maintenance database: the app's schema is its migrations' alone.
    psql(lab, primary, "CREATE TABLE IF NOT EXISTS lab_replication (marker text)", "postgres")
    psql(lab, primary, f"INSERT INTO lab_replication VALUES ('{marker}')", "postgres")
    # Flushed on the standby before the commit returned; replayed (readable) a moment later.
    for _ in range(50):
        if psql(lab, standby, f"SELECT count(*) FROM lab_replication WHERE marker = '{marker}'", "postgres") == "1":
            break
        time.sleep(0.2)
    else:
        pytest.fail("the committed row never became readable on the standby")
    refused = psql(lab, standby, "INSERT INTO lab_replication VALUES ('x')", "postgres", check=False)
    assert refused.returncode != 0 and "read-only transaction" in refused.stderr, refused.stderr
    psql(lab, primary, "DROP TABLE lab_replication", "postgres")
    # The backends are connected (their /ready checks the database), every one of them over TLS.
    by_tls = psql(lab, primary, "SELECT count(*) FILTER (WHERE ssl) || ' ' || count(*) FILTER (WHERE NOT ssl) "
                                "FROM pg_stat_ssl JOIN pg_stat_activity USING (pid) WHERE usename = 'querygpt'")
    with_tls, without_tls = map(int, by_tls.split())
    assert with_tls > 0 and without_tls == 0, by_tls


def test_backups_are_copied_from_the_standby_and_its_own_timers_skip(lab, primary, standby):
    """backup-standby=prefer: the converge's first full backup, run on the primary, copied the
    files from the standby once it had replayed to the backup's start; the standby's own
    backup units (the same timers on every host, since either may be promoted) do nothing."""
    log = lab.exec(primary, "cat /var/log/pgbackrest/querygpt-backup.log")
    assert log.returncode == 0, log.stderr
    assert "backup-standby" in log.stdout and "wait for replay on the standby" in log.stdout, log.stdout[-2000:]
    since = lab.exec(standby, "date +%s").stdout.strip()
    run = lab.exec(standby, "systemctl start querygpt-postgresql-backup@diff.service && journalctl "
                            f"-u querygpt-postgresql-backup@diff.service --since @{since} --no-pager -o cat",
                   timeout=60)
    assert run.returncode == 0 and "this host is a standby" in run.stdout, run.stdout + run.stderr


def test_an_erased_document_leaves_nothing_in_qdrant_s3_or_the_database(lab, edge_api, primary, tmp_path):
    collection = f"lab_erase_{uuid.uuid4().hex[:8]}"
    edge = edge_api.edge
    # Uploaded twice under one name: the second replaces the first.
    for version, table in enumerate(["invoices", "receipts"]):
        pdf = schema_pdf(tmp_path / f"v{version}.pdf", table)
        subprocess.run(["docker", "cp", str(pdf), f"{lab.name(edge)}:/var/tmp/erase-me.pdf"], check=True)
        status, body = edge_api("POST", "/upload", "-F 'pdf_file=@/var/tmp/erase-me.pdf;type=application/pdf'",
                                f"-F collection_name={collection}")
        assert status == 200 and body["chunks"] > 0, body
    status, listing = edge_api("GET", f"/collections/{collection}/documents")
    assert status == 200 and len(listing["documents"]) == 1, listing
    document = listing["documents"][0]
    assert document["filename"] == "erase-me.pdf"
    status, collections = edge_api("GET", "/collections")
    assert {"name": collection, "documents": 1} in [
        {"name": c["name"], "documents": c["documents"]} for c in collections["collections"]]
    # A question whose sources come from it: the history keeps the excerpts.
    status, answer = edge_api("POST", "/query", "-H 'Content-Type: application/json'",
                              shlex.quote("-d" + json.dumps({"query": "Which table holds receipts?",
                                                              "collection_name": collection})))
    assert status == 200 and answer["sources"], answer
    status, history = edge_api("GET", f"/history?collection={collection}")
    assert status == 200 and history["entries"][0]["sources"], history

    status, erased = edge_api("DELETE", f"/documents/{document['id']}")
    assert status == 200, erased
    assert erased["chunks_removed"] > 0 and erased["s3_versions_removed"] >= 2 and erased["history_entries_scrubbed"] == 1

    # Qdrant: no point of the document, from either upload.
    qdrant = lab.groups["qdrant"][0]
    points = qdrant_call(lab, qdrant, "POST", f"/collections/{collection}/points/count",
                         {"exact": True, "filter": {"must": [{"key": "filename", "match": {"value": "erase-me.pdf"}}]}})
    assert points["result"]["count"] == 0, points
    # S3: no version of the original, only the delete marker replication carries; asked from a
    # backend host (the S3 endpoint admits the VPC only) with the backend's boto3 and the lab's keys.
    vault = lab_vault()
    script = ("import boto3, json, sys; s3 = boto3.client('s3', endpoint_url=sys.argv[1], region_name='eu-central-1',"
              " aws_access_key_id=sys.argv[2], aws_secret_access_key=sys.argv[3]);"
              " r = s3.list_object_versions(Bucket='querygpt-lab-documents', Prefix=sys.argv[4]);"
              " print(json.dumps([len(r.get('Versions') or []), len(r.get('DeleteMarkers') or [])]))")
    listed = lab.exec(lab.groups["backend"][0], " ".join(shlex.quote(arg) for arg in [
        "/opt/querygpt/backend/current/bin/python", "-c", script,
        f"http://{lab.address(lab.groups['s3'][0])}:5000", vault["vault_s3_access_key_id"],
        vault["vault_s3_secret_access_key"], document["s3_key"]]))
    assert listed.returncode == 0 and json.loads(listed.stdout) == [0, 1], listed.stdout + listed.stderr
    # The database: no row, and no excerpt in the history.
    assert psql(lab, primary, f"SELECT count(*) FROM documents WHERE id = '{document['id']}'") == "0"
    assert psql(lab, primary, f"SELECT count(*) FROM query_history WHERE sources::text LIKE '%{document['id']}%' "
                              f"OR sources::text LIKE '%erase-me.pdf%'") == "0"
    # Gone: a second erasure is a 404 and removes nothing.
    status, again = edge_api("DELETE", f"/documents/{document['id']}")
    assert status == 404 and again["detail"], again


def test_the_edge_routes_only_what_each_path_serves(edge_api):
    """Any other method is the edge's JSON 405 naming the ones the path serves (roles/nginx);
    a name the backend could never accept goes no further than the edge."""
    for method, path, allowed in (("DELETE", "/collections", "GET, HEAD, POST"),
                                  ("GET", f"/documents/{uuid.uuid4()}", "DELETE")):
        refused = edge_api.response(method, path)
        assert (refused.status, refused.headers.get("allow")) == (405, allowed), (method, path, refused)
        assert refused.body == {"detail": "Method Not Allowed"}, refused.body
    status, body = edge_api("GET", "/collections/not a name/documents".replace(" ", "%20"))
    assert status == 404 and body == {"detail": "Not Found"}


def report(done: subprocess.CompletedProcess) -> str:
    """The run's output on one line, as the YAML callback's quoting undone ('' for ')."""
    return " ".join(done.stdout.split()).replace("''", "'")


def restore_postgres(*extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(REPO / ".venv/bin/ansible-playbook"), "-i", "inventories/lab",
                           "playbooks/runbooks/restore_postgres.yml", *extra],
                          cwd=REPO, env=ansible_env(), capture_output=True, text=True, timeout=900, check=False)


def test_a_dropped_table_comes_back_by_point_in_time_restore(lab, primary):
    """The PITR drill: rows written, the time noted, the table dropped; a target outside the
    archive's range is refused before anything stops; the restore to the noted time brings the
    rows back exactly, on the same primary, and the standby is rebuilt from it and streams."""
    psql(lab, primary, "DROP TABLE IF EXISTS pitr_drill")
    psql(lab, primary, "CREATE TABLE pitr_drill (id int PRIMARY KEY, note text)")
    psql(lab, primary, "INSERT INTO pitr_drill SELECT g, md5(g::text) FROM generate_series(1, 500) g")
    digest = "SELECT count(*) || ' ' || md5(string_agg(note, ',' ORDER BY id)) FROM pitr_drill"
    before = psql(lab, primary, digest)
    time.sleep(1.5)
    target = psql(lab, primary, "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') || '+00'")
    time.sleep(1.5)
    psql(lab, primary, "INSERT INTO pitr_drill VALUES (501, 'after the target')")
    psql(lab, primary, "DROP TABLE pitr_drill")

    refused = restore_postgres("-e", "target_time='2000-01-01 00:00:00+00'")
    out = refused.stdout + refused.stderr
    assert refused.returncode != 0, out[-3000:]
    assert "target_time: 2000-01-01 00:00:00+00 is outside the archive's range: a restore can reach from" in out, out[-3000:]
    assert "nothing was stopped" in out
    assert psql(lab, primary, "SELECT NOT pg_is_in_recovery()") == "t", "the refused restore stopped the primary"

    done = restore_postgres("-e", f"target_time='{target}'")
    assert done.returncode == 0, (done.stdout[-6000:] + done.stderr[-2000:])
    assert f"{primary} was restored from pgBackRest's repository to {target}" in report(done)
    assert psql(lab, primary, "SELECT NOT pg_is_in_recovery()") == "t"
    assert psql(lab, primary, digest) == before
    standby = next(h for h in lab.groups["postgres"] if h != primary)
    assert psql(lab, primary, "SELECT string_agg(state || ' ' || sync_state, ', ') FROM pg_stat_replication") \
        == "streaming quorum"
    psql(lab, primary, "INSERT INTO pitr_drill VALUES (502, 'after the restore')")
    assert psql(lab, standby, "SELECT count(*) FROM pitr_drill") == "501"
    # the restored settings are gone: a later clone must not stop at the old target
    assert "recovery_target" not in lab.exec(primary, "cat /var/lib/postgresql/17/main/postgresql.auto.conf").stdout
    psql(lab, primary, "DROP TABLE pitr_drill")



def test_the_latest_state_is_restored_onto_a_fresh_host(lab, primary):
    """The primary's data volume lost (its data directory gone, the standby still running): the
    runbook restores the latest archived state onto that host as a fresh one (the role alone
    first makes it a server, the restore replaces its data), and the standby is rebuilt from it.
    Every commit archived before the loss is back."""
    psql(lab, primary, "CREATE TABLE fresh_drill AS SELECT g AS id FROM generate_series(1, 300) g")
    segment = psql(lab, primary, "SELECT pg_walfile_name(pg_switch_wal())")
    deadline = time.monotonic() + 120
    while psql(lab, primary, "SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver") < segment:
        assert time.monotonic() < deadline, f"{segment} not archived within 120 s"
        time.sleep(1)
    lost = lab.exec(primary, "systemctl stop postgresql@17-main && rm -rf /var/lib/postgresql/17/main")
    assert lost.returncode == 0, lost.stderr

    done = restore_postgres("-e", f"restore_host={primary}")
    assert done.returncode == 0, (done.stdout[-6000:] + done.stderr[-2000:])
    assert f"{primary} was restored from pgBackRest's repository to the end of the archived WAL" in report(done)
    assert psql(lab, primary, "SELECT NOT pg_is_in_recovery()") == "t"
    assert psql(lab, primary, "SELECT count(*) FROM fresh_drill") == "300"
    assert psql(lab, primary, "SELECT string_agg(state || ' ' || sync_state, ', ') FROM pg_stat_replication") \
        == "streaming quorum"
    psql(lab, primary, "DROP TABLE fresh_drill")
