"""Bring a fresh Debian machine to the point where the lab and the tests can run.

Installs the host packages, starts a Docker engine where none answers (there is no systemd
on CI machines), and creates the pinned virtualenvs. Each step checks before it acts, so the
whole thing is cheap to repeat.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import socket
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from . import promtools
from .paths import CHECKOV_VENV, REPO, STATE, VENV
from .run import LabError, run

HOST_PACKAGES = [
    "docker.io", "debootstrap", "nginx", "iptables", "openssh-client", "zstd",
    # The lab's UI test drives Debian's chromium through its matching chromedriver, and
    # trusts the lab's ACME CA through an NSS database made with certutil.
    "chromium", "chromium-driver", "libnss3-tools",
    # The backend's tests start a throw-away PostgreSQL server (tests/pgserver.py) from
    # Debian's server binaries; the package's own cluster is not used.
    "postgresql",
    # tests/lab/test_lab_internal_tls.py runs testssl.sh (trixie's, unpacked by promtools.py)
    # on the controller: it needs hexdump, dig, and socat (its STARTTLS injection check).
    "bsdextrautils", "bind9-dnsutils", "socat",
]
# One executable per package, to tell whether it is installed without asking dpkg each time.
PACKAGE_PROBES = {
    "docker.io": "/usr/sbin/dockerd", "debootstrap": "/usr/sbin/debootstrap",
    "nginx": "/usr/sbin/nginx", "iptables": "/usr/sbin/iptables",
    "openssh-client": "/usr/bin/ssh", "zstd": "/usr/bin/zstd",
    "chromium": "/usr/bin/chromium", "chromium-driver": "/usr/bin/chromedriver",
    "libnss3-tools": "/usr/bin/certutil",
    # The server binaries are under /usr/lib/postgresql/<major>/bin (the major changes with
    # Debian's release); pg_createcluster comes with postgresql-common, which only the server
    # packages pull in (pg_wrapper is postgresql-client-common's, there with the client alone).
    "postgresql": "/usr/bin/pg_createcluster",
    "bsdextrautils": "/usr/bin/hexdump", "bind9-dnsutils": "/usr/bin/dig", "socat": "/usr/bin/socat",
}

NO_DOCKER_HELP = """\
No Docker engine answers. On Debian:
  apt-get install docker.io && systemctl start docker     (a machine with systemd)
  apt-get install docker.io && dockerd &                  (a container or CI machine)
`bin/lab bootstrap` does this for you when run as root."""


def missing_packages() -> list[str]:
    missing = [pkg for pkg in HOST_PACKAGES if not Path(PACKAGE_PROBES[pkg]).exists()]
    # Debian splits venv support out of the interpreter.
    if importlib.util.find_spec("ensurepip") is None:
        missing.append("python3-venv")
    return missing


def install_packages() -> None:
    missing = missing_packages()
    if not missing:
        return
    if os.geteuid() != 0:
        raise LabError(f"missing host packages {missing}: run as root or `sudo apt-get install {' '.join(missing)}`")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    run(["apt-get", "update", "-q"], env=env)
    run(["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing], env=env)


def docker_answers() -> bool:
    return subprocess.run(["docker", "info"], capture_output=True, check=False).returncode == 0


def ensure_docker() -> None:
    if shutil.which("docker") and docker_answers():
        return
    if os.geteuid() != 0 or not Path("/usr/sbin/dockerd").exists():
        raise LabError(NO_DOCKER_HELP)
    if Path("/run/systemd/system").exists():
        run(["systemctl", "start", "docker"])
    else:
        STATE.mkdir(parents=True, exist_ok=True)
        log = open(STATE / "dockerd.log", "a")  # noqa: SIM115 - the daemon keeps it open
        subprocess.Popen(["/usr/sbin/dockerd"], stdout=log, stderr=log, start_new_session=True)
    for _ in range(60):
        if docker_answers():
            return
        time.sleep(0.5)
    raise LabError(f"dockerd did not come up; see {STATE / 'dockerd.log'}\n{NO_DOCKER_HELP}")


def _venv(path: Path, requirements: list[Path], no_deps: list[Path] = ()) -> None:
    """Create or refresh a virtualenv; a stamp of the requirement files skips unchanged ones.
    `no_deps` files are installed after, without the dependencies their packages declare."""
    digest = hashlib.sha256(b"".join(r.read_bytes() for r in [*requirements, *no_deps])).hexdigest()
    stamp = path / ".requirements.sha256"
    if stamp.exists() and stamp.read_text() == digest:
        return
    if not (path / "bin" / "python").exists():
        run(["python3", "-m", "venv", str(path)])
    # --no-compile: pip would byte-compile all 36,000 files (the `ansible` package's bundled
    # collections are most of them) on one core for minutes; Python compiles the few
    # thousand that are ever imported on first use and caches them in the venv.
    pip = [str(path / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", "--no-compile"]
    run([*pip, *(arg for req in requirements for arg in ("-r", str(req)))])
    if no_deps:
        run([*pip, "--no-deps", *(arg for req in no_deps for arg in ("-r", str(req)))])
    stamp.write_text(digest)


def ensure_venvs() -> None:
    """Both virtualenvs at once: pip installs on one core, and each spends minutes on a fresh machine."""
    req = REPO / "requirements"
    with ThreadPoolExecutor(max_workers=2) as pool:
        # ollama-standin*.txt: the stand-in's real all-minilm embeddings, which the tests run.
        jobs = [pool.submit(_venv, VENV, [req / "controller.txt", req / "app.txt", req / "ollama-standin.txt"],
                            [req / "ollama-standin-models.txt"]),
                pool.submit(_venv, CHECKOV_VENV, [req / "checkov.txt"])]
        for job in jobs:
            job.result()


NODE_MIN = (20, 19)


def check_node() -> None:
    """The frontend build needs Node.js >= 20.19 (Vite 8); Debian 12 ships 18."""
    try:
        out = subprocess.run(["node", "--version"], capture_output=True, text=True, check=True).stdout
        version = tuple(int(part) for part in out.strip().lstrip("v").split(".")[:2])
    except (OSError, subprocess.CalledProcessError, ValueError):
        version = (0, 0)
    if version < NODE_MIN:
        raise LabError(
            f"Node.js >= {NODE_MIN[0]}.{NODE_MIN[1]} is needed to build the frontend "
            f"(found {'.'.join(map(str, version)) if version != (0, 0) else 'none'}); Debian 12's "
            "nodejs is 18: install Node.js 20 LTS (e.g. from NodeSource) and npm"
        )


def _lab_image() -> None:
    from . import aptcache, image  # noqa: PLC0415 - only when asked for

    aptcache.ensure()
    image.build()


def bootstrap(with_image: bool = False) -> None:
    """Host packages and dockerd first; then, side by side (network and CPU, no shared state),
    the virtualenvs, promtool/amtool and, when asked, the lab image (debootstrap)."""
    install_packages()
    ensure_docker()
    # promtool/amtool for the alert-rule tests, unpacked from Debian's packages (installing
    # them would start daemons on the controller).
    steps = [ensure_venvs, promtools.ensure_promtools] + ([_lab_image] if with_image else [])
    with ThreadPoolExecutor(max_workers=len(steps)) as pool:
        for future in [pool.submit(step) for step in steps]:
            future.result()


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False
