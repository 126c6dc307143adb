#!/usr/bin/env python3
"""What each rollout costs the users, on the running lab (`bin/lab up` first): prints, for
every rollout run under steady load through the lab's load balancer (HAProxy on `lb`, the
NLB's stand-in), its wall time, the requests sent, the failed ones, the requests sent again
after a kept-alive connection closed under them, and p50/p95/p99 of the questions; then how
long each service took to answer again after kill -9.

  backend release   playbooks/app.yml with a changed environment: each backend drained,
                    restarted, put back (the canary, then the rest)
  nginx change      playbooks/edge.yml with a changed nginx.conf: a reload per edge
  frontend release  a release with renamed assets on every edge at once, under page loads
                    (then rolled back to the release served before)
  reboot edge       playbooks/runbooks/rolling_reboot.yml reboot_hosts=edge
  reboot backend    the same for the backends
  kill -9           every process of nginx, the backend, Qdrant and Ollama on one host
  qdrant kill       kill -9 of Qdrant on one peer of the cluster, under questions
  qdrant upgrade    playbooks/data.yml with the next Qdrant patch release: one peer at a
                    time, each waiting until every shard replica is Active (then back)
  zone outage       every container of one zone killed, then started again: how soon the
                    questions are answered again, the points kept, how soon the cluster heals
  postgres failover the PostgreSQL primary's container killed under questions and uploads,
                    then playbooks/runbooks/failover_postgres.yml: the failed uploads and how
                    long writes stopped, the acknowledged uploads lost (target: none); then
                    the old primary's instance returns (its fence refuses to start it as a
                    primary) and the runbook, run again, rebuilds it as a standby

The target for every rollout is 0 failed requests (the Qdrant kill included), 10 s for a
service to answer again, and for a zone outage: answering within 30 s, no point lost;
tests/lab/test_lab_rollout.py runs the same scenarios (this module's functions) and asserts
them. A measurement, not a test: it exits 1 only when a playbook fails.

    .venv/bin/python benchmarks/rollouts.py [--only backend_release,kill] [--json FILE] [--token TOKEN ...]

Each rollout changes a value to the one the lab does not run (and back on the next run), so
the lab keeps a changed value until its next converge, as after the lab tests.

Identity (docs/access-control.md): the site's uploads and questions carry API tokens made with
the backend's CLI (tests/lab/labview.py, lab_admin): the admin `lab-rollouts` for the uploads
and single requests, and one admin per load worker (`lab-rollouts-load-<i>`), so no worker
shares the per-user rate and in-flight limits with another. Health checks and pages carry none.
--token (repeatable; default: the environment's QUERYGPT_TOKEN) uses given admins' tokens instead.
"""

from __future__ import annotations

import argparse
import base64
import gzip
import hashlib
import io
import json
import os
import shlex
import subprocess
import sys
import tarfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "lab"))
sys.path.insert(0, str(ROOT / "benchmarks"))
from load import LoadRun, Result, tls_context  # noqa: E402
from labview import REPO, Identity, Lab, acme_root_pem, ansible_env, lab_admin, load_lab, qdrant_call  # noqa: E402
from test_lab_edge import SCHEMA, write_pdf  # noqa: E402  (the lab tests' schema document)

# Four kept-alive clients, a quarter of their requests questions, half a second between two:
# about 1.6 questions a second, below the edges' per-client query rate (nginx_query_rate,
# 2 r/s) even while one edge takes all of them (the load balancer hides every client behind
# its own address), and light enough that the lab's two cores still run the rollout. Two of
# the clients open a new connection per request, as an NLB's many clients do: they meet an
# edge the load balancer still sends to after it went away (a reboot without a drain fails
# some of them).
LOAD = {"concurrency": 4, "query_share": 0.25, "timeout": 60.0, "pause": 0.5, "new_connections": 2}

FRONTEND = "/opt/querygpt/frontend"


