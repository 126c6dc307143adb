"""The Qdrant API keys and the S3 credentials replaced under load (playbooks/runbooks/
rotate_secrets.yml), as docs/runbooks/rotate_secrets.md has the operator do it: `bin/new-env
--rotate-secrets`'s step on the lab's vault (labctl.secrets.rotate_secrets, the same function)
plus a new S3 pair (the lab's S3 has static keys), the runbook, then the finishing step.
Meanwhile benchmarks/load.py's clients ask questions through the load balancer: every question
searches Qdrant with the full-access key while the peers switch, and no request may fail.
Afterwards every peer refuses the old keys and takes the new ones, every client holds only the
new key and the new S3 pair, Prometheus scrapes Qdrant with the new read-only key, and a backup
goes through with them.

The lab's S3 (moto) accepts any key pair, so it cannot show that the old pair is no longer
used: the files of every S3 client are checked instead, and the backup only shows the new
pair works.
"""
from __future__ import annotations

import shlex
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))
sys.path.insert(0, str(REPO / "lab"))
from labctl import secrets  # noqa: E402
from labview import INTERNAL_CA, lab_vault  # noqa: E402
from rollouts import playbook, under_load  # noqa: E402
from test_lab_backup import metrics  # noqa: E402
from test_lab_ca_rotation import scraped_at  # noqa: E402
from test_lab_monitoring import curl_json, prom, wait_for  # noqa: E402


@pytest.fixture(scope="module")
def rotation(lab, rollout_site):
    """Rotate under load once; the tests below read what it left: (old vault, new vault,
    the rollout, when it ended)."""
    old = dict(lab_vault())

    def rotate(vault: dict[str, str]) -> None:
        secrets.rotate_secrets(vault)
        # a second key from the S3 provider, which accepts both until the old one is deleted
        vault["vault_s3_access_key_id"] = "LABROTATED" + secrets.new_secret()[:10].upper()
        vault["vault_s3_secret_access_key"] = secrets.new_secret()[:40]

    secrets.edit_vault(rotate)
    lab_vault.cache_clear()
    with under_load(rollout_site, "secrets rotation") as run:
        run["output"] = playbook("playbooks/runbooks/rotate_secrets.yml", timeout=900).stdout
    ended = time.time()
    # Only after a complete run: a failed one leaves the rotation under way, as an operator
    # would find it, and running the runbook again finishes it.
    secrets.edit_vault(secrets.finish_secrets_rotation)
    lab_vault.cache_clear()
    new = dict(lab_vault())
    assert not [name for name in new if name.endswith("_previous")]
    return old, new, run["rollout"], ended


def test_the_rotation_under_load_fails_no_request(rotation):
    _, _, rollout, _ = rotation
    result = rollout.result
    assert not result.failures, result.describe_failures()
    assert result.stats("/api/query")["requests"] >= 10, result.report()
    # each backend restarted twice (both keys, then the new one alone), each peer once
    assert rollout.output.count("RUNNING HANDLER [backend : Restart querygpt-backend]") == 2 * 2, rollout.output[-4000:]
    # each restart drained, as a backend release's is (the same handlers): out of every edge's
    # upstreams, what is in flight finished, restarted, put back once ready
    assert rollout.output.count(
        "RUNNING HANDLER [backend : Out - wait until no request from an edge is in flight]") == 2 * 2
    assert rollout.output.count("backend : Mark this backend down, or up again, on every edge]") == 2 * 2 * 2
    assert rollout.output.count("RUNNING HANDLER [qdrant : Restart qdrant]") == 3, rollout.output[-4000:]


def _status(lab, host: str, key: str, method: str = "GET", path: str = "/collections") -> str:
    """The HTTP status a Qdrant peer answers with this key, asked from the first backend host."""
    command = (f"curl -sS -m 10 -o /dev/null -w '%{{http_code}}' -X {method} -H @-"
               f" --cacert {INTERNAL_CA} {shlex.quote(f'https://{lab.address(host)}:6333{path}')}")
    return lab.exec(lab.groups["backend"][0], command, timeout=20, input=f"api-key: {key}\n").stdout.strip()


