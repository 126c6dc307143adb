#!/usr/bin/env python3
"""Scale, by simulation: how the inventory, preflight and the wiring grow with the fleet.

Nothing here connects to a host. An EC2 emulator (moto, on a free loopback port, never the
lab's 4567) is seeded the way Terraform would build prod, through the code path the lab and
the first-deploy rehearsal use (lab/labctl/terraform.py reads the HCL with prod's tfvars;
lab/labctl/ec2.py creates the VPC, subnets, instances, the bastion's Elastic IP and the data
volumes; tests/project/test_first_deploy.py adds the Secrets Manager entries, exports
Terraform's outputs into a copy of inventories/prod, writes the vault with bin/new-env and
fills in every input as docs/first-deploy.md says). Only the counts are scaled.

How a size N is spread (`tier_counts`): Terraform has one bastion and one monitoring host
(no count); the other N - 2 instances go 15 % edge, 40 % backend, 15 % qdrant and 30 % ollama
(largest remainder, at least one each): the request path (edges, backends) and the GPU
inference tier grow, Qdrant grows least. Every counted tier is spread over the 3 zones by
Terraform's own `count.index % var.az_count` (az_count = 3, prod's value).

At each size it times:
  1. `ansible-inventory --graph` through the amazon.aws.aws_ec2 plugin (AWS_URL points the
     unmodified prod inventory at the emulator, as tests/terraform does);
  2. preflight: playbooks/preflight.yml, tag preflight_variables, over every host (no
     connection), which must pass;
  3. rendering, for every host, of the firewall openings (the firewall role's template), the
     SSH sources, the edges' nginx upstreams and Prometheus's configuration
     (benchmarks/playbooks/render_wiring.yml); the results are checked against the plan.
It prints seconds per step and size, wall-clock and CPU (the CPU seconds of Ansible and its
forks barely move when other jobs share the machine), and the growth exponent between
consecutive sizes, log(t2/t1) / log(n2/n1): 1 is linear, 2 quadratic. An exponent above 1.5 is flagged.

    .venv/bin/python benchmarks/scale_inventory.py                 # 100, 250, 500 instances
    .venv/bin/python benchmarks/scale_inventory.py --sizes 20,40   # a quick look
"""

from __future__ import annotations

import argparse
import json
import math
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any, Iterator

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = REPO / ".venv" / "bin"
RENDER_PLAYBOOK = REPO / "benchmarks" / "playbooks" / "render_wiring.yml"

# Terraform's instances without a count (terraform/bastion.tf, monitoring.tf).
SINGLE_TIERS = ("bastion", "monitoring")
# Share of the remaining instances per counted tier (the <tier>_count variables).
SHARES = {"edge": 0.15, "backend": 0.40, "qdrant": 0.15, "ollama": 0.30}
AZ_COUNT = 3
STEPS = ("graph", "preflight", "render")
FLAG_EXPONENT = 1.5


# --- arithmetic (tests/project/test_scale_benchmark.py) --------------------------------------


def tier_counts(total: int) -> dict[str, int]:
    """The Terraform <tier>_count values for a fleet of `total` instances (see the docstring)."""
    counted = total - len(SINGLE_TIERS)
    if counted < len(SHARES):
        raise ValueError(f"a fleet of {total} cannot hold one instance of every tier (at least {len(SHARES) + 2})")
    exact = {tier: share * counted for tier, share in SHARES.items()}
    counts = {tier: max(1, math.floor(value)) for tier, value in exact.items()}
    by_remainder = sorted(SHARES, key=lambda t: (-(exact[t] - math.floor(exact[t])), list(SHARES).index(t)))
    for tier in by_remainder[:counted - sum(counts.values())]:
        counts[tier] += 1
    while sum(counts.values()) > counted:  # the max(1, ...) floors overshot a tiny fleet
        counts[max(counts, key=counts.get)] -= 1
    return counts


def exponent(n1: float, t1: float, n2: float, t2: float) -> float:
    """Growth exponent k of t ~ n**k between two measurements: 1 linear, 2 quadratic."""
    if n1 <= 0 or n2 <= 0 or n1 == n2:
        raise ValueError(f"sizes must be positive and different, got {n1} and {n2}")
    if t1 <= 0 or t2 <= 0:
        raise ValueError(f"times must be positive, got {t1} and {t2}")
    return math.log(t2 / t1) / math.log(n2 / n1)


def growth(sizes: list[int], seconds: dict[int, dict[str, float]]) -> dict[str, list[float]]:
    """{step: the exponent between each pair of consecutive sizes}."""
    return {step: [exponent(a, seconds[a][step], b, seconds[b][step]) for a, b in zip(sizes, sizes[1:])]
            for step in STEPS}


