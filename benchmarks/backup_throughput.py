#!/usr/bin/env python3
"""Backup and restore throughput of querygpt-backup, next to a raw S3 upload and download of
the same bytes in the same run. Prints figures; it is a measurement, not a test.

By default everything runs on this machine: the Qdrant lab stand-in (a test fixture, NOT
Qdrant: its snapshot is a JSON tar, and its speed is not Qdrant's) from source and moto's S3
server in-process, so the figures show the program's own overhead (snapshot, streaming,
hashing, verification, retention listing) against boto3's transfer manager alone.
Point it at a real Qdrant and bucket with --qdrant-url/--api-key/--snapshots-dir and
--s3-endpoint/--bucket (credentials from the usual AWS environment) for real figures.

    .venv/bin/python benchmarks/backup_throughput.py [--points 50000] [--dim 128]
"""

from __future__ import annotations

import argparse
import io
import logging
import os
import random
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "backup"))
from backup_testkit import free_port, load_program  # noqa: E402  (the tests' helpers)

STANDIN = ROOT / "lab" / "standins" / "qdrant"
KEY = "benchmark-key"


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


def fill(url: str, key: str, collection: str, points: int, dim: int) -> None:
    http = requests.Session()
    http.trust_env = False
    http.headers["api-key"] = key
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


def rate(size: int, seconds: float) -> str:
    return f"{size / seconds / 1e6:8.1f} MB/s" if seconds > 0 else "       - MB/s"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--points", type=int, default=50_000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--qdrant-url", help="a running Qdrant (default: start the lab stand-in)")
    parser.add_argument("--api-key", default=KEY)
    parser.add_argument("--snapshots-dir", help="that Qdrant's snapshots_path (restores are staged there)")
    parser.add_argument("--s3-endpoint", help="S3 endpoint (default: moto in-process; '' for AWS)")
    parser.add_argument("--bucket", default="querygpt-benchmark")
    parser.add_argument("--chunk-mb", type=int, default=8, help="multipart threshold and part size")
    args = parser.parse_args()

    qb = load_program()
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
        config = qb.Config.from_dict({
            "qdrant_url": url, "qdrant_api_key": args.api_key, "qdrant_snapshots_dir": snapshots,
            "collections": [collection], "s3_bucket": args.bucket, "s3_prefix": "benchmark",
            "s3_endpoint_url": endpoint or "", "s3_region": os.environ.get("AWS_REGION", "us-east-1"),
            "s3_multipart_threshold_mb": args.chunk_mb, "s3_multipart_chunksize_mb": args.chunk_mb,
            "retention_days": 0, "textfile_dir": str(work / "textfile"), "state_dir": str(work / "state"),
            "lock_file": str(work / "lock"),
        })
        s3 = qb.s3_client(config)
        if moto:
            s3.create_bucket(Bucket=args.bucket)

        started = time.perf_counter()
        fill(url, args.api_key, collection, args.points, args.dim)
        fill_s = time.perf_counter() - started
        print(f"collection {collection}: {args.points} points x {args.dim} dims indexed in {fill_s:.1f}s")

        started = time.perf_counter()
        if qb.run_backup(config) != 0:
            raise SystemExit("the backup failed")
        backup_s = time.perf_counter() - started
        backup = qb.list_backups(config, s3, collection)[-1]
        size = backup.size

        started = time.perf_counter()
        qb.run_restore(config, collection)
        restore_s = time.perf_counter() - started

        # The same bytes, raw: from memory, with the same transfer settings.
        payload = s3.get_object(Bucket=args.bucket, Key=backup.key)["Body"].read()
        raw_key = f"{config.s3_prefix}/raw-{collection}.bin"
        started = time.perf_counter()
        s3.upload_fileobj(io.BytesIO(payload), args.bucket, raw_key, Config=qb.transfer_config(config))
        upload_s = time.perf_counter() - started
        started = time.perf_counter()
        s3.download_fileobj(args.bucket, raw_key, io.BytesIO(), Config=qb.transfer_config(config))
        download_s = time.perf_counter() - started
        for key in (raw_key, backup.key):
            s3.delete_object(Bucket=args.bucket, Key=key)

        print(f"snapshot size: {size / 1e6:.1f} MB (S3 endpoint: {endpoint or 'AWS'}, "
              f"part size {args.chunk_mb} MiB)")
        print(f"{'':34}{'seconds':>9}  {'throughput':>13}")
        for label, seconds in (
            ("backup (snapshot+stream+verify)", backup_s),
            ("raw S3 upload, same bytes", upload_s),
            ("restore (download+verify+recover)", restore_s),
            ("raw S3 download, same bytes", download_s),
        ):
            print(f"{label:34}{seconds:9.2f}  {rate(size, seconds)}")
        print(f"backup overhead vs raw upload:    x{backup_s / upload_s:.2f}")
        print(f"restore overhead vs raw download: x{restore_s / download_s:.2f}")
        return 0
    finally:
        if stand_in:
            stand_in.terminate()
            stand_in.wait(timeout=10)
        if moto:
            moto.stop()


if __name__ == "__main__":
    sys.exit(main())
