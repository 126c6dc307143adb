"""promtool, amtool and the blackbox exporter on the controller, without installing (and starting) them.

The alert-rule unit tests (`promtool test rules`) and the config checks (`promtool check`,
`amtool check-config`, `prometheus-blackbox-exporter --config.check`) run on the controller. `apt-get install prometheus` would start a
daemon on the machine, so the Debian packages are downloaded with `apt-get download` and
unpacked with `dpkg-deb -x` into a cache directory; only the static binaries are used.
The packages are the hosts' release's (Debian 13: prometheus 2.53, alertmanager 0.28), the same
the role installs, whatever Debian the controller runs: apt downloads them through a private
configuration that lists only that release (the archive's signatures are checked as usual).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from .paths import REPO
from .run import LabError

TOOLS_DIR = Path(os.environ.get("QGPT_TOOLS_DIR", REPO / ".cache" / "tools"))
# The Debian release the hosts run (the lab image's, roles/common's common_supported_os).
RELEASE = "trixie"
MIRROR = "http://deb.debian.org/debian"
# Debian package -> the binary inside it that the tests need.
PACKAGES = {"promtool": "usr/bin/promtool", "prometheus-alertmanager": "usr/bin/amtool",
            "prometheus-blackbox-exporter": "usr/bin/prometheus-blackbox-exporter"}
# Debian package -> the directory it is unpacked into whole (tools that read their data files):
# testssl.sh for tests/lab/test_lab_internal_tls.py. The hosts' release's 3.2 (bookworm's 3.0
# cannot present a client certificate, so it cannot scan the mutual-TLS endpoints); a shell
# script on the controller's openssl, its data under etc/testssl (TESTSSL_INSTALL_DIR).
TREES = {"testssl.sh": "testssl"}


def tool_path(name: str) -> Path:
    """Where the unpacked tool lives (it may not exist yet)."""
    return TOOLS_DIR / RELEASE / "bin" / name


def _apt_options() -> list[str]:
    """apt-get options for a private package index of RELEASE (the system's stays untouched)."""
    root = TOOLS_DIR / RELEASE / "apt"
    for sub in ("lists/partial", "archives/partial"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    sources = root / "sources.list"
    sources.write_text(f"deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] {MIRROR} {RELEASE} main\n")
    return ["-o", f"Dir::Etc::SourceList={sources}", "-o", "Dir::Etc::SourceParts=-",
            "-o", f"Dir::State::Lists={root / 'lists'}", "-o", f"Dir::Cache::Archives={root / 'archives'}",
            "-o", "APT::Get::List-Cleanup=false"]


def _update() -> None:
    proc = subprocess.run(["apt-get", *_apt_options(), "update", "-q"], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise LabError(f"apt-get update of {RELEASE}'s index failed ({proc.returncode}): {proc.stderr.strip()}")


def _unpack(package: str, tmp: str) -> Path:
    """Download `package` of RELEASE into `tmp` and unpack it there; the unpacked root."""
    proc = subprocess.run(["apt-get", *_apt_options(), "download", "-q", package], cwd=tmp,
                          capture_output=True, text=True, check=False)
    debs = sorted(Path(tmp).glob(f"{package}_*.deb"))
    if proc.returncode != 0 or not debs:
        raise LabError(f"apt-get download {package} failed ({proc.returncode}): {proc.stderr.strip()}\n"
                       "run `apt-get update` (the Debian mirror must be reachable) and retry")
    root = Path(tmp) / "root"
    subprocess.run(["dpkg-deb", "-x", str(debs[0]), str(root)], check=True)
    return root


def _fetch(package: str, binary: str) -> None:
    with tempfile.TemporaryDirectory(prefix="qgpt-promtools-") as tmp:
        root = _unpack(package, tmp)
        tool_path(binary).parent.mkdir(parents=True, exist_ok=True)
        target = tool_path(Path(binary).name)
        # Copy then rename: a concurrent test never sees a half-written binary.
        partial = target.with_suffix(".partial")
        shutil.copy2(root / binary, partial)
        partial.chmod(0o755)
        partial.replace(target)


def tree_path(name: str) -> Path:
    """Where a package unpacked whole lives (it may not exist yet)."""
    return TOOLS_DIR / RELEASE / name


def _fetch_tree(package: str, name: str) -> None:
    tree_path(name).parent.mkdir(parents=True, exist_ok=True)
    # Unpacked beside its place, then renamed: a concurrent test never sees half a tree.
    with tempfile.TemporaryDirectory(prefix="qgpt-promtools-", dir=tree_path(name).parent) as tmp:
        root = _unpack(package, tmp)
        try:
            root.rename(tree_path(name))
        except OSError:
            if not tree_path(name).is_dir():  # not a concurrent fetch that got there first
                raise


def ensure_promtools() -> dict[str, Path]:
    """promtool, amtool and prometheus-blackbox-exporter paths, and the testssl tree, fetched once into TOOLS_DIR."""
    found: dict[str, Path] = {}
    updated = False
    for package, binary in PACKAGES.items():
        path = tool_path(Path(binary).name)
        if not path.exists():
            if not updated:
                _update()
                updated = True
            _fetch(package, binary)
        found[path.name] = path
    for package, name in TREES.items():
        if not tree_path(name).exists():
            if not updated:
                _update()
                updated = True
            _fetch_tree(package, name)
        found[name] = tree_path(name)
    return found


if __name__ == "__main__":
    for name, path in ensure_promtools().items():
        print(f"{name} {path}")