def table(sizes: list[int], seconds: dict[int, dict[str, float]]) -> str:
    """Seconds per step and size, then the growth exponents; `!` marks an exponent > 1.5."""
    lines = [f"{'instances':>9}  " + "  ".join(f"{step:>10}" for step in STEPS) + f"  {'total':>10}"]
    for size in sizes:
        row = seconds[size]
        lines.append(f"{size:>9}  " + "  ".join(f"{row[step]:>9.1f}s" for step in STEPS)
                     + f"  {sum(row[s] for s in STEPS):>9.1f}s")
    exponents = growth(sizes, seconds)
    for index, (a, b) in enumerate(zip(sizes, sizes[1:])):
        cells = []
        for step in STEPS:
            k = exponents[step][index]
            cells.append(f"{k:>9.2f}{'!' if k > FLAG_EXPONENT else ' '}")
        lines.append(f"{f'k {a}->{b}':>9}  " + "  ".join(cells))
    flagged = [f"{step} ({a}->{b}: {exponents[step][i]:.2f})" for step in STEPS
               for i, (a, b) in enumerate(zip(sizes, sizes[1:])) if exponents[step][i] > FLAG_EXPONENT]
    lines.append("k = log(t2/t1) / log(n2/n1): 1 linear, 2 quadratic. "
                 + (f"GROWS FASTER THAN n^{FLAG_EXPONENT}: {', '.join(flagged)}" if flagged
                    else f"nothing grows faster than n^{FLAG_EXPONENT}."))
    return "\n".join(lines)


