#!/usr/bin/env python3
"""Backup and restore throughput of querygpt-backup, split into Qdrant's snapshot work and the
program's own part, next to a raw S3 upload and download of the same bytes in the same run.
Prints figures; it is a measurement, not a test.

By default everything runs on this machine: the Qdrant lab stand-in (a test fixture, NOT
Qdrant: its snapshot is a JSON tar, and its speed is not Qdrant's) from source and moto's S3
server in-process. Only the program's part is compared with raw S3: the time spent in
Qdrant's snapshot API (create, count, delete, recover, readiness) is timed separately, by
wrapping the program's Qdrant client, and shown on its own line. The program's part is the
rest: streaming the snapshot from Qdrant to S3 while hashing it, the upload's verification,
the retention listing, the restore's download and its checksum.

Each round runs the program and the raw transfers back to back; the medians of --repeat
rounds are reported, because this machine's other work makes single runs noisy.

--rto-gb then builds a collection of about that many GB (large payloads, in a few batches),
backs it up and restores it once, and prints the restore time (RTO) with its split.

Point it at a real Qdrant and bucket with --qdrant-url/--api-key/--snapshots-dir and
--s3-endpoint/--bucket (credentials from the usual AWS environment) for real figures.
--program measures another copy of the program (e.g. an older one, for a before/after).

    .venv/bin/python benchmarks/backup_throughput.py [--points 50000] [--dim 128] [--repeat 3] [--rto-gb 1]
"""

from __future__ import annotations

import argparse
import functools
import io
import logging
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import ModuleType
from typing import Any

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # crltestkit, which backup_testkit uses
sys.path.insert(0, str(ROOT / "tests" / "backup"))
from backup_testkit import free_port, load_file, load_program  # noqa: E402  (the tests' helpers)

STANDIN = ROOT / "lab" / "standins" / "qdrant"
KEY = "benchmark-key"
MB = 1_000_000
# The program's calls that wait on Qdrant's snapshot machinery, not on the transfer.
# open_snapshot is absent on purpose: streaming the file is the program's part.
QDRANT_CALLS = ("version", "collections", "collection_info", "count", "create_snapshot",
                "delete_snapshot", "recover")