class Site:
    """The site as clients reach it: the load balancer's public address; each edge's certificate
    carries its own name (the lab has no shared one), so either edge's name is accepted.
    `identity` authenticates the single requests (its token on every /api/ path but /health);
    `load_tokens`, one per load worker, the load's questions."""

    def __init__(self, address: str, ca_pem: str, names: list[str], collection: str,
                 identity: Identity | None = None, load_tokens: Sequence[str] = ()) -> None:
        self.url, self.ca_pem, self.names, self.collection = f"https://{address}", ca_pem, names, collection
        self.identity, self.load_tokens = identity, list(load_tokens)

    def __repr__(self) -> str:  # never a token
        return f"Site({self.url!r}, {self.collection!r})"

    def load(self, **kw: Any) -> LoadRun:
        tokens = self.load_tokens or ([self.identity.token] if self.identity else [])
        return LoadRun(self.url, ca_data=self.ca_pem, server_name=self.names[0], accept_names=self.names,
                       collection=self.collection, token=tokens or None, **{**LOAD, **kw})

    def request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        """One request on a new connection (so the load balancer picks an edge for it)."""
        context = tls_context(ca_data=self.ca_pem, accept_names=self.names)
        headers = {"Host": self.names[0]}
        if self.identity and path.startswith("/api/") and not path.startswith("/api/health"):
            headers.update(self.identity.authorization)
        with httpx.Client(verify=context, headers=headers, trust_env=False) as client:
            return client.request(method, self.url + path, extensions={"sni_hostname": self.names[0]}, **kw)


BENCH_USER = "lab-rollouts"


def open_site(lab: Lab, workdir: Path, tokens: Sequence[str] = ()) -> Site:
    """The site, with a fresh collection holding the schema document the load asks about, and
    the identities that call it: the admin BENCH_USER, and one admin per load worker (made, or
    their passwords reset, with the backend's CLI; each with a new token). Given `tokens`
    (admins' API tokens), those instead: the first for the single requests, each load worker
    one in turn."""
    names = sorted(str(lab.render("nginx_server_name", h)) for h in lab.groups["edge"])
    if tokens:
        identity, load_tokens = Identity("(given token)", "", tokens[0]), list(tokens)
    else:
        identity = lab_admin(lab, BENCH_USER)
        load_tokens = [lab_admin(lab, f"{BENCH_USER}-load-{i}").token for i in range(int(LOAD["concurrency"]))]
    site = Site(lab.hostvars[lab.groups["lb"][0]]["ec2_public_ip_address"], acme_root_pem(lab), names,
                f"rollout_{uuid.uuid4().hex[:8]}", identity, load_tokens)
    pdf = write_pdf(workdir / "rollout-schema.pdf", ["Sales database schema", *SCHEMA])
    resp = site.request("POST", "/api/upload", files={"pdf_file": (pdf.name, pdf.read_bytes(), "application/pdf")},
                        data={"collection_name": site.collection}, timeout=120)
    if resp.status_code != 200:
        raise RuntimeError(f"upload of the schema document failed: {resp.status_code} {resp.text}")
    return site


class PlaybookFailed(RuntimeError):
    pass