# --- the emulator ----------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _moto(log: Path) -> Iterator[str]:
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    with log.open("w") as handle:
        proc = subprocess.Popen([str(VENV_BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                                stdout=handle, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{url}/moto-api/", timeout=1).read()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"moto_server did not start on {url}; see {log}") from None
                time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def _reset(url: str) -> None:
    request = urllib.request.Request(f"{url}/moto-api/reset", method="POST", data=b"")
    urllib.request.urlopen(request, timeout=30).read()


# --- one size --------------------------------------------------------------------------------


def _rehearsal_module() -> Any:
    """The first-deploy rehearsal's helpers (seeding, outputs, vault, the filled-in inputs)."""
    sys.path.insert(0, str(REPO / "tests" / "project"))
    import test_first_deploy  # noqa: PLC0415 - only with .venv, only when measuring

    return test_first_deploy


def _cpu() -> float:
    """CPU seconds of every finished child process and its descendants (Ansible's forks)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _timed(label: str, run: Any) -> tuple[float, float, subprocess.CompletedProcess]:
    """Wall-clock and CPU seconds of a command. The CPU time hardly depends on what else the
    machine runs (shared CI workers), so its growth is the one to trust when they differ."""
    start, cpu = time.perf_counter(), _cpu()
    done = run()
    elapsed, used = time.perf_counter() - start, _cpu() - cpu
    if done.returncode != 0:
        raise SystemExit(f"{label} failed ({done.returncode}):\n{done.stdout[-4000:]}\n{done.stderr[-3000:]}")
    return elapsed, used, done


def _check_render(output: str, hosts: list[Any]) -> None:
    """The rendered wiring holds every peer: a scaled fleet must not lose or invent any."""
    start = 0 if output.startswith("{") else output.index("\n{") + 1
    document, _ = json.JSONDecoder().raw_decode(output, start)
    tasks = {t["task"]["name"]: t["hosts"] for t in document["plays"][0]["tasks"]}
    address = {h.address: h for h in hosts}
    by_role: dict[str, set[str]] = {}
    for host in hosts:
        by_role.setdefault(host.role, set()).add(host.address)

    def sources(rendered: str) -> set[str]:
        return {s.strip() for block in re.findall(r"saddr \{ ([^}]*) \}", rendered) for s in block.split(",")}

    expected_openings = {"backend": ("backend", by_role["edge"] | by_role["monitoring"]),
                         "qdrant": ("qdrant", by_role["backend"] | by_role["monitoring"]),
                         "ollama": ("ollama", by_role["backend"] | by_role["monitoring"]),
                         "monitoring": ("journal_remote", set(address))}
    openings = tasks["Render each firewall opening with the firewall role's template"]
    assert set(openings) == set(address), "not every host rendered its openings"
    for name, result in openings.items():
        rendered = {r["item"]["name"]: r["msg"] for r in result["results"]}
        assert sources(rendered["node_exporter"]) == by_role["monitoring"], name
        role = address[name].role
        if role in expected_openings:
            opening, peers = expected_openings[role]
            assert sources(rendered[opening]) == peers, f"{name}: opening {opening}"
    upstreams = tasks["Compute the nginx upstreams of the edges"]
    backends = sorted(f"{a}:8000" for a in by_role["backend"])
    edges = [n for n, r in upstreams.items() if not r.get("skipped")]
    assert sorted(edges) == sorted(by_role["edge"])
    assert all(sorted(upstreams[e]["msg"]) == backends for e in edges)
    monitoring = next(iter(by_role["monitoring"]))
    config = tasks["Render Prometheus's configuration with the role's template"][monitoring]["msg"]
    for peer in address:
        assert f"{peer}:9100" in config, f"no node target for {peer}"


def measure(size: int, moto_url: str, work: Path) -> tuple[dict[str, float], dict[str, float]]:
    """(wall-clock seconds, CPU seconds) of each step for a fleet of `size` instances."""
    rehearsal_module = _rehearsal_module()
    _reset(moto_url)
    counts = tier_counts(size)
    start = time.perf_counter()
    prod = rehearsal_module.seed_prod(moto_url, az_count=AZ_COUNT,
                                      **{f"{tier}_count": n for tier, n in counts.items()})
    seeded = time.perf_counter() - start
    assert len(prod["hosts"]) == size, f"planned {len(prod['hosts'])} instances, not {size}"
    tmp = work / str(size)
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    rehearsal = rehearsal_module.Rehearsal(tmp, moto_url, prod)
    rehearsal.timeout = None  # preflight over 500 hosts takes longer than a test may
    rehearsal.fill_in_as_the_docs_say()
    print(f"{size} instances ({', '.join(f'{t} {n}' for t, n in counts.items())}, bastion 1, monitoring 1): "
          f"seeded in {seeded:.1f}s", flush=True)

    seconds: dict[str, float] = {}
    cpu: dict[str, float] = {}
    seconds["graph"], cpu["graph"], done = _timed("ansible-inventory --graph", lambda: rehearsal.run(
        VENV_BIN / "ansible-inventory", "-i", rehearsal.inventory, "--graph"))
    listed = set(re.findall(r"\|--(\d+\.\d+\.\d+\.\d+)", done.stdout))
    assert listed == {h.address for h in prod["hosts"]}, "the graph does not show exactly the seeded hosts"
    seconds["preflight"], cpu["preflight"], _ = _timed("preflight", rehearsal.preflight)
    rehearsal.env.update({"ANSIBLE_LOAD_CALLBACK_PLUGINS": "True", "ANSIBLE_STDOUT_CALLBACK": "ansible.builtin.json"})
    seconds["render"], cpu["render"], done = _timed("rendering", lambda: rehearsal.run(
        VENV_BIN / "ansible-playbook", RENDER_PLAYBOOK, "-i", rehearsal.inventory,
        "--vault-id", f"prod@{rehearsal.password}"))
    _check_render(done.stdout, prod["hosts"])
    print("  " + ", ".join(f"{step} {seconds[step]:.1f}s (cpu {cpu[step]:.1f}s)" for step in STEPS), flush=True)
    return seconds, cpu


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100,250,500",
                        help="comma-separated fleet sizes, ascending (default: 100,250,500)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (inventories, logs)")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    if len(sizes) < 2 or sizes != sorted(set(sizes)):
        parser.error(f"--sizes needs at least two different sizes, ascending: {args.sizes!r}")
    if not (VENV_BIN / "ansible-playbook").exists():
        parser.error(f"{VENV_BIN} has no Ansible: create .venv with `bin/lab bootstrap`")
    for size in sizes:
        try:
            tier_counts(size)  # fail before the emulator starts
        except ValueError as err:
            parser.error(f"--sizes: {err}")

    # A stopped run (kill, timeout) still stops its emulator and prints the sizes it finished.
    signal.signal(signal.SIGTERM, lambda signum, _frame: sys.exit(128 + signum))
    overall = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="scale-inventory-"))
    seconds: dict[int, dict[str, float]] = {}
    cpu: dict[int, dict[str, float]] = {}
    try:
        emulator = _moto(work / "moto.log")
        url = next(emulator)
        try:
            for size in sizes:
                seconds[size], cpu[size] = measure(size, url, work)
        finally:
            emulator.close()
    finally:
        if args.keep:
            print(f"work directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
        report(list(seconds), seconds, cpu)
        print(f"total time (seeding, setup and checks included): {time.perf_counter() - overall:.1f}s")
    return 0


def report(sizes: list[int], seconds: dict[int, dict[str, float]], cpu: dict[int, dict[str, float]]) -> None:
    """The tables of the sizes measured so far (also when a larger size fails or is interrupted)."""
    if len(sizes) < 2:
        print(f"\nmeasured {sizes or 'no size'}: too few sizes for a growth exponent")
        return
    print("\nwall-clock seconds")
    print(table(sizes, seconds))
    print("\nCPU seconds (Ansible and its forks; steady when the machine is shared)")
    print(table(sizes, cpu))


if __name__ == "__main__":
    sys.exit(main())
