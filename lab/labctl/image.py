"""The lab's base image: Debian 13 (trixie) with systemd, built offline from a debootstrap rootfs.

No registry is reachable, so the image is built from Debian packages and imported with
`docker import`. It is tagged with a hash of this recipe, so an unchanged recipe reuses the
image and any edit here produces a new one. It mirrors what a Debian 13 cloud AMI gives:
systemd, sshd, sudo, python3 and an `admin` user whose key is injected at boot.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from . import aptcache
from .paths import LABEL
from .run import LabError, output, run

REPOSITORY = "querygpt-lab/debian13"
SUITE = "trixie"
MIRROR = "http://deb.debian.org/debian"

PACKAGES = [
    "systemd", "systemd-sysv", "dbus", "python3", "python3-apt", "openssh-server", "sudo",
    "ca-certificates", "iproute2", "iputils-ping", "procps", "netbase", "curl", "less",
]

# deb822, as Debian 13's cloud images ship them (debootstrap writes a one-line sources.list).
DEBIAN_SOURCES = f"""\
Types: deb
URIs: {MIRROR}
Suites: {SUITE} {SUITE}-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: {SUITE}-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
"""

# Lab containers reach the apt cache on the host under this name (`--add-host`).
APT_PROXY = f'Acquire::http::Proxy "http://apt-cache:{aptcache.PORT}";\n'

# sshd needs host keys; generating them at build time would give every container the same ones.
HOSTKEYS_UNIT = """\
[Unit]
Description=Generate SSH host keys on first boot (lab image)
Before=ssh.service
ConditionPathExists=!/etc/ssh/ssh_host_ed25519_key

[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -A

[Install]
WantedBy=multi-user.target
"""

# Units that cannot work in a container and only add noise to `systemctl --failed`.
MASKED_UNITS = [
    "getty@tty1.service", "console-getty.service", "systemd-udevd.service",
    "systemd-udev-trigger.service", "systemd-modules-load.service", "sys-kernel-config.mount",
    "sys-kernel-debug.mount", "sys-kernel-tracing.mount", "systemd-firstboot.service",
]


def recipe_hash() -> str:
    """A short hash of this file: the image tag changes exactly when the recipe does."""
    return hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:12]


def image_ref() -> str:
    return f"{REPOSITORY}:{recipe_hash()}"


def exists(ref: str) -> bool:
    return bool(output(["docker", "images", "-q", ref]))


def _chroot(root: Path, *cmd: str) -> None:
    run(["chroot", str(root), *cmd])


def _customise(root: Path) -> None:
    (root / "etc/apt/sources.list").unlink(missing_ok=True)
    (root / "etc/apt/sources.list.d/debian.sources").write_text(DEBIAN_SOURCES)
    (root / "etc/apt/apt.conf.d/00querygpt-lab-proxy").write_text(APT_PROXY)
    (root / "etc/machine-id").write_text("")
    unit = root / "etc/systemd/system/lab-ssh-hostkeys.service"
    unit.write_text(HOSTKEYS_UNIT)
    wants = root / "etc/systemd/system/multi-user.target.wants"
    wants.mkdir(parents=True, exist_ok=True)
    (wants / unit.name).symlink_to("/etc/systemd/system/lab-ssh-hostkeys.service")
    for key in (root / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    for name in MASKED_UNITS:
        target = root / "etc/systemd/system" / name
        target.unlink(missing_ok=True)
        target.symlink_to("/dev/null")
    # The cloud AMI's default user: passwordless sudo, key injected at boot by the lab.
    _chroot(root, "useradd", "--create-home", "--shell", "/bin/bash", "--groups", "sudo", "admin")
    sudoers = root / "etc/sudoers.d/90-cloud-init-users"
    sudoers.write_text("admin ALL=(ALL) NOPASSWD:ALL\n")
    sudoers.chmod(0o440)
    # Keep the package lists (a cloud AMI ships with them, so apt can install at first boot);
    # drop only the downloaded .debs.
    run(["rm", "-rf", str(root / "var/cache/apt/archives")])
    (root / "var/cache/apt/archives/partial").mkdir(parents=True)


def build(force: bool = False) -> str:
    """Build the image unless one for this recipe exists; return its reference."""
    ref = image_ref()
    if exists(ref) and not force:
        print(f"lab image {ref} is up to date")
        run(["docker", "tag", ref, f"{REPOSITORY}:latest"], quiet=True)
        return ref
    if not shutil.which("debootstrap"):
        raise LabError("debootstrap is missing: run `bin/lab bootstrap` (apt-get install debootstrap)")
    aptcache.ensure()
    with tempfile.TemporaryDirectory(prefix="qgpt-rootfs-") as tmp:
        root = Path(tmp) / "rootfs"
        env = dict(os.environ, http_proxy=aptcache.proxy_url())
        run(
            ["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}", SUITE,
             str(root), MIRROR],
            env=env,
        )
        _customise(root)
        tar = subprocess.Popen(["tar", "-C", str(root), "--numeric-owner", "-c", "."],
                               stdout=subprocess.PIPE)
        imported = subprocess.run(
            ["docker", "import", "--change", 'CMD ["/lib/systemd/systemd"]',
             "--change", f"LABEL {LABEL}=image", "-", ref],
            stdin=tar.stdout, check=False,
        )
        if tar.wait() != 0 or imported.returncode != 0:
            raise LabError("importing the rootfs into docker failed (see the output above)")
    run(["docker", "tag", ref, f"{REPOSITORY}:latest"], quiet=True)
    print(f"built lab image {ref}")
    return ref
