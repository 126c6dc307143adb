"""A shared apt cache (apt-cacher-ng) on the lab host.

Every lab and molecule container installs its packages through this cache, so a package is
fetched from the Debian mirror once per machine instead of once per scenario. It runs on the
host rather than in a container because it must be up before the first image is built.
Containers reach it as `apt-cache:3142` (`--add-host apt-cache:host-gateway`).
"""

from __future__ import annotations

import json
import shutil
import socket
import time
from pathlib import Path

from .paths import STATE
from .run import LabError, output, run

PORT = 3142
CONF_DIR = STATE / "apt-cacher-ng"
CACHE_DIR = Path("/var/cache/querygpt-lab-apt")

# Our own configuration rather than /etc/apt-cacher-ng: the packaged default picks a random
# Debian mirror from a list, most of which are unreachable on restricted networks.
ACNG_CONF_TEMPLATE = """\
CacheDir: {cache}
LogDir: {log}
SupportDir: /usr/lib/apt-cacher-ng
Port: {port}
BindAddress: {bind}
Remap-debrep: file:deb_mirror*.gz /debian ; file:backends_debian
Remap-secdeb: security.debian.org deb.debian.org/debian-security ; deb.debian.org/debian-security
PidFile: {state}/apt-cacher-ng.pid
SocketPath: {state}/apt-cacher-ng.socket
ExThreshold: 4
"""


def docker_bridge_address() -> str:
    """The host's address on docker's default bridge: what `host-gateway` resolves to."""
    info = json.loads(output(["ip", "-j", "-4", "addr", "show", "dev", "docker0"]) or "[]")
    for link in info:
        for addr in link.get("addr_info", []):
            return str(addr["local"])
    raise LabError("docker0 has no IPv4 address: is dockerd running? (`bin/lab bootstrap`)")


def is_up(host: str = "127.0.0.1") -> bool:
    """True when something accepts connections on the cache port."""
    try:
        with socket.create_connection((host, PORT), timeout=1):
            return True
    except OSError:
        return False


def ensure() -> None:
    """Start the cache if it is not running; idempotent."""
    if is_up():
        return
    binary = shutil.which("apt-cacher-ng") or "/usr/sbin/apt-cacher-ng"
    if not Path(binary).exists():
        raise LabError("apt-cacher-ng is not installed: run `bin/lab bootstrap` (apt-get install apt-cacher-ng)")
    CONF_DIR.mkdir(parents=True, exist_ok=True)
    (STATE / "apt-cacher-ng-log").mkdir(parents=True, exist_ok=True)
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    # Listen on loopback (debootstrap) and the docker bridge (containers) only.
    bind = f"127.0.0.1 {docker_bridge_address()}"
    conf = ACNG_CONF_TEMPLATE.format(
        cache=CACHE_DIR, log=STATE / "apt-cacher-ng-log", port=PORT, bind=bind, state=STATE
    )
    (CONF_DIR / "acng.conf").write_text(conf)
    (CONF_DIR / "backends_debian").write_text("http://deb.debian.org/debian/\n")
    run([binary, "-c", str(CONF_DIR), "ForeGround=0"])
    for _ in range(50):
        if is_up():
            return
        time.sleep(0.2)
    raise LabError(f"apt-cacher-ng did not start; see {STATE / 'apt-cacher-ng-log'}")


def proxy_url() -> str:
    """The proxy URL as seen from the host (debootstrap runs here)."""
    return f"http://127.0.0.1:{PORT}"