def test_every_peer_refuses_the_old_keys_and_takes_the_new_ones(lab, rotation):
    old, new, _, _ = rotation
    for peer in lab.groups["qdrant"]:
        statuses = {name: _status(lab, peer, vault[name])
                    for name, vault in (("vault_qdrant_api_key", old), ("vault_qdrant_read_only_api_key", old))}
        assert statuses == {"vault_qdrant_api_key": "401", "vault_qdrant_read_only_api_key": "401"}, peer
        assert _status(lab, peer, new["vault_qdrant_api_key"]) == "200", peer
        assert _status(lab, peer, new["vault_qdrant_read_only_api_key"]) == "200", peer
        # the new read-only key is still read-only
        assert _status(lab, peer, new["vault_qdrant_read_only_api_key"], "DELETE", "/collections/nothing") == "403"


def _holds(lab, host: str, path: str, values: dict[str, str]) -> dict[str, bool]:
    """Which of the values (name -> value) the file on host contains; the values stay off the output."""
    text = lab.exec(host, f"cat {path}").stdout
    return {name: value in text for name, value in values.items()}


def test_every_client_holds_the_new_key_alone_and_the_new_s3_pair(lab, rotation):
    old, new, _, _ = rotation
    wanted = {"new key": new["vault_qdrant_api_key"], "new S3 key": new["vault_s3_access_key_id"],
              "new S3 secret": new["vault_s3_secret_access_key"],
              "old key": old["vault_qdrant_api_key"], "old S3 key": old["vault_s3_access_key_id"]}
    holding = {"new key": True, "new S3 key": True, "new S3 secret": True, "old key": False, "old S3 key": False}
    for host in lab.groups["backend"]:
        assert _holds(lab, host, "/etc/querygpt/backend.env", wanted) == holding, host
        assert _holds(lab, host, "/etc/querygpt/backend.env", {"no previous": 'QUERYGPT_QDRANT_API_KEY_PREVIOUS=""'}) == {
            "no previous": True}, host
    for host in lab.groups["qdrant"]:
        assert _holds(lab, host, "/etc/querygpt/backup.json", wanted) == holding, host
    s3_only = {k: v for k, v in wanted.items() if "S3" in k}
    for host in lab.groups["postgres"]:
        assert _holds(lab, host, "/etc/pgbackrest/pgbackrest.conf", s3_only) == {
            k: holding[k] for k in s3_only}, host
    mon = lab.groups["monitoring"][0]
    same = lab.exec(mon, "cat /etc/prometheus/qdrant-api-key").stdout == new["vault_qdrant_read_only_api_key"]
    assert same, "Prometheus's key file does not hold the new read-only key"


def test_prometheus_scrapes_every_qdrant_peer_with_the_new_read_only_key(lab, rotation):
    *_, ended = rotation
    mon = lab.groups["monitoring"][0]

    def failing():
        targets = curl_json(lab, mon, f"{prom(lab, mon)}/api/v1/targets?state=active")["data"]["activeTargets"]
        qdrant = [t for t in targets if t["labels"]["job"] == "qdrant"]
        assert len(qdrant) == len(lab.groups["qdrant"]), qdrant
        return [(t["labels"]["instance"], t["health"], t["lastError"]) for t in qdrant
                if t["health"] != "up" or scraped_at(t["lastScrape"]) < ended]

    wait_for(lambda: not failing(), 60)
    assert not failing()


def test_a_backup_goes_through_with_the_new_key_and_s3_pair(lab, rotation, rollout_site):
    """The program exits 0 with nothing to back up too: the load's collection, which has shards
    on every peer, must have been backed up by this run (its textfile metrics)."""
    *_, ended = rotation
    host = lab.groups["qdrant"][0]
    done = lab.ssh(host, "sudo /usr/local/bin/querygpt-backup backup", timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    written = metrics(lab, host)
    successes = [value for series, value in written.items()
                 if series.startswith("querygpt_backup_last_success_timestamp_seconds{")
                 and f'collection="{rollout_site.collection}"' in series]
    assert successes and min(successes) > ended, (rollout_site.collection, written)
