#!/usr/bin/env python3
"""Lab test fixture: package the Ollama stand-in exactly like an upstream Linux release.

Upstream publishes ollama-linux-amd64.tar.zst (v0.14+; .tgz before) whose
members are bin/ollama and lib/ollama/..., created with `--owner 0 --group 0`,
plus sha256sum.txt written by `find . -type f -not -name sha256sum.txt |
xargs sha256sum` in the release dir. Reproducing that lets the ollama role's
download/verify/extract path run unchanged in the lab. bin/ollama is a zipapp
(stdlib only) with the requested version stamped in. Output is reproducible:
fixed mtimes/owners/order, so the same inputs give the same sha256.

    python3 lab/standins/ollama/package.py --version 0.14.2 --out dist/
    python3 lab/standins/ollama/package.py --version 0.13.5 --out dist/ --format tgz
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import os
import re
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
PACKAGE = HERE / "ollama_standin"
# 1980-01-01: the earliest time a zip entry can carry; used for tar members too.
FIXED_MTIME = 315532800
ARCHIVES = {"zst": "ollama-linux-amd64.tar.zst", "tgz": "ollama-linux-amd64.tgz"}
STANDIN_TXT = """QueryGPT lab stand-in for Ollama -- a TEST FIXTURE, NOT Ollama, NOT an LLM.
bin/ollama is a Python zipapp that imitates Ollama's HTTP API for lab tests.
Never deploy it as a production default. Source: lab/standins/ollama/.
"""
_VERSION_LINE = re.compile(r'^VERSION = ".*"$', re.M)


def build_zipapp(version: str) -> bytes:
    """bin/ollama: shebang + deterministic zip of ollama_standin with VERSION stamped."""
    if not re.fullmatch(r"\d+\.\d+\.\d+(-[0-9A-Za-z.]+)?", version):
        raise SystemExit(f"invalid version: {version!r}")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        files = sorted(p for p in PACKAGE.glob("*.py"))
        entries = [("__main__.py", (PACKAGE / "__main__.py").read_bytes())]
        for path in files:
            data = path.read_bytes()
            if path.name == "version.py":
                data = _VERSION_LINE.sub(f'VERSION = "{version}"', data.decode(), count=1).encode()
            entries.append((f"ollama_standin/{path.name}", data))
        for name, data in entries:
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, data)
    return b"#!/usr/bin/env python3\n" + buffer.getvalue()


def _member(name: str, data: bytes | None, mode: int) -> tuple[tarfile.TarInfo, io.BytesIO | None]:
    info = tarfile.TarInfo(name)
    info.mtime = FIXED_MTIME
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    info.mode = mode
    if data is None:
        info.type = tarfile.DIRTYPE
        return info, None
    info.size = len(data)
    return info, io.BytesIO(data)


def build_tar(version: str) -> bytes:
    """Uncompressed tar with members bin/ollama, lib/ollama/, lib/ollama/STANDIN.txt."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as archive:
        for name, data, mode in (
            ("bin/ollama", build_zipapp(version), 0o755),
            ("lib/ollama", None, 0o755),
            ("lib/ollama/STANDIN.txt", STANDIN_TXT.encode(), 0o644),
        ):
            archive.addfile(*_member(name, data, mode))
    return buffer.getvalue()


def compress(tar: bytes, fmt: str) -> bytes:
    """zstd via the zstd binary (as upstream's workflow), or gzip with a zero timestamp."""
    if fmt == "zst":
        return subprocess.run(
            ["zstd", "-19", "-q", "-c", "--no-progress"], input=tar, capture_output=True, check=True
        ).stdout
    out = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0) as stream:
        stream.write(tar)
    return out.getvalue()


def write_sha256sums(out: Path) -> None:
    """Upstream's sha256sum.txt: `<hex>  ./<file>` for every other file in the release dir."""
    lines = []
    for path in sorted(p for p in out.iterdir() if p.is_file() and p.name != "sha256sum.txt"):
        lines.append(f"{hashlib.sha256(path.read_bytes()).hexdigest()}  ./{path.name}\n")
    (out / "sha256sum.txt").write_text("".join(lines))


def package(version: str, out: Path, fmt: str) -> tuple[Path, str]:
    """Write the archive and sha256sum.txt; return the archive path and its sha256."""
    out.mkdir(parents=True, exist_ok=True)
    archive = out / ARCHIVES[fmt]
    data = compress(build_tar(version), fmt)
    tmp = archive.with_name(archive.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, archive)
    write_sha256sums(out)
    return archive, hashlib.sha256(data).hexdigest()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description="Package the Ollama lab stand-in like an upstream release.")
    parser.add_argument("--version", required=True, help="version to impersonate, e.g. 0.14.2")
    parser.add_argument("--out", required=True, type=Path, help="release directory to write into")
    parser.add_argument(
        "--format", choices=("zst", "tgz"), default="zst", help="zst: v0.14+ .tar.zst; tgz: older .tgz"
    )
    args = parser.parse_args(argv)
    _, digest = package(args.version, args.out, args.format)
    print(digest)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
