#!/usr/bin/python
# ruff: noqa: E402 - Ansible's module layout puts DOCUMENTATION/EXAMPLES/RETURN before the imports.
"""Ansible module: find the block device of an EBS data volume by its serial, and read its filesystem.

Terraform attaches each data volume with the API device name /dev/sdf, a name that does not
exist on Nitro instances: the guest sees an NVMe disk (/dev/nvme1n1, or nvme2n1: the order
is not stable) whose serial is the volume id without its dash. The qdrant and ollama roles
both need that lookup, so it lives here once. The lookup (`find_by_serial`) is a plain
function over lsblk's JSON, sysfs and /dev/disk/by-id, so the project's tests drive it with
fake data; main() is the thin Ansible wrapper. Read-only: it never formats or mounts.
"""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: block_device_by_serial
short_description: Find a data volume's block device by its serial (an EBS volume id) and read its filesystem
description:
  - With I(serial), finds the whole disk whose serial is I(serial). An EBS volume id
    (C(vol-0abc...)) may be given as is; its dash is dropped, as the NVMe controller of a Nitro
    instance reports it (C(vol0abc...)), which C(lsblk -dno PATH,SERIAL) and
    C(/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_vol0abc...) show.
  - Sources, in order, until one names the disk - lsblk's SERIAL column, the disks' serial in
    sysfs (C(/sys/block/<disk>/device/serial)), the C(/dev/disk/by-id) links of EBS volumes.
  - With I(path) instead, only checks that the path is a whole disk.
  - Either way, returns the disk's filesystem type and UUID as C(blkid -p) probes them (no
    cache), so a role formats only a disk without a filesystem and mounts it by UUID.
  - Fails, naming I(var_name), when no disk (or more than one) has the serial, when the disk
    is partitioned (a data volume is one filesystem on the whole disk), or when it is mounted
    somewhere other than I(mount_path).
  - Xen instance types (t2, m4, c4, r4, g3, p2, p3) give EBS volumes no serial, so the lookup
    fails there by design; pass the device (C(/dev/xvdf)) as I(path) instead.
version_added: "1.0.0"
author: QueryGPT infrastructure
options:
  serial:
    description: The disk's serial, or an EBS volume id (C(vol-...)). Mutually exclusive with I(path).
    type: str
  path:
    description: An explicit device path (C(/dev/xvdf)). Mutually exclusive with I(serial).
    type: str
  mount_path:
    description: Where the role mounts the disk; a disk mounted anywhere else is refused.
    type: str
  var_name:
    description: The role variable the serial or path came from, named in failure messages.
    type: str
    default: data volume
  timeout:
    description: Seconds to wait for the disk to appear (an attachment may still be in progress after boot).
    type: int
    default: 60
attributes:
  check_mode:
    support: full
    description: Only reads; runs the same in check mode.
  diff_mode:
    support: none
"""

EXAMPLES = r"""
- name: Find Qdrant's data volume
  block_device_by_serial:
    serial: vol-0123456789abcdef0
    mount_path: /var/lib/qdrant
    var_name: qdrant_data_volume_id
  register: __qdrant_volume

- name: Mount it by UUID (after creating its filesystem if it had none)
  ansible.posix.mount:
    path: /var/lib/qdrant
    src: "UUID={{ __qdrant_volume.uuid }}"
    fstype: ext4
    state: mounted
"""

RETURN = r"""
device:
  description: The disk's path.
  returned: success
  type: str
  sample: /dev/nvme1n1
serial:
  description: The serial looked for (the volume id without its dash); "" with I(path).
  returned: success
  type: str
  sample: vol0123456789abcdef0
source:
  description: Where the disk was found (lsblk, sysfs, by-id or path).
  returned: success
  type: str
  sample: lsblk
fstype:
  description: Filesystem type on the disk, "" when it has none.
  returned: success
  type: str
  sample: ext4
uuid:
  description: Filesystem UUID, "" when it has none.
  returned: success
  type: str
  sample: 2f1c3c5e-8a0d-4f5e-9b1d-0c7f1b6e2a11
mountpoints:
  description: Where the disk is mounted now.
  returned: success
  type: list
  elements: str
  sample: [/var/lib/qdrant]
