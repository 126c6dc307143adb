"""Rollouts under steady load, through the lab's load balancer (HAProxy on the `lb` host, the
NLB's stand-in): a rolling backend release, an nginx configuration change and a rolling reboot
of the edges and of the backends must each fail no request (docs/architecture.md, "Rollouts
and drain"). The load is benchmarks/load.py's: kept-alive clients and clients on new
connections, health checks and questions; the Ollama stand-in takes a small GPU model's time,
so questions are in flight when a host leaves its pool. A request that meets a kept-alive
connection closing under it is sent again, as browsers do, and counted apart (load.py). Every
service killed with SIGKILL answers again within 10 s, and a rolling reboot of a tier of one
host is refused before anything changes.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import re
import subprocess
import tarfile
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))
from load import LoadRun, tls_context  # noqa: E402
from labview import REPO, acme_root_pem, ansible_env  # noqa: E402
from test_lab_edge import SCHEMA, write_pdf  # noqa: E402

# Four kept-alive clients, a quarter of their requests questions, half a second between two:
# about 1.6 questions a second, below the edges' per-client query rate (nginx_query_rate,
# 2 r/s) even while one edge takes all of them (the load balancer hides every client behind
# its own address), and light enough that the lab's two cores still run the rollout. Two of
# the clients open a new connection per request, as an NLB's many clients do: they meet an
# edge the load balancer still sends to after it went away (a reboot without a drain fails
# some of them).
LOAD = {"concurrency": 4, "query_share": 0.25, "timeout": 60.0, "pause": 0.5, "new_connections": 2}


class Site:
    """The site as clients reach it: the load balancer's public address; each edge's certificate
    carries its own name (the lab has no shared one), so either edge's name is accepted."""

    def __init__(self, address: str, ca_pem: str, names: list[str], collection: str) -> None:
        self.url, self.ca_pem, self.names, self.collection = f"https://{address}", ca_pem, names, collection

    def load(self, **kw) -> LoadRun:
        return LoadRun(self.url, ca_data=self.ca_pem, server_name=self.names[0], accept_names=self.names,
                       collection=self.collection, **{**LOAD, **kw})

    def request(self, method: str, path: str, **kw) -> httpx.Response:
        """One request on a new connection (so the load balancer picks an edge for it)."""
        context = tls_context(ca_data=self.ca_pem, accept_names=self.names)
        with httpx.Client(verify=context, headers={"Host": self.names[0]}, trust_env=False) as client:
            return client.request(method, self.url + path, extensions={"sni_hostname": self.names[0]}, **kw)


@pytest.fixture(scope="module")
def site(lab, tmp_path_factory) -> Site:
    lb = lab.groups["lb"][0]
    names = sorted(lab.render("nginx_server_name", h) for h in lab.groups["edge"])
    site = Site(lab.hostvars[lb]["ec2_public_ip_address"], acme_root_pem(lab), names, f"rollout_{uuid.uuid4().hex[:8]}")
    pdf = write_pdf(tmp_path_factory.mktemp("pdf") / "rollout-schema.pdf", ["Sales database schema", *SCHEMA])
    resp = site.request("POST", "/api/upload", files={"pdf_file": (pdf.name, pdf.read_bytes(), "application/pdf")},
                        data={"collection_name": site.collection}, timeout=120)
    assert resp.status_code == 200, resp.text
    return site


def playbook(path: str, *args: str) -> subprocess.CompletedProcess:
    done = subprocess.run([str(REPO / ".venv/bin/ansible-playbook"), path, "-i", "inventories/lab", *args],
                          cwd=REPO, env=ansible_env(), capture_output=True, text=True, timeout=1200, check=False)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    return done


def assert_no_failure(run: LoadRun) -> None:
    result = run.result
    assert result is not None
    assert not result.failures, result.describe_failures()
    queries = result.stats("/api/query")
    assert queries["requests"] >= 10, result.report()  # questions really were in flight


