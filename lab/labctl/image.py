"""The lab's base image: Debian 13 (trixie) with systemd, built offline from a debootstrap rootfs.

No registry is reachable, so the image is built from Debian packages and imported with
`docker import`. It is tagged with a hash of this recipe, so an unchanged recipe reuses the
image and any edit here produces a new one. It mirrors what a Debian 13 cloud AMI gives:
systemd, sshd, sudo, python3 and an `admin` user whose key is injected at boot.

The same recipe on Debian 12 (bookworm, `bin/lab image --suite bookworm`) gives the host that
the Debian upgrade runbook's scenario starts from (roles/common/molecule/upgrade_debian): a
fleet deployed before this release. Nothing else runs on it; preflight refuses Debian 12.
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
# Each suite's image repository: the lab's release, and the one its upgrade runbook starts from.
REPOSITORIES = {SUITE: REPOSITORY, "bookworm": "querygpt-lab/debian12"}
MIRROR = "http://deb.debian.org/debian"

PACKAGES = [
    "systemd", "systemd-sysv", "dbus", "python3", "python3-apt", "openssh-server", "sudo",
    "ca-certificates", "iproute2", "iputils-ping", "procps", "netbase", "curl", "less",
]

# deb822, as Debian's cloud images ship them (debootstrap writes a one-line sources.list).
DEBIAN_SOURCES = """\
Types: deb
URIs: {mirror}
Suites: {suite} {suite}-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: {suite}-security
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


def recipe_hash(suite: str = SUITE) -> str:
    """A short hash of this file and the suite: the image tag changes exactly when the recipe does."""
    return hashlib.sha256(Path(__file__).read_bytes() + suite.encode()).hexdigest()[:12]


def repository(suite: str = SUITE) -> str:
    if suite not in REPOSITORIES:
        raise LabError(f"no lab image for Debian suite {suite!r}: expected one of {', '.join(REPOSITORIES)}")
    return REPOSITORIES[suite]


def image_ref(suite: str = SUITE) -> str:
    return f"{repository(suite)}:{recipe_hash(suite)}"


def exists(ref: str) -> bool:
    return bool(output(["docker", "images", "-q", ref]))


def _chroot(root: Path, *cmd: str) -> None:
    run(["chroot", str(root), *cmd])


def _customise(root: Path, suite: str) -> None:
    (root / "etc/apt/sources.list").unlink(missing_ok=True)
    (root / "etc/apt/sources.list.d/debian.sources").write_text(DEBIAN_SOURCES.format(mirror=MIRROR, suite=suite))
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


def build(force: bool = False, suite: str = SUITE) -> str:
    """Build the suite's image unless one for this recipe exists; return its reference."""
    ref = image_ref(suite)
    if exists(ref) and not force:
        print(f"lab image {ref} is up to date")
        run(["docker", "tag", ref, f"{repository(suite)}:latest"], quiet=True)
        return ref
    if not shutil.which("debootstrap"):
        raise LabError("debootstrap is missing: run `bin/lab bootstrap` (apt-get install debootstrap)")
    aptcache.ensure()
    with tempfile.TemporaryDirectory(prefix="qgpt-rootfs-") as tmp:
        root = Path(tmp) / "rootfs"
        env = dict(os.environ, http_proxy=aptcache.proxy_url())
        run(
            ["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}", suite,
             str(root), MIRROR],
            env=env,
        )
        _customise(root, suite)
        tar = subprocess.Popen(["tar", "-C", str(root), "--numeric-owner", "-c", "."],
                               stdout=subprocess.PIPE)
        imported = subprocess.run(
            ["docker", "import", "--change", 'CMD ["/lib/systemd/systemd"]',
             "--change", f"LABEL {LABEL}=image", "-", ref],
            stdin=tar.stdout, check=False,
        )
        if tar.wait() != 0 or imported.returncode != 0:
            raise LabError("importing the rootfs into docker failed (see the output above)")
    run(["docker", "tag", ref, f"{repository(suite)}:latest"], quiet=True)
    print(f"built lab image {ref}")
    return ref
