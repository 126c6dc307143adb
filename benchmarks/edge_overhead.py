#!/usr/bin/env python3
"""What the edge costs: direct-to-backend against through-nginx-TLS, on the running lab.

Both clients run on the same edge host (benchmarks/httpprobe.py, copied there), the only
place besides nginx that may reach the backends' port (docs/architecture.md, firewall
matrix): direct requests go to every backend's GET /health, edge requests to that edge's own
HTTPS GET /api/health, verified against the lab ACME root, through its kept-alive upstream
connections to the same backends. Rounds are interleaved (direct, edge, edge, direct, ...)
at 1 connection and at 8, so drift on a shared machine hits both sides alike.

Prints throughput, p50 and p99 for both, the ratios, and the targets: the edge keeps at
least 85% of direct throughput and adds at most 15% to p50. A measurement, not a test: it
exits 0 whatever the figures (1 only when requests fail).

    .venv/bin/python benchmarks/edge_overhead.py [--rounds 4] [--seconds 3] [--without-waf]

--without-waf measures the same with that edge's ModSecurity switched off (`modsecurity off`
in its nginx.conf, reloaded), to split the edge's cost into the WAF's and the rest; the file is
put back and nginx reloaded afterwards, also when the run fails. Lab only: never on a real edge.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "lab"))
sys.path.insert(0, str(ROOT / "benchmarks"))
from httpprobe import percentile  # noqa: E402
from labview import acme_root_pem, load_lab  # noqa: E402

THROUGHPUT_TARGET = 0.85
P50_TARGET = 1.15


def summarise(runs: list[dict]) -> dict:
    latencies = [x for r in runs for x in r["latencies_ms"]]
    seconds = sum(r["seconds"] for r in runs)
    return {"rps": len(latencies) / seconds, "p50": statistics.median(latencies),
            "p99": percentile(latencies, 99), "requests": len(latencies),
            "failures": sum(r["failures"] for r in runs)}


NGINX_CONF = "/etc/nginx/nginx.conf"


@contextlib.contextmanager
def waf_switched_off(lab, edge: str) -> Iterator[None]:
    """The edge's nginx with `modsecurity off` while the block runs, then its own file again."""
    def sh(script: str) -> None:
        done = lab.exec(edge, script, timeout=60)
        if done.returncode != 0:
            raise SystemExit(f"on {lab.name(edge)}: {script}: {done.stdout}{done.stderr}")

    sh(f"grep -q '^ *modsecurity on;' {NGINX_CONF} && cp -p {NGINX_CONF} {NGINX_CONF}.edge-overhead"
       f" && sed -i 's/^\\( *\\)modsecurity on;/\\1modsecurity off;/' {NGINX_CONF} && nginx -t -q && systemctl reload nginx")
    try:
        time.sleep(1)  # the reloaded workers take over
        yield
    finally:
        sh(f"mv {NGINX_CONF}.edge-overhead {NGINX_CONF} && nginx -t -q && systemctl reload nginx"
           f" && grep -q '^ *modsecurity on;' {NGINX_CONF}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=3.0, help="per round, per side")
    parser.add_argument("--connections", default="1,8")
    parser.add_argument("--without-waf", action="store_true", help="with the edge's ModSecurity off (restored after)")
    args = parser.parse_args()
    started = time.monotonic()

    lab = load_lab()
    edge = sorted(lab.groups["edge"])[0]
    server_name = lab.render("nginx_server_name", edge)
    container = lab.name(edge)
    for name, content in (("httpprobe.py", (ROOT / "benchmarks" / "httpprobe.py").read_text()),
                          ("lab-acme-root.pem", acme_root_pem(lab))):
        subprocess.run(["docker", "exec", "-i", container, "tee", f"/var/tmp/{name}"], input=content, text=True,
                       stdout=subprocess.DEVNULL, check=True)
    # The backends serve TLS only (docs/architecture.md, "Internal TLS"), verified as nginx does.
    direct = [f"https://{lab.address(b)}:8000/health" for b in sorted(lab.groups["backend"])]
    sides = {  # URLs, and the client's TLS options
        "direct": (direct, "--ca /etc/journal-tls/ca.pem"),
        "edge": ([f"https://{lab.address(edge)}/api/health"],
                 f"--ca /var/tmp/lab-acme-root.pem --server-name {server_name}"),
    }

    def run(side: str, conns: int) -> dict:
        urls, tls = sides[side]
        command = (f"python3 /var/tmp/httpprobe.py load {' '.join(urls)} {tls} "
                   f"--connections {conns} --seconds {args.seconds}")
        done = lab.exec(edge, command, timeout=int(args.seconds) + 60)
        if done.returncode != 0:
            raise SystemExit(f"{side} at {conns}: {done.stderr}")
        return json.loads(done.stdout)

    levels = [int(c) for c in args.connections.split(",")]
    results: dict[tuple[str, int], list[dict]] = {(s, c): [] for s in sides for c in levels}
    with waf_switched_off(lab, edge) if args.without_waf else contextlib.nullcontext():
        for round_no in range(args.rounds):
            order = ["direct", "edge"] if round_no % 2 == 0 else ["edge", "direct"]
            for conns in levels:
                for side in order:
                    results[(side, conns)].append(run(side, conns))

    print(f"edge overhead on {container} ({server_name}): {args.rounds} interleaved rounds of "
          f"{args.seconds:g} s per side; direct = {len(direct)} backends' /health over TLS, edge = /api/health over TLS"
          f"{'; the edge WITHOUT its WAF (ModSecurity off for this run)' if args.without_waf else ''}")
    print(f"{'conns':>5} {'side':>6} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'requests':>8} {'failed':>6}")
    failed = 0
    verdicts = []
    for conns in levels:
        summary = {side: summarise(results[(side, conns)]) for side in sides}
        for side, s in summary.items():
            failed += s["failures"]
            print(f"{conns:>5} {side:>6} {s['rps']:>8.0f} {s['p50']:>7.2f} {s['p99']:>7.2f} "
                  f"{s['requests']:>8} {s['failures']:>6}")
        keep = summary["edge"]["rps"] / summary["direct"]["rps"]
        added = summary["edge"]["p50"] / summary["direct"]["p50"]
        verdicts.append(
            f"{conns} conn: edge keeps {keep:.0%} of direct throughput (target >= {THROUGHPUT_TARGET:.0%}: "
            f"{'met' if keep >= THROUGHPUT_TARGET else 'NOT met'}), p50 x{added:.2f} "
            f"(target <= x{P50_TARGET:.2f}: {'met' if added <= P50_TARGET else 'NOT met'})")
    print("\n".join(verdicts))
    print(f"took {time.monotonic() - started:.0f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