def haproxy(lab, command: str) -> str:
    done = lab.exec(lab.groups["lb"][0], f"echo '{command}' | socat stdio /run/haproxy/admin.sock")
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_load_balancer_spreads_new_connections_over_both_edges(lab, site):
    def servers() -> dict[str, tuple[int, str]]:
        """HTTPS listener's servers: name -> (sessions so far, status), from HAProxy's stats."""
        rows = [line.split(",") for line in haproxy(lab, "show stat").splitlines() if line.startswith("edge_https,")]
        return {row[1]: (int(row[7]), row[17]) for row in rows if row[1] not in ("FRONTEND", "BACKEND")}

    before = servers()
    assert set(before) == set(lab.groups["edge"]), before
    assert {status for _, status in before.values()} == {"UP"}, before
    for _ in range(8):  # a new connection each: round robin
        assert site.request("GET", "/api/health").status_code == 200
    after = servers()
    assert all(after[edge][0] - before[edge][0] >= 2 for edge in before), (before, after)


def other(lab, host: str, command: str, values: tuple[int, int]) -> int:
    """Whichever of two values `command` (run on host) does not print: each run changes it."""
    current = lab.exec(host, command).stdout.strip()
    return values[1] if current == str(values[0]) else values[0]


def test_a_backend_release_rolls_out_under_load_without_a_failed_request(lab, site):
    """Each backend restarts (its environment file changes): it leaves the edges' upstreams,
    finishes what is in flight, restarts and rejoins once ready. The new value stays until the
    next converge (the lab tests run last in CI; another run of this test picks the other)."""
    timeout = other(lab, lab.groups["backend"][0],
                    "sed -n 's/^QUERYGPT_REQUEST_TIMEOUT=//p' /etc/querygpt/backend.env", (118, 119))
    with site.load() as run:
        done = playbook("playbooks/app.yml", "-e", f"backend_request_timeout={timeout}")
    assert_no_failure(run)
    # one batch per backend (the canary, then the other): each drained, restarted, put back
    assert done.stdout.count("RUNNING HANDLER [backend : Restart querygpt-backend]") == 2
    assert done.stdout.count("RUNNING HANDLER [backend : Out - wait until no request from an edge is in flight]") == 2
    assert done.stdout.count("backend : Mark this backend down, or up again, on every edge]") == 4


def test_an_nginx_configuration_change_under_load_fails_no_request(lab, site):
    """A reload: nginx answers the requests in flight on its old workers; nothing is drained."""
    fail_timeout = other(lab, lab.groups["edge"][0],
                         r"grep -o -m1 'fail_timeout=[0-9]*' /etc/nginx/nginx.conf | cut -d= -f2", (11, 12))
    with site.load() as run:
        done = playbook("playbooks/edge.yml", "-e", f"nginx_backend_fail_timeout={fail_timeout}")
    assert_no_failure(run)
    assert done.stdout.count("RUNNING HANDLER [nginx : Reload the nginx service]") == 2
    assert "RUNNING HANDLER [nginx : Take the edge out of the load balancer]" not in done.stdout


@pytest.mark.parametrize(("group", "unit", "probe"), [
    ("edge", "nginx", "curl -sfk -o /dev/null https://127.0.0.1/"),
    ("backend", "querygpt-backend", "curl -sf -o /dev/null http://{address}:8000/health"),
    ("qdrant", "qdrant", "curl -sf -o /dev/null http://{address}:6333/healthz"),
    ("ollama", "ollama", "curl -sf -o /dev/null http://127.0.0.1:11434/api/version"),
])
def test_a_service_killed_with_sigkill_answers_again_within_10_s(lab, group, unit, probe):
    """kill -9 of every process of the service: systemd starts it again (Restart=on-failure)."""
    host = lab.groups[group][0]
    probe = probe.format(address=lab.address(host))
    assert lab.exec(host, probe).returncode == 0, f"{unit} does not answer before the kill"
    assert lab.exec(host, f"systemctl kill --signal=KILL {unit}").returncode == 0
    killed = time.monotonic()
    time.sleep(0.5)  # the processes are gone before the first probe
    while lab.exec(host, probe).returncode != 0:
        assert time.monotonic() - killed < 30, f"{unit} did not answer again within 30 s"
        time.sleep(0.2)
    back = time.monotonic() - killed
    assert back <= 10, f"{unit} answered again only after {back:.1f} s"