"""

import glob
import json
import os
import re
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

EBS_VOLUME_ID = re.compile(r"^vol-([0-9a-f]{8}|[0-9a-f]{17})$")
BY_ID_PREFIX = "nvme-Amazon_Elastic_Block_Store_"
LSBLK_COLUMNS = "PATH,SERIAL,TYPE,FSTYPE,UUID,PTTYPE,MOUNTPOINT"
XEN_HINT = (
    "On a Xen instance type (t2, m4, c4, r4, g3, p2, p3) EBS volumes carry no serial: set the "
    "role's *_data_device to the device (/dev/xvdf) instead."
)


class DeviceError(Exception):
    """A failure the operator must act on; the message names the variable and what to check."""


def normalize_serial(value: str) -> str:
    """The serial a disk reports: an EBS volume id loses its dash (vol-0abc -> vol0abc)."""
    value = (value or "").strip()
    if EBS_VOLUME_ID.match(value):
        return value.replace("-", "", 1)
    return value


def disks(lsblk_doc: Dict[str, Any]) -> List[Dict[str, Any]]:
    """Whole disks of `lsblk --json --output PATH,SERIAL,...` (tree form), each with its children."""
    found = []
    for dev in lsblk_doc.get("blockdevices") or []:
        if dev.get("type") == "disk":
            found.append(dev)
    return found


def _mountpoints(dev: Dict[str, Any]) -> List[str]:
    """Mount points of a device and its partitions (lsblk's MOUNTPOINT, or MOUNTPOINTS)."""
    points = [dev.get("mountpoint")] + list(dev.get("mountpoints") or [])
    for child in dev.get("children") or []:
        points += _mountpoints(child)
    return sorted({p for p in points if p})


def sysfs_serials(sysfs_root: str = "/sys") -> Dict[str, str]:
    """{/dev/<disk>: serial} from /sys/block/<disk>/device/serial (NVMe, SCSI) or /sys/block/<disk>/serial."""
    serials = {}
    for block in sorted(glob.glob(os.path.join(sysfs_root, "block", "*"))):
        for candidate in (os.path.join(block, "device", "serial"), os.path.join(block, "serial")):
            try:
                with open(candidate, encoding="utf-8", errors="replace") as handle:
                    serial = handle.read().strip()
            except OSError:
                continue
            if serial:
                serials["/dev/" + os.path.basename(block)] = serial
                break
    return serials


def by_id_links(by_id_dir: str = "/dev/disk/by-id") -> Dict[str, str]:
    """{serial: /dev/<disk>} of the EBS links udev makes (nvme-Amazon_Elastic_Block_Store_<serial>)."""
    links = {}
    for link in sorted(glob.glob(os.path.join(by_id_dir, BY_ID_PREFIX + "*"))):
        name = os.path.basename(link)[len(BY_ID_PREFIX):]
        if not name.isalnum():  # -part1 (partitions), -ns-1 and _1 (namespaces)
            continue
        links[name] = os.path.realpath(link)
    return links


def find_by_serial(
    serial: str,
    lsblk_doc: Dict[str, Any],
    sysfs: Optional[Dict[str, str]] = None,
    links: Optional[Dict[str, str]] = None,
    var_name: str = "data volume",
) -> Tuple[Dict[str, Any], str]:
    """(lsblk entry of the one disk whose serial is `serial`, the source that named it)."""
    wanted = normalize_serial(serial)
    if not wanted:
        raise DeviceError("%s: empty serial" % var_name)
    by_path = {d.get("path"): d for d in disks(lsblk_doc)}
    sources: Sequence[Tuple[str, List[str]]] = (
        ("lsblk", [p for p, d in by_path.items() if (d.get("serial") or "").strip() == wanted]),
        ("sysfs", [p for p, s in (sysfs or {}).items() if s == wanted and p in by_path]),
        ("by-id", [p for s, p in (links or {}).items() if s == wanted and p in by_path]),
    )
    for source, paths in sources:
        if len(paths) > 1:
            raise DeviceError(
                "%s: more than one disk has serial %s (%s): refusing to guess" % (var_name, wanted, ", ".join(sorted(paths)))
            )
        if paths:
            return by_path[paths[0]], source
    seen = ", ".join(
        "%s (%s)" % (p, (d.get("serial") or (sysfs or {}).get(p) or "no serial").strip()) for p, d in sorted(by_path.items())
    )
    volume = "EBS volume %s" % serial if EBS_VOLUME_ID.match(serial.strip()) else "serial %s" % serial
    raise DeviceError(
        "%s: no disk of this host has serial %s (%s). Is the volume attached to this instance "
        "(aws ec2 describe-volumes --volume-ids %s)? Disks seen: %s. %s"
        % (var_name, wanted, volume, serial.strip(), seen or "none", XEN_HINT)
    )


def check_usable(dev: Dict[str, Any], mount_path: str = "", var_name: str = "data volume") -> None:
    """A data volume is one filesystem on a whole, unpartitioned disk, mounted only where the role mounts it."""
    path = dev.get("path")
    if dev.get("children") or dev.get("pttype"):
        raise DeviceError(
            "%s: %s holds a partition table (%s): a data volume is one filesystem on the whole disk, and "
            "a partitioned disk may be the root disk or another volume; refusing to use it"
            % (var_name, path, ", ".join(c.get("path", "?") for c in dev.get("children") or []) or dev.get("pttype"))
        )
    elsewhere = [p for p in _mountpoints(dev) if p != (mount_path or "").rstrip("/")]
    if elsewhere:
        raise DeviceError(
            "%s: %s is mounted at %s%s; refusing to use a disk that is in use elsewhere"
            % (var_name, path, ", ".join(elsewhere), " (the role mounts it at %s)" % mount_path if mount_path else "")
        )


def parse_blkid(output: str) -> Tuple[str, str]:
    """(TYPE, UUID) of `blkid -p -o export`; ("", "") for a disk without a filesystem."""
    values = dict(line.split("=", 1) for line in output.splitlines() if "=" in line)
    return values.get("TYPE", ""), values.get("UUID", "")


def locate(
    run: Callable[[List[str]], Tuple[int, str, str]],
    lsblk: str,
    blkid: str,
    serial: str = "",
    path: str = "",
    mount_path: str = "",
    var_name: str = "data volume",
    timeout: float = 0,
    sysfs_root: str = "/sys",
    by_id_dir: str = "/dev/disk/by-id",
    sleep: Callable[[float], None] = time.sleep,
) -> Dict[str, Any]:
    """The module's work, with the commands behind `run` (argv -> rc, stdout, stderr)."""
    deadline = time.monotonic() + timeout
    while True:
        argv = [lsblk, "--json", "--output", LSBLK_COLUMNS] + ([path] if path else [])
        rc, out, err = run(argv)
        try:
            doc = json.loads(out) if rc == 0 else {}
        except ValueError:
            raise DeviceError("%s: unreadable output of %s: %r" % (var_name, " ".join(argv), out[:200])) from None
        try:
            if path:
                found = [d for d in disks(doc) if d.get("path") == path]
                if not found:
                    raise DeviceError(
                        "%s: %s is not a disk of this host (%s)" % (var_name, path, (err or "lsblk lists no such disk").strip())
                    )
                dev, source = found[0], "path"
            else:
                dev, source = find_by_serial(serial, doc, sysfs_serials(sysfs_root), by_id_links(by_id_dir), var_name)
            break
        except DeviceError:
            if time.monotonic() >= deadline:
                raise
            sleep(2)
    check_usable(dev, mount_path, var_name)
    rc, out, err = run([blkid, "-p", "-o", "export", dev["path"]])
    if rc not in (0, 2):  # 2: nothing found, i.e. no filesystem yet
        raise DeviceError("%s: blkid -p %s failed: %s" % (var_name, dev["path"], (err or out).strip()))
    fstype, uuid = parse_blkid(out) if rc == 0 else ("", "")
    return {
        "device": dev["path"],
        "serial": normalize_serial(serial) if serial else "",
        "source": source,
        "fstype": fstype,
        "uuid": uuid,
        "mountpoints": _mountpoints(dev),
    }


def main() -> None:
    from ansible.module_utils.basic import AnsibleModule

    module = AnsibleModule(
        argument_spec=dict(
            serial=dict(type="str"),
            path=dict(type="str"),
            mount_path=dict(type="str", default=""),
            var_name=dict(type="str", default="data volume"),
            timeout=dict(type="int", default=60),
        ),
        mutually_exclusive=[("serial", "path")],
        required_one_of=[("serial", "path")],
        supports_check_mode=True,
    )
    params = module.params

    def run(argv: List[str]) -> Tuple[int, str, str]:
        rc, out, err = module.run_command(argv, environ_update={"LC_ALL": "C"})
        return rc, out, err

    try:
        result = locate(
            run,
            module.get_bin_path("lsblk", required=True),
            module.get_bin_path("blkid", required=True),
            serial=params["serial"] or "",
            path=params["path"] or "",
            mount_path=params["mount_path"] or "",
            var_name=params["var_name"],
            timeout=params["timeout"],
        )
    except DeviceError as exc:
        module.fail_json(msg=str(exc))
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()
