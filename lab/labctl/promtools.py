"""promtool and amtool on the controller, without installing (and starting) Prometheus.

The alert-rule unit tests (`promtool test rules`) and the config checks (`promtool check`,
`amtool check-config`) run on the controller. `apt-get install prometheus` would start a
daemon on the machine, so the Debian packages are downloaded with `apt-get download` and
unpacked with `dpkg-deb -x` into a cache directory; only the two static binaries are used.
The versions are Debian 12's (prometheus 2.42, alertmanager 0.25), the same the role installs.
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
# Debian package -> the binary inside it that the tests need.
PACKAGES = {"prometheus": "usr/bin/promtool", "prometheus-alertmanager": "usr/bin/amtool"}


def tool_path(name: str) -> Path:
    """Where the unpacked tool lives (it may not exist yet)."""
    return TOOLS_DIR / "bin" / name


def _fetch(package: str, binary: str) -> None:
    with tempfile.TemporaryDirectory(prefix="qgpt-promtools-") as tmp:
        proc = subprocess.run(["apt-get", "download", "-q", package], cwd=tmp, capture_output=True,
                              text=True, check=False)
        debs = sorted(Path(tmp).glob(f"{package}_*.deb"))
        if proc.returncode != 0 or not debs:
            raise LabError(f"apt-get download {package} failed ({proc.returncode}): {proc.stderr.strip()}\n"
                           "run `apt-get update` (the Debian mirror must be reachable) and retry")
        root = Path(tmp) / "root"
        subprocess.run(["dpkg-deb", "-x", str(debs[0]), str(root)], check=True)
        (TOOLS_DIR / "bin").mkdir(parents=True, exist_ok=True)
        target = tool_path(Path(binary).name)
        # Copy then rename: a concurrent test never sees a half-written binary.
        partial = target.with_suffix(".partial")
        shutil.copy2(root / binary, partial)
        partial.chmod(0o755)
        partial.replace(target)


def ensure_promtools() -> dict[str, Path]:
    """promtool and amtool paths, fetched once into TOOLS_DIR."""
    found: dict[str, Path] = {}
    for package, binary in PACKAGES.items():
        path = tool_path(Path(binary).name)
        if not path.exists():
            _fetch(package, binary)
        found[path.name] = path
    return found


if __name__ == "__main__":
    for name, path in ensure_promtools().items():
        print(f"{name} {path}")