@pytest.mark.parametrize("tier", ["edge", "backend"])
def test_a_rolling_reboot_under_load_fails_no_request(lab, site, tier):
    boots = {h: lab.exec(h, "cut -d ' ' -f 22 /proc/1/stat").stdout.strip() for h in lab.groups[tier]}
    with site.load() as run:
        playbook("playbooks/runbooks/rolling_reboot.yml", "-e", f"reboot_hosts={tier}")
    assert_no_failure(run)
    for host, before in boots.items():
        assert lab.exec(host, "cut -d ' ' -f 22 /proc/1/stat").stdout.strip() != before, f"{host} did not reboot"


def test_a_rolling_reboot_of_a_one_host_tier_is_refused_before_any_change(lab):
    host = lab.groups["monitoring"][0]
    assert len(lab.groups["monitoring"]) == 1
    before = lab.exec(host, "cut -d ' ' -f 22 /proc/1/stat").stdout.strip()
    done = subprocess.run([str(REPO / ".venv/bin/ansible-playbook"), "playbooks/runbooks/rolling_reboot.yml",
                           "-i", "inventories/lab", "-e", "reboot_hosts=monitoring"],
                          cwd=REPO, env=ansible_env(), capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode != 0, done.stdout[-3000:]
    assert "reboot_allow_outage:" in done.stdout and "has no peer to serve while it" in done.stdout, done.stdout[-3000:]
    assert "TASK [Reboot]" not in done.stdout
    assert lab.exec(host, "cut -d ' ' -f 22 /proc/1/stat").stdout.strip() == before


FRONTEND = "/opt/querygpt/frontend"


def renamed_release(lab, edge: str, where: Path) -> tuple[Path, dict[str, str]]:
    """The served frontend with every asset renamed (a new build's hashed names), as a dist
    archive; and which old asset path became which new one."""
    served = lab.exec(edge, f"tar -C {FRONTEND}/current -czf - . | base64 -w0", timeout=60).stdout
    renames: dict[str, str] = {}
    out = io.BytesIO()
    # gzip without a timestamp: the same served release gives the same archive, so the same
    # release name, and a second run of the test deploys no new release
    with tarfile.open(fileobj=io.BytesIO(base64.b64decode(served))) as src, \
            gzip.GzipFile(fileobj=out, mode="wb", mtime=0) as gz, tarfile.open(fileobj=gz, mode="w") as dst:
        members = [(m, src.extractfile(m).read() if m.isfile() else None) for m in src.getmembers()]
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


def test_a_frontend_release_under_load_fails_no_page_and_keeps_open_pages_loading(lab, site, tmp_path):
    """A release reaches every edge at once and each edge's `current` moves: page loads during
    the release all succeed, though a page and its assets may come from different edges (two of
    the clients open a connection per request), and a browser that fetched the old index.html
    before still gets the old assets it names (from the pool of kept releases' assets)."""
    edges = lab.groups["edge"]
    before = {e: lab.exec(e, f"readlink {FRONTEND}/current").stdout.strip() for e in edges}
    assert len(set(before.values())) == 1, f"the edges serve different releases: {before}"
    old_index = site.request("GET", "/").text
    old_assets = re.findall(r'(?:src|href)="(/assets/[^"]+)"', old_index)
    assert old_assets, old_index
    archive, renames = renamed_release(lab, edges[0], tmp_path)
    assert set(old_assets) <= set(renames)
    checksum = "sha256:" + hashlib.sha256(archive.read_bytes()).hexdigest()
    try:
        with site.load(query_share=0.0, page_share=0.5) as run:
            playbook("playbooks/edge.yml", "--tags", "frontend", "-e", "frontend_version=rollout-test",
                     "-e", f"frontend_dist_archive={archive}", "-e", f"frontend_dist_archive_checksum={checksum}")
        assert run.result is not None and not run.result.failures, run.result.describe_failures()
        assert run.result.stats("/")["ok"] >= 10, run.result.report()
        new_index = site.request("GET", "/").text
        assert new_index != old_index and renames[old_assets[0]] in new_index
        # the page opened before the release: its assets still load, on either edge
        for path in old_assets:
            for e in edges:
                assert lab.exec(e, f"test -f {FRONTEND}/pool{path}").returncode == 0, (e, path)
            assert site.request("GET", path).status_code == 200, path
    finally:  # back to the release served before (kept: it is the one the release switched away from)
        playbook("playbooks/edge.yml", "--tags", "frontend", "-e",
                 f"frontend_rollback_to={before[edges[0]].rsplit('/', 1)[-1]}")
