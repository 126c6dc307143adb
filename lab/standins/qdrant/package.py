#!/usr/bin/env python3
"""Package the Qdrant stand-in exactly like upstream's release archive.

LAB TEST FIXTURE (QueryGPT Qdrant stand-in, NOT Qdrant).

Why: the qdrant Ansible role downloads ``qdrant-x86_64-unknown-linux-gnu.tar.gz``,
verifies an operator-pinned sha256 and installs the single ``qdrant`` executable
at its root. This script produces the same layout, with the executable being a
stdlib-only Python zipapp, so the role's install path runs unchanged in the lab.
Output is byte-for-byte reproducible (fixed mtimes, owners, ordering, gzip
header) so a pinned checksum stays valid for the same inputs.

Usage: python3 lab/standins/qdrant/package.py --version 1.15.5 --out DIR
Prints the archive's sha256 on stdout.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import re
import sys
import tarfile
import zipfile
from pathlib import Path

ARCHIVE_NAME = "qdrant-x86_64-unknown-linux-gnu.tar.gz"
PACKAGE_DIR = Path(__file__).resolve().parent / "qdrant_standin"
FIXED_ZIP_TIME = (1980, 1, 1, 0, 0, 0)
FIXED_TAR_MTIME = 315532800  # 1980-01-01T00:00:00Z
ZIPAPP_MAIN = b"from qdrant_standin.server import main\nraise SystemExit(main())\n"


def _version_module(version: str) -> bytes:
    return (
        '"""Version baked in by package.py (LAB TEST FIXTURE: Qdrant stand-in, NOT Qdrant)."""\n\n'
        f'VERSION = "{version}"\n'
    ).encode()


def build_zipapp(version: str) -> bytes:
    """A ``#!/usr/bin/env python3`` zipapp of the package with ``version`` baked in."""
    members = {"__main__.py": ZIPAPP_MAIN}
    for source in sorted(PACKAGE_DIR.glob("*.py")):
        members[f"qdrant_standin/{source.name}"] = source.read_bytes()
    members["qdrant_standin/version.py"] = _version_module(version)
    buffer = io.BytesIO()
    buffer.write(b"#!/usr/bin/env python3\n")
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name in sorted(members):
            info = zipfile.ZipInfo(name, date_time=FIXED_ZIP_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o100644 << 16
            archive.writestr(info, members[name])
    return buffer.getvalue()


def build_archive(version: str) -> bytes:
    """The release tarball: one executable ``qdrant`` at the root, root-owned, fixed mtime."""
    executable = build_zipapp(version)
    tar_buffer = io.BytesIO()
    with tarfile.open(fileobj=tar_buffer, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        info = tarfile.TarInfo("qdrant")
        info.size = len(executable)
        info.mode = 0o755
        info.mtime = FIXED_TAR_MTIME
        info.uid = info.gid = 0
        info.uname = info.gname = "root"
        tar.addfile(info, io.BytesIO(executable))
    gz_buffer = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=gz_buffer, mtime=0, compresslevel=9) as gz:
        gz.write(tar_buffer.getvalue())
    return gz_buffer.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", required=True, help="version to report, e.g. 1.15.5")
    parser.add_argument("--out", required=True, type=Path, help="directory for the archive")
    args = parser.parse_args(argv)
    if not re.fullmatch(r"\d+\.\d+\.\d+", args.version):
        parser.error(f"--version must look like 1.15.5, got {args.version!r}")
    data = build_archive(args.version)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / ARCHIVE_NAME).write_bytes(data)
    print(hashlib.sha256(data).hexdigest())
    return 0


if __name__ == "__main__":
    sys.exit(main())