def playbook(path: str, *args: str, timeout: int = 1200) -> subprocess.CompletedProcess:
    """ansible-playbook against the lab, as an operator runs it; PlaybookFailed with its output's end."""
    done = subprocess.run([str(REPO / ".venv/bin/ansible-playbook"), path, "-i", "inventories/lab", *args],
                          cwd=REPO, env=ansible_env(), capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise PlaybookFailed(f"{path} exited {done.returncode}:\n{done.stdout[-6000:]}{done.stderr[-2000:]}")
    return done


def other(lab: Lab, host: str, command: str, values: tuple[int, int]) -> int:
    """Whichever of two values `command` (run on host) does not print: each run changes it."""
    current = lab.exec(host, command).stdout.strip()
    return values[1] if current == str(values[0]) else values[0]


@dataclass
class Rollout:
    """One rollout under load: what the clients saw and what the playbook printed."""

    name: str
    seconds: float
    result: Result
    output: str


@contextmanager
def under_load(site: Site, name: str, **load: Any) -> Iterator[dict[str, Any]]:
    """Load on the site while the body runs; the body puts its playbook's output in the dict."""
    captured: dict[str, Any] = {"output": ""}
    started = time.monotonic()
    with site.load(**load) as run:
        yield captured
    assert run.result is not None
    captured["rollout"] = Rollout(name, time.monotonic() - started, run.result, captured["output"])


def backend_release(lab: Lab, site: Site) -> Rollout:
    """Each backend restarts (its environment file changes): it leaves the edges' upstreams,
    finishes what is in flight, restarts and rejoins once ready."""
    timeout = other(lab, lab.groups["backend"][0],
                    "sed -n 's/^QUERYGPT_REQUEST_TIMEOUT=//p' /etc/querygpt/backend.env", (118, 119))
    with under_load(site, "backend release") as run:
        run["output"] = playbook("playbooks/app.yml", "-e", f"backend_request_timeout={timeout}").stdout
    return run["rollout"]


def nginx_change(lab: Lab, site: Site) -> Rollout:
    """A reload of each edge's nginx: it answers the requests in flight on its old workers."""
    fail_timeout = other(lab, lab.groups["edge"][0],
                         r"grep -o -m1 'fail_timeout=[0-9]*' /etc/nginx/nginx.conf | cut -d= -f2", (11, 12))
    with under_load(site, "nginx change") as run:
        run["output"] = playbook("playbooks/edge.yml", "-e", f"nginx_backend_fail_timeout={fail_timeout}").stdout
    return run["rollout"]


def boot_ids(lab: Lab, tier: str) -> dict[str, str]:
    """Each host's boot: the start time of its PID 1, which a reboot changes."""
    return {h: lab.exec(h, "cut -d ' ' -f 22 /proc/1/stat").stdout.strip() for h in lab.groups[tier]}


def rolling_reboot(lab: Lab, site: Site, tier: str) -> Rollout:
    before = boot_ids(lab, tier)
    with under_load(site, f"reboot {tier}") as run:
        run["output"] = playbook("playbooks/runbooks/rolling_reboot.yml", "-e", f"reboot_hosts={tier}").stdout
    after = boot_ids(lab, tier)
    not_rebooted = [h for h in before if after[h] == before[h]]
    if not_rebooted:
        raise PlaybookFailed(f"rolling_reboot.yml ran, but {not_rebooted} did not reboot")
    return run["rollout"]


def renamed_release(lab: Lab, edge: str, where: Path) -> tuple[Path, dict[str, str]]:
    """The served frontend with every asset renamed (a new build's hashed names), as a dist
    archive; and which old asset path became which new one."""
    served = lab.exec(edge, f"tar -C {FRONTEND}/current -czf - . | base64 -w0", timeout=60).stdout
    renames: dict[str, str] = {}
    out = io.BytesIO()
    # gzip without a timestamp: the same served release gives the same archive, so the same
    # release name, and a second run deploys no new release
    with tarfile.open(fileobj=io.BytesIO(base64.b64decode(served))) as src, \
            gzip.GzipFile(fileobj=out, mode="wb", mtime=0) as gz, tarfile.open(fileobj=gz, mode="w") as dst:
        members = [(m, src.extractfile(m).read() if m.isfile() else None) for m in src.getmembers()]  # type: ignore[union-attr]
        for m, _ in members:
            name = m.name.removeprefix("./")
            if m.isfile() and name.startswith("assets/"):
                stem, dot, ext = name.rpartition(".")
                renames["/" + name] = f"/{stem}-r2{dot}{ext}"
        for m, data in members:
            name = m.name.removeprefix("./")
            if data is not None and name == "index.html":
                text = data.decode()
                for old, new in renames.items():
                    text = text.replace(f'"{old}"', f'"{new}"')
                data = text.encode()
            if "/" + name in renames:
                m.name = "." + renames["/" + name]
            if data is not None:
                m.size = len(data)
            dst.addfile(m, io.BytesIO(data) if data is not None else None)
    archive = where / "frontend-r2.tar.gz"
    archive.write_bytes(out.getvalue())
    return archive, renames


def frontend_release(lab: Lab, site: Site, workdir: Path,
                     while_released: Callable[[dict[str, str]], None] | None = None) -> Rollout:
    """A release with renamed assets on every edge at once, under page loads (GET / and every
    asset it names, as a browser); `while_released(renames)` runs before the rollback to the
    release served before (kept: it is the one the release switched away from)."""
    edges = lab.groups["edge"]
    before = {e: lab.exec(e, f"readlink {FRONTEND}/current").stdout.strip() for e in edges}
    if len(set(before.values())) != 1:
        raise PlaybookFailed(f"the edges serve different releases: {before}")
    archive, renames = renamed_release(lab, edges[0], workdir)
    checksum = "sha256:" + hashlib.sha256(archive.read_bytes()).hexdigest()
    try:
        with under_load(site, "frontend release", query_share=0.0, page_share=0.5) as run:
            run["output"] = playbook(
                "playbooks/edge.yml", "--tags", "frontend", "-e", "frontend_version=rollout-test",
                "-e", f"frontend_dist_archive={archive}", "-e", f"frontend_dist_archive_checksum={checksum}").stdout
        if while_released is not None:
            while_released(renames)
    finally:
        playbook("playbooks/edge.yml", "--tags", "frontend", "-e",
                 f"frontend_rollback_to={before[edges[0]].rsplit('/', 1)[-1]}")
    return run["rollout"]


# Each service's probe, run on its host: what answering again means.
KILLS = {
    "nginx": ("edge", "curl -sfk -o /dev/null https://127.0.0.1/"),
    "querygpt-backend": ("backend", "curl -sf --cacert /etc/journal-tls/ca.pem -o /dev/null https://{address}:8000/health"),
    "qdrant": ("qdrant", "curl -sf -o /dev/null --cacert /etc/journal-tls/ca.pem https://{address}:6333/healthz"),
    "ollama": ("ollama", "curl -sf -o /dev/null http://127.0.0.1:11434/api/version"),
}


def kill_recovery(lab: Lab, unit: str, give_up: float = 30.0) -> float:
    """kill -9 of every process of `unit` on the first host of its group; seconds until its
    probe answers again (systemd's Restart=on-failure), or RuntimeError after `give_up`."""
    group, probe = KILLS[unit]
    host = lab.groups[group][0]
    probe = probe.format(address=lab.address(host))
    if lab.exec(host, probe).returncode != 0:
        raise RuntimeError(f"{unit} does not answer before the kill")
    if lab.exec(host, f"systemctl kill --signal=KILL {unit}").returncode != 0:
        raise RuntimeError(f"systemctl kill {unit} failed")
    killed = time.monotonic()
    time.sleep(0.5)  # the processes are gone before the first probe
    while lab.exec(host, probe).returncode != 0:
        if time.monotonic() - killed > give_up:
            raise RuntimeError(f"{unit} did not answer again within {give_up:.0f} s")
        time.sleep(0.2)
    return time.monotonic() - killed


# --- Qdrant in distributed mode ------------------------------------------------------------


def qdrant(lab: Lab, host: str, method: str, path: str, body: Any = None, timeout: int = 20) -> Any:
    """`result` of a call to Qdrant's REST API on `host`, made on that host; RuntimeError when
    it does not answer 200."""
    return qdrant_call(lab, host, method, path, body, timeout=timeout)["result"]


def qdrant_points(lab: Lab, collection: str, hosts: list[str]) -> int:
    """Exact point count of `collection`, asked of the first of `hosts` that answers."""
    for host in hosts:
        try:
            return int(qdrant(lab, host, "POST", f"/collections/{collection}/points/count", {"exact": True})["count"])
        except RuntimeError:
            continue
    raise RuntimeError(f"no Qdrant peer of {hosts} answers a count of {collection}")


def qdrant_unsettled(lab: Lab, host: str) -> list[str]:
    """What keeps the cluster from being whole, as `host` sees it: peers missing, replicas not
    Active, transfers running ([] = every replica of every collection Active)."""
    out = []
    peers = qdrant(lab, host, "GET", "/cluster")["peers"]
    if len(peers) != len(lab.groups["qdrant"]):
        out.append(f"{len(peers)} peers")
    for name in sorted(c["name"] for c in qdrant(lab, host, "GET", "/collections")["collections"]):
        state = qdrant(lab, host, "GET", f"/collections/{name}/cluster")
        replicas = [dict(r, peer_id=state["peer_id"]) for r in state["local_shards"]] + state["remote_shards"]
        out += [f"{name} shard {r['shard_id']} {r['state']} on peer {r['peer_id']}"
                for r in replicas if r["state"] != "Active"]
        out += [f"{name} shard {t['shard_id']} in transfer" for t in state["shard_transfers"]]
    return out


def wait_qdrant_settled(lab: Lab, host: str, give_up: float = 120.0) -> float:
    """Seconds until every replica of every collection is Active on `host`'s view."""
    started, last = time.monotonic(), ["not asked yet"]
    while time.monotonic() - started < give_up:
        try:
            last = qdrant_unsettled(lab, host)
        except RuntimeError as err:
            last = [str(err)]
        if not last:
            return time.monotonic() - started
        time.sleep(1)
    raise RuntimeError(f"the Qdrant cluster did not settle within {give_up:.0f} s: {last[:10]}")


QDRANT_KILL_MIN_LOAD_SECONDS = 20.0


def qdrant_kill(lab: Lab, site: Site) -> tuple[float, Rollout]:
    """kill -9 of Qdrant on its first peer under questions: the backend moves on to the next
    peer, the peer serves every shard from a live replica; (seconds until it answered again,
    the rollout), once its replicas caught up with the writes it missed."""
    with under_load(site, "kill -9 qdrant") as run:
        began = time.monotonic()
        time.sleep(3)  # questions in flight
        back = kill_recovery(lab, "qdrant")
        settled = wait_qdrant_settled(lab, lab.groups["qdrant"][0])
        # and afterwards: 20 s of load in all, however quick the recovery: about 16 questions
        # (8 took 9.5 s with four clients, each the stand-in's GPU time), over the tests'
        # floor of 10
        time.sleep(max(3.0, QDRANT_KILL_MIN_LOAD_SECONDS - (time.monotonic() - began)))
        run["output"] = f"qdrant answered again after {back:.1f} s, its replicas Active {settled:.1f} s later"
    return back, run["rollout"]


def qdrant_upgrade(lab: Lab, site: Site, workdir: Path) -> Rollout:
    """A rolling Qdrant upgrade under questions (playbooks/data.yml, one peer at a time, each
    waiting until every replica is Active): the lab's stand-in packaged as the next patch
    release, then the pinned release again (not measured)."""
    pinned = str(lab.render("qdrant_version", lab.groups["qdrant"][0]))
    major, minor, patch = pinned.split(".")
    version = f"{major}.{minor}.{int(patch) + 1}"
    built = subprocess.run([sys.executable, str(REPO / "lab/standins/qdrant/package.py"), "--version", version,
                            "--out", str(workdir)], capture_output=True, text=True, check=True)
    checksum = built.stdout.split()[-1]
    archive = workdir / "qdrant-x86_64-unknown-linux-gnu.tar.gz"
    try:
        with under_load(site, "qdrant upgrade") as run:
            run["output"] = playbook("playbooks/data.yml", "--limit", "qdrant", "--tags", "qdrant",
                                     "-e", f"qdrant_version={version}", "-e", f"qdrant_checksum={checksum}",
                                     "-e", f"qdrant_download_url=file://{archive}").stdout
        running = {h: _qdrant_version(lab, h) for h in lab.groups["qdrant"]}
        if set(running.values()) != {version}:
            raise PlaybookFailed(f"data.yml ran, but the peers run {running}, not {version}")
    finally:
        # back to the pin: a downgrade, which the role refuses unless forced (the stand-in's
        # storage is the same across patch releases)
        playbook("playbooks/data.yml", "--limit", "qdrant", "--tags", "qdrant", "-e", "qdrant_force_upgrade=true")
    return run["rollout"]


def _qdrant_version(lab: Lab, host: str) -> str:
    """The version Qdrant on `host` reports at GET / (open, no key; TLS, verified)."""
    done = lab.exec(host, f"curl -sS -m 10 --cacert /etc/journal-tls/ca.pem https://{lab.address(host)}:6333/")
    return str(json.loads(done.stdout)["version"])


PROBE_POINTS = 120  # points of the zone outage's probe collection: some in every shard


@dataclass
class Outage:
    """Every container of one zone killed under load, then started again."""

    zone: str
    hosts: list[str]
    result: Result
    down_at: float  # seconds into the load run when the zone went down
    answering_after: float  # seconds from the outage to the last failed request (0: none failed)
    points: tuple[int, int]  # the probe collection's points before and during the outage
    healed_after: float  # seconds from the zone's return until every replica was Active again


def zone_outage(lab: Lab, site: Site, hold: float = 45.0) -> Outage:
    """`docker kill` of every container of the second zone (it holds an edge, a backend, a
    Qdrant peer and an Ollama host, but neither the load balancer, which stands in for the
    NLB, a regional service, nor the bastion) under questions; `hold` seconds later the zone
    returns (`docker start`, as after a power cut) and nothing else is done to heal it."""
    zones = sorted({lab.zone(h) for h in lab.groups["qdrant"]})
    zone = zones[1]
    # the project's hosts of the zone; not the lab's stand-ins for S3 and the ACME CA
    # (external_services), regional or global services that no zone of the VPC holds (and
    # a restarted ACME stand-in forgets its CA and accounts)
    hosts = sorted(h for h in lab.hostvars if lab.zone(h) == zone and h not in lab.groups["external_services"])
    survivors = [h for h in lab.groups["qdrant"] if h not in hosts]
    if {"lb", "bastion"} & {g for g in lab.groups if any(h in lab.groups[g] for h in hosts)}:
        raise RuntimeError(f"zone {zone} holds the load balancer or the bastion: {hosts}")
    wait_qdrant_settled(lab, survivors[0])
    # points in every shard: a collection laid out as the backend lays them out (one shard per
    # peer, two copies), filled with enough points to reach each shard
    probe = f"zone_probe_{uuid.uuid4().hex[:8]}"
    layout = lab.render("{'shard_number': backend_qdrant_shard_number, 'replication_factor': "
                        "backend_qdrant_replication_factor, 'write_consistency_factor': "
                        "backend_qdrant_write_consistency_factor}", lab.groups["backend"][0])
    assert isinstance(layout, dict)
    qdrant(lab, survivors[0], "PUT", f"/collections/{probe}", {"vectors": {"size": 4, "distance": "Cosine"},
                                                                **{k: int(v) for k, v in layout.items()}})
    try:
        qdrant(lab, survivors[0], "PUT", f"/collections/{probe}/points?wait=true", {"points": [
            {"id": i, "vector": [1.0 + i, 2.0, 3.0 - i / 100, 0.5], "payload": {"n": i}} for i in range(PROBE_POINTS)]})
        before = qdrant_points(lab, probe, survivors)
        with site.load(**LOAD) as load:
            time.sleep(3)
            down_at = load.snapshot().seconds
            for host in hosts:
                subprocess.run(["docker", "kill", lab.name(host)], capture_output=True, check=True, timeout=60)
            time.sleep(hold)
            during = qdrant_points(lab, probe, survivors)
        result = load.result
        assert result is not None
        returned = time.monotonic()
        for host in hosts:
            subprocess.run(["docker", "start", lab.name(host)], capture_output=True, check=True, timeout=60)
        wait_qdrant_settled(lab, next(h for h in lab.groups["qdrant"] if h in hosts), give_up=180)
        healed = time.monotonic() - returned
    finally:
        qdrant(lab, survivors[0], "DELETE", f"/collections/{probe}")
    last_failure = max((f.at for f in result.failures), default=down_at)
    return Outage(zone, hosts, result, down_at, max(0.0, last_failure - down_at), (before, during), healed)


# --- PostgreSQL failover ----------------------------------------------------------------------

FENCE_REFUSAL = "refusing to start this primary"


@dataclass
class Failover:
    """The primary's container killed under load, then the failover runbook."""

    killed: str  # the primary whose container was killed
    promoted: str  # the primary after the runbook
    result: Result  # the questions asked meanwhile
    uploads: list[tuple[float, int, str, str]]  # (seconds after the kill, status, filename, id or reason)
    lost: list[str]  # acknowledged uploads the new primary does not list
    runbook_seconds: float  # the runbook's run, from the kill
    fenced: bool  # the old primary's PostgreSQL refused to start when its instance came back
    rebuild_seconds: float  # the runbook run again: the old primary rebuilt as a standby
    replication: str  # state and sync_state of the standbys, on the new primary, after the rebuild

    @property
    def failed_uploads(self) -> list[tuple[float, int, str, str]]:
        return [u for u in self.uploads if u[1] != 200]

    @property
    def writes_stopped(self) -> float:
        """Seconds from the kill to the first upload acknowledged after it."""
        return min((u[0] for u in self.uploads if u[1] == 200 and u[0] > 0), default=float("inf"))


def postgres_psql(lab: Lab, host: str, sql: str) -> str:
    done = lab.exec(host, f"runuser -u postgres -- psql -XAtq -d querygpt -c {shlex.quote(sql)}")
    if done.returncode != 0:
        raise RuntimeError(f"psql on {host}: {done.stderr.strip()}")
    return done.stdout.strip()


def postgres_primary(lab: Lab) -> str:
    """The one host that answers as a primary; RuntimeError unless there is exactly one."""
    found = []
    for host in lab.groups["postgres"]:
        try:
            if postgres_psql(lab, host, "SELECT NOT pg_is_in_recovery()") == "t":
                found.append(host)
        except RuntimeError:
            continue
    if len(found) != 1:
        raise RuntimeError(f"exactly one PostgreSQL primary expected, found {found}")
    return found[0]


def postgres_failover(lab: Lab, site: Site, workdir: Path, pause: float = 6.0) -> Failover:
    """`docker kill` of the primary's container (the instance lost) under questions, and an
    upload every `pause` seconds (the edges admit 10 a minute per client, and the load balancer
    shows every client as one); then the runbook, told the lost host is stopped. The container
    is started again once the runbook is done: its fence must refuse to start the old primary;
    the runbook run again rebuilds it as a standby."""
    killed = postgres_primary(lab)
    collection = f"failover_{uuid.uuid4().hex[:8]}"
    pdf = write_pdf(workdir / "failover-schema.pdf", ["Failover drill schema", *SCHEMA]).read_bytes()
    uploads: list[tuple[float, int, str, str]] = []
    stop = threading.Event()
    killed_at = time.monotonic() + 3600.0  # set at the kill

    def write() -> None:
        n = 0
        while not stop.is_set():
            n += 1
            name = f"failover-{n:03d}.pdf"
            sent = time.monotonic()
            try:
                resp = site.request("POST", "/api/upload", files={"pdf_file": (name, pdf, "application/pdf")},
                                    data={"collection_name": collection}, timeout=120)
                answer = resp.json().get("document_id", "") if resp.status_code == 200 else resp.text[:200]
                uploads.append((sent - killed_at, resp.status_code, name, answer))
            except httpx.HTTPError as exc:
                uploads.append((sent - killed_at, 0, name, repr(exc)))
            stop.wait(pause)

    writer = threading.Thread(target=write, name="failover-writer", daemon=True)
    with site.load(**LOAD) as load:
        writer.start()
        time.sleep(2 * pause + 1)  # acknowledged writes before the kill
        killed_at = time.monotonic()
        subprocess.run(["docker", "kill", lab.name(killed)], capture_output=True, check=True, timeout=60)
        playbook("playbooks/runbooks/failover_postgres.yml", "-e", "postgresql_failover_lost_hosts_stopped=true")
        runbook_seconds = time.monotonic() - killed_at
        time.sleep(2 * pause + 1)  # and after it
        stop.set()
        writer.join(timeout=180)
    result = load.result
    assert result is not None
    promoted = postgres_primary(lab)
    acknowledged = {u[2] for u in uploads if u[1] == 200}
    listed = site.request("GET", f"/api/collections/{collection}/documents", timeout=60)
    listed.raise_for_status()
    lost = sorted(acknowledged - {d["filename"] for d in listed.json()["documents"]})

    # The old primary's instance comes back: its fence keeps it from starting as a primary.
    subprocess.run(["docker", "start", lab.name(killed)], capture_output=True, check=True, timeout=60)
    unit = "postgresql@17-main"
    deadline, state = time.monotonic() + 90, ""
    while time.monotonic() < deadline:
        state = lab.exec(killed, f"systemctl show -p ActiveState --value {unit}").stdout.strip()
        if state in ("failed", "active"):
            break
        time.sleep(1)
    journal = lab.exec(killed, f"journalctl -b -u {unit} --no-pager").stdout
    fenced = state == "failed" and FENCE_REFUSAL in journal
    started = time.monotonic()
    playbook("playbooks/runbooks/failover_postgres.yml")
    rebuild_seconds = time.monotonic() - started
    replication = postgres_psql(lab, promoted, "SELECT string_agg(state || ' ' || sync_state, ', ') FROM pg_stat_replication")
    return Failover(killed, promoted, result, uploads, lost, runbook_seconds, fenced, rebuild_seconds, replication)


def _row(r: Rollout) -> str:
    def ms(value: float | None) -> str:
        return f"{value:>7.0f}" if value is not None else f"{'-':>7}"

    everything = r.result.stats()
    measured = "/api/query" if r.result.stats("/api/query")["requests"] else "/"
    part = r.result.stats(measured)
    return (f"{r.name:<18} {r.seconds:>7.1f} {everything['requests']:>8} {everything['failures']:>6} "
            f"{len(r.result.stale_retries):>5}  {measured:<10} {ms(part['p50_ms'])} {ms(part['p95_ms'])} "
            f"{ms(part['p99_ms'])}")


SCENARIOS = ("backend_release", "nginx_change", "frontend_release", "reboot_edge", "reboot_backend", "kill",
             "qdrant_kill", "qdrant_upgrade", "zone_outage", "postgres_failover")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default=",".join(SCENARIOS),
                        help=f"comma-separated subset of {','.join(SCENARIOS)} (default: all, in this order)")
    parser.add_argument("--json", type=Path, help="also write every figure, failures included, to this file")
    parser.add_argument("--token", action="append", metavar="TOKEN",
                        help="an admin's API token (repeat: the load workers take one each in turn); default: the "
                             "environment's QUERYGPT_TOKEN, else admins made on the lab with the backend's CLI")
    args = parser.parse_args()
    tokens = args.token or ([os.environ["QUERYGPT_TOKEN"]] if os.environ.get("QUERYGPT_TOKEN") else [])
    chosen = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(chosen) - set(SCENARIOS)
    if unknown:
        parser.error(f"--only: unknown {sorted(unknown)}; choose from {','.join(SCENARIOS)}")

    import tempfile

    lab = load_lab()
    rollouts: list[Rollout] = []
    recoveries: dict[str, float] = {}
    outages: list[Outage] = []
    failovers: list[Failover] = []

    def kill_qdrant() -> None:
        back, rollout = qdrant_kill(lab, site)
        recoveries["qdrant (under load)"] = back
        rollouts.append(rollout)

    with tempfile.TemporaryDirectory(prefix="rollouts-") as tmp:
        site = open_site(lab, Path(tmp), tokens)
        steps: dict[str, Callable[[], Any]] = {
            "backend_release": lambda: rollouts.append(backend_release(lab, site)),
            "nginx_change": lambda: rollouts.append(nginx_change(lab, site)),
            "frontend_release": lambda: rollouts.append(frontend_release(lab, site, Path(tmp))),
            "reboot_edge": lambda: rollouts.append(rolling_reboot(lab, site, "edge")),
            "reboot_backend": lambda: rollouts.append(rolling_reboot(lab, site, "backend")),
            "kill": lambda: recoveries.update({unit: kill_recovery(lab, unit) for unit in KILLS}),
            "qdrant_kill": kill_qdrant,
            "qdrant_upgrade": lambda: rollouts.append(qdrant_upgrade(lab, site, Path(tmp))),
            "zone_outage": lambda: outages.append(zone_outage(lab, site)),
            "postgres_failover": lambda: failovers.append(postgres_failover(lab, site, Path(tmp))),
        }
        for name in chosen:
            print(f"... {name}", file=sys.stderr, flush=True)
            try:
                steps[name]()
            except PlaybookFailed as err:
                print(err, file=sys.stderr)
                return 1

    print(f"Under load through the lab load balancer ({site.url})")
    if rollouts:
        print(f"\nRollouts, target: 0 failed\n{'rollout':<18} {'seconds':>7} {'requests':>8} {'failed':>6} "
              f"{'stale':>5}  {'latency of':<10} {'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7}")
    for rollout in rollouts:
        print(_row(rollout))
    for rollout in rollouts:
        if rollout.result.failures:
            print(f"\n{rollout.name}: {rollout.result.describe_failures()}")
    if recoveries:
        print("\nkill -9, seconds until the service answers again (target: 10):")
        for unit, seconds in recoveries.items():
            print(f"  {unit:<18} {seconds:>5.1f}")
    for o in outages:
        stats = o.result.stats("/api/query")
        print(f"\nzone {o.zone} down ({len(o.hosts)} containers killed, targets: answering within 30 s, no point lost):\n"
              f"  requests {o.result.requests}, failed {len(o.result.failures)} {o.result.failures_by_kind()}; "
              f"questions {stats['requests']}, failed {stats['failures']}; answering again after "
              f"{o.answering_after:.1f} s; points {o.points[0]} before, {o.points[1]} during; "
              f"cluster whole again {o.healed_after:.1f} s after the zone returned")
    for f in failovers:
        stats = f.result.stats("/api/query")
        print(f"\npostgres failover, primary {f.killed} killed, {f.promoted} promoted (target: no acknowledged "
              f"upload lost):\n  runbook done {f.runbook_seconds:.1f} s after the kill; uploads {len(f.uploads)}, "
              f"failed {len(f.failed_uploads)}, writes stopped {f.writes_stopped:.1f} s; acknowledged uploads lost "
              f"{len(f.lost)} {f.lost}\n  questions {stats['requests']}, failed {stats['failures']}, p50 "
              f"{stats['p50_ms'] or 0:.0f} ms, p99 {stats['p99_ms'] or 0:.0f} ms; old primary fenced on its return: "
              f"{'yes' if f.fenced else 'NO'}; rebuilt as a standby in {f.rebuild_seconds:.1f} s ({f.replication})")
        for at, status, name, reason in f.failed_uploads:
            print(f"  upload {name} at {at:+.1f} s: {status} {reason[:120]}")
    if args.json:
        args.json.write_text(json.dumps({
            "rollouts": {r.name: {"seconds": round(r.seconds, 1), **r.result.summary()} for r in rollouts},
            "kill_recovery_seconds": {u: round(s, 1) for u, s in recoveries.items()},
            "zone_outages": [{"zone": o.zone, "answering_after": round(o.answering_after, 1), "points": o.points,
                              "healed_after": round(o.healed_after, 1), **o.result.summary()} for o in outages],
            "postgres_failovers": [{"runbook_seconds": round(f.runbook_seconds, 1), "uploads": len(f.uploads),
                                    "failed_uploads": len(f.failed_uploads), "lost": f.lost,
                                    "writes_stopped": round(f.writes_stopped, 1), "fenced": f.fenced,
                                    "rebuild_seconds": round(f.rebuild_seconds, 1), **f.result.summary()}
                                   for f in failovers],
        }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