def start_standin(work: Path) -> tuple[subprocess.Popen[bytes], str, str]:
    port = free_port()
    config = work / "config.yaml"
    config.write_text(
        f"log_level: WARN\nstorage:\n  storage_path: {work / 'storage'}\n  snapshots_path: {work / 'snapshots'}\n"
        f"service:\n  host: 127.0.0.1\n  http_port: {port}\n  grpc_port: null\n  api_key: '{KEY}'\n"
    )
    env = dict(os.environ, PYTHONPATH=str(STANDIN))
    proc = subprocess.Popen([sys.executable, "-m", "qdrant_standin", "--config-path", str(config)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(400):
        try:
            if requests.get(url + "/readyz", timeout=1).status_code == 200:
                return proc, url, str(work / "snapshots")
        except requests.RequestException:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("the Qdrant stand-in did not start")


def session(key: str) -> requests.Session:
    http = requests.Session()
    http.trust_env = False
    http.headers["api-key"] = key
    return http


def fill(url: str, key: str, collection: str, points: int, dim: int) -> None:
    http = session(key)
    http.put(f"{url}/collections/{collection}", json={"vectors": {"size": dim, "distance": "Cosine"}},
             timeout=60).raise_for_status()
    rng = random.Random(42)
    batch = 5000
    for start in range(0, points, batch):
        body = {"points": [{"id": i, "vector": [round(rng.random(), 4) for _ in range(dim)],
                            "payload": {"doc": f"d{i % 100}", "chunk": i}}
                           for i in range(start, min(points, start + batch))]}
        http.put(f"{url}/collections/{collection}/points", params={"wait": "true"}, json=body,
                 timeout=600).raise_for_status()


def fill_bytes(url: str, key: str, collection: str, size: int) -> None:
    """About `size` bytes of snapshot in few requests: 1 MiB text payloads, 4-dim vectors.

    The stand-in rewrites its whole collection file on every upsert, so the batches are
    large (256 points, 256 MiB) to keep that quadratic cost to a handful of rewrites.
    """
    http = session(key)
    http.put(f"{url}/collections/{collection}", json={"vectors": {"size": 4, "distance": "Dot"}},
             timeout=60).raise_for_status()
    per_point = 1 << 20
    points, batch = max(1, size // per_point), 256
    for start in range(0, points, batch):
        text = os.urandom(per_point // 2).hex()  # incompressible, like embeddings and chunks
        body = {"points": [{"id": i, "vector": [0.1, 0.2, 0.3, 0.4], "payload": {"text": text, "n": i}}
                           for i in range(start, min(points, start + batch))]}
        http.put(f"{url}/collections/{collection}/points", params={"wait": "true"}, json=body,
                 timeout=1800).raise_for_status()


class QdrantClock:
    """Seconds the program spends inside its Qdrant client's snapshot API calls."""

    def __init__(self, qb: ModuleType) -> None:
        self.seconds = 0.0
        for name in QDRANT_CALLS:
            setattr(qb.Qdrant, name, self._timed(getattr(qb.Qdrant, name)))

    def _timed(self, call: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(call)
        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return call(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - started
        return timed

    @contextmanager
    def measure(self) -> Iterator[dict[str, float]]:
        """{"total", "qdrant", "program"} of the block, filled in when it ends."""
        figures: dict[str, float] = {}
        self.seconds = 0.0
        started = time.perf_counter()
        yield figures
        figures["total"] = time.perf_counter() - started
        figures["qdrant"] = self.seconds
        figures["program"] = figures["total"] - self.seconds


def load(path: str | None) -> ModuleType:
    return load_file("querygpt_backup", path) if path else load_program()


def rate(size: int, seconds: float) -> str:
    return f"{size / seconds / MB:8.1f} MB/s" if seconds > 0 else "       - MB/s"


def median(rounds: list[dict[str, float]], name: str) -> float:
    return statistics.median(r[name] for r in rounds)


def compare(qb: ModuleType, clock: QdrantClock, config: Any, s3: Any, collection: str,
            repeat: int) -> None:
    """A warm-up, then --repeat rounds of program backup + restore and raw upload + download.

    Each raw transfer runs right next to the program's run it is compared with, first in
    even rounds and second in odd ones, so a burst of load from this machine's other work
    hits both sides of a ratio alike; the medians of the per-round ratios are reported.
    """
    stamp = datetime.now(timezone.utc).replace(microsecond=0)
    raw_key = f"{config.s3_prefix}/raw-{collection}.bin"
    transfer = qb.transfer_config(config)

    def backup(n: int) -> dict[str, float]:
        with clock.measure() as figures:
            if qb.run_backup(config, now=stamp + timedelta(minutes=n)) != 0:
                raise SystemExit("the backup failed")
        return figures

    def restore() -> dict[str, float]:
        saved = qb.list_backups(config, s3, collection)[-1]
        with clock.measure() as figures:
            qb.run_restore(config, collection, saved.key)
        s3.delete_object(Bucket=config.s3_bucket, Key=saved.key)
        return figures

    def timed(call: Callable[[], Any]) -> float:
        started = time.perf_counter()
        call()
        return time.perf_counter() - started

    # Warm-up (not counted): first calls import modules and open connections; it also
    # yields the snapshot's bytes for the raw transfers, taken from memory.
    backup(0)
    saved = qb.list_backups(config, s3, collection)[-1]
    size = saved.size
    payload = s3.get_object(Bucket=config.s3_bucket, Key=saved.key)["Body"].read()
    restore()

    def raw_upload() -> float:
        return timed(lambda: s3.upload_fileobj(io.BytesIO(payload), config.s3_bucket, raw_key, Config=transfer))

    def raw_download() -> float:
        return timed(lambda: s3.download_fileobj(config.s3_bucket, raw_key, io.BytesIO(), Config=transfer))

    rounds: list[dict[str, float]] = []
    for n in range(1, repeat + 1):
        if n % 2:
            b, upload = backup(n), raw_upload()
            r, download = restore(), raw_download()
        else:
            upload, b = raw_upload(), backup(n)
            download, r = raw_download(), restore()
        rounds.append({
            "backup": b["total"], "snapshot": b["qdrant"], "backup_program": b["program"], "upload": upload,
            "restore": r["total"], "recover": r["qdrant"], "restore_program": r["program"], "download": download,
            "backup_ratio": b["program"] / upload, "restore_ratio": r["program"] / download,
        })
        print(f"  round {n}: backup {b['total']:.2f}s (Qdrant {b['qdrant']:.2f}, program {b['program']:.2f}) "
              f"raw up {upload:.2f}s x{b['program'] / upload:.2f} | restore {r['total']:.2f}s (Qdrant "
              f"{r['qdrant']:.2f}, program {r['program']:.2f}) raw down {download:.2f}s "
              f"x{r['program'] / download:.2f}", flush=True)
    s3.delete_object(Bucket=config.s3_bucket, Key=raw_key)

    m = {name: median(rounds, name) for name in rounds[0]}
    print(f"\nsnapshot size {size / MB:.1f} MB; medians of {repeat} round(s)")
    print(f"{'':46}{'seconds':>9}  {'throughput':>13}")
    for label, seconds in (
        ("backup, whole run", m["backup"]),
        ("  Qdrant: count + snapshot create + delete", m["snapshot"]),
        ("  program: stream+hash+upload+verify+prune", m["backup_program"]),
        ("raw S3 upload, same bytes", m["upload"]),
        ("restore, whole run", m["restore"]),
        ("  Qdrant: recover + ready + count", m["recover"]),
        ("  program: list+download+hash+stage", m["restore_program"]),
        ("raw S3 download, same bytes", m["download"]),
    ):
        print(f"{label:46}{seconds:9.2f}  {rate(size, seconds)}")
    print(f"backup:  program part / raw upload   = x{m['backup_ratio']:.2f} (median of per-round ratios; "
          f"whole run / raw upload x{m['backup'] / m['upload']:.2f}; target <= x1.25)")
    print(f"restore: program part / raw download = x{m['restore_ratio']:.2f} (median of per-round ratios; "
          f"whole run / raw download x{m['restore'] / m['download']:.2f}; target <= x1.25)")


def rto(qb: ModuleType, clock: QdrantClock, base: dict[str, Any], url: str, key: str, s3: Any,
        gigabytes: float) -> None:
    """Build a collection of about `gigabytes` GB, back it up, time one restore of it.

    With the role's own transfer settings (64 MiB parts, 4 in parallel), not --chunk-mb:
    this is the production restore. It also matters on moto, which reads the whole object
    for every ranged GET, so small parts make a 1 GB download quadratic there.
    """
    collection = f"rto_{uuid.uuid4().hex[:6]}"
    settings = {k: v for k, v in base.items() if not k.startswith("s3_multipart_")}
    config = qb.Config.from_dict(dict(settings, collections=[collection]))
    print(f"\nRTO: building collection {collection} of about {gigabytes:g} GB (restore with "
          f"{config.s3_multipart_chunksize_mb} MiB parts, {config.s3_max_concurrency} in parallel) ...", flush=True)
    started = time.perf_counter()
    fill_bytes(url, key, collection, int(gigabytes * 1e9))
    filled = time.perf_counter() - started
    with clock.measure() as backup:
        if qb.run_backup(config) != 0:
            raise SystemExit("the RTO collection's backup failed")
    saved = qb.list_backups(config, s3, collection)[-1]
    with clock.measure() as restore:
        qb.run_restore(config, collection, saved.key)
    s3.delete_object(Bucket=config.s3_bucket, Key=saved.key)
    session(key).delete(f"{url}/collections/{collection}", timeout=600)
    size_gb = saved.size / 1e9
    print(f"RTO collection: {size_gb:.2f} GB snapshot (built in {filled:.0f}s; backup {backup['total']:.1f}s "
          f"of which Qdrant {backup['qdrant']:.1f}s)")
    print(f"RTO, restore of {size_gb:.2f} GB: {restore['total']:.1f}s = download+verify "
          f"{restore['program']:.1f}s + Qdrant recover+ready {restore['qdrant']:.1f}s")
    print(f"RTO per GB (extrapolated linearly from this {size_gb:.2f} GB run): "
          f"{restore['total'] / size_gb:.1f}s/GB, of which the program {restore['program'] / size_gb:.1f}s/GB")
    print(f"RTO section took {time.perf_counter() - started:.0f}s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--points", type=int, default=50_000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--repeat", type=int, default=3, help="rounds of the comparison (medians); 0: only the RTO")
    parser.add_argument("--rto-gb", type=float, default=1.0,
                        help="size of the RTO collection in GB (0: skip the RTO measurement)")
    parser.add_argument("--program", help="the program file to measure (default: the role's)")
    parser.add_argument("--qdrant-url", help="a running Qdrant (default: start the lab stand-in)")
    parser.add_argument("--api-key", default=KEY)
    parser.add_argument("--snapshots-dir", help="that Qdrant's snapshots_path (restores are staged there)")
    parser.add_argument("--s3-endpoint", help="S3 endpoint (default: moto in-process; '' for AWS)")
    parser.add_argument("--bucket", default="querygpt-benchmark")
    parser.add_argument("--chunk-mb", type=int, default=8, help="multipart threshold and part size")
    args = parser.parse_args()

    began = time.perf_counter()
    qb = load(args.program)
    clock = QdrantClock(qb)
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    work = Path(tempfile.mkdtemp(prefix="backup-bench-"))
    stand_in = moto = None
    if args.qdrant_url:
        url, snapshots = args.qdrant_url, args.snapshots_dir or "/var/lib/qdrant/snapshots"
    else:
        stand_in, url, snapshots = start_standin(work)
    endpoint = args.s3_endpoint
    if endpoint is None:
        from moto.server import ThreadedMotoServer

        port = free_port()
        moto = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        moto.start()
        endpoint = f"http://127.0.0.1:{port}"
        os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
        os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    try:
        collection = f"bench_{uuid.uuid4().hex[:6]}"
        base = {
            "qdrant_url": url, "qdrant_api_key": args.api_key, "qdrant_snapshots_dir": snapshots,
            "s3_bucket": args.bucket, "s3_prefix": "benchmark",
            "s3_endpoint_url": endpoint or "", "s3_region": os.environ.get("AWS_REGION", "us-east-1"),
            "s3_multipart_threshold_mb": args.chunk_mb, "s3_multipart_chunksize_mb": args.chunk_mb,
            "retention_days": 0, "textfile_dir": str(work / "textfile"), "state_dir": str(work / "state"),
            "lock_file": str(work / "lock"),
        }
        config = qb.Config.from_dict(dict(base, collections=[collection]))
        s3 = qb.s3_client(config)
        if moto:
            s3.create_bucket(Bucket=args.bucket)
        print(f"program {args.program or 'roles/backup/files/querygpt_backup.py'}; S3 {endpoint or 'AWS'}; "
              f"part size {args.chunk_mb} MiB, concurrency {config.s3_max_concurrency}")

        if args.repeat > 0:
            started = time.perf_counter()
            fill(url, args.api_key, collection, args.points, args.dim)
            print(f"collection {collection}: {args.points} points x {args.dim} dims indexed in "
                  f"{time.perf_counter() - started:.1f}s", flush=True)
            compare(qb, clock, config, s3, collection, args.repeat)
        if args.rto_gb > 0:
            rto(qb, clock, base, url, args.api_key, s3, args.rto_gb)
        print(f"\nbenchmark took {time.perf_counter() - began:.0f}s")
        return 0
    finally:
        if stand_in:
            stand_in.terminate()
            stand_in.wait(timeout=10)
        if moto:
            moto.stop()
        shutil.rmtree(work, ignore_errors=True)  # the stand-in's storage: GBs after --rto-gb


if __name__ == "__main__":
    sys.exit(main())
