"""plugins/modules/block_device_by_serial.py: the data volume's disk, found by its EBS volume id.

There is no NVMe disk here, so the lookup is driven with what a Nitro instance shows: lsblk's
JSON, a fake /sys/block tree and fake /dev/disk/by-id links (shapes taken from an r6i with
its root volume on nvme0n1 and the data volume on nvme1n1). The last tests run the module
through Ansible with fake `lsblk` and `blkid` executables first on PATH.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
MODULE_PATH = REPO / "plugins" / "modules" / "block_device_by_serial.py"
ANSIBLE = Path(sys.executable).with_name("ansible")

_spec = importlib.util.spec_from_file_location("block_device_by_serial", MODULE_PATH)
assert _spec and _spec.loader
bdev = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bdev)

VOLUME = "vol-0123456789abcdef0"
SERIAL = "vol0123456789abcdef0"
ROOT_SERIAL = "vol0fedcba9876543210"


def lsblk(*extra: dict, data_serial: str | None = SERIAL, data: dict | None = None) -> dict:
    """lsblk --json --output PATH,SERIAL,TYPE,FSTYPE,UUID,PTTYPE,MOUNTPOINT of a Nitro instance."""
    root = {"path": "/dev/nvme0n1", "serial": ROOT_SERIAL, "type": "disk", "fstype": None, "uuid": None,
            "pttype": "gpt", "mountpoint": None, "children": [
                {"path": "/dev/nvme0n1p1", "serial": None, "type": "part", "fstype": "ext4",
                 "uuid": "6f0d5b7e-1c1e-4d8a-9c66-0a1b2c3d4e5f", "pttype": "gpt", "mountpoint": "/"},
                {"path": "/dev/nvme0n1p15", "serial": None, "type": "part", "fstype": "vfat",
                 "uuid": "ABCD-1234", "pttype": "gpt", "mountpoint": "/boot/efi"}]}
    volume = {"path": "/dev/nvme1n1", "serial": data_serial, "type": "disk", "fstype": None, "uuid": None,
              "pttype": None, "mountpoint": None, **(data or {})}
    loop = {"path": "/dev/loop0", "serial": None, "type": "loop", "fstype": None, "uuid": None, "pttype": None,
            "mountpoint": None}
    return {"blockdevices": [root, volume, loop, *extra]}


def fake_sysfs(tmp_path: Path, serials: dict[str, str]) -> str:
    """/sys/block/<disk>/device/serial as the NVMe driver pads it (20 characters, spaces)."""
    for disk, serial in serials.items():
        path = tmp_path / "sys" / "block" / disk / "device"
        path.mkdir(parents=True)
        (path / "serial").write_text(serial.ljust(20) + "\n")
    (tmp_path / "sys" / "block" / "loop0").mkdir(parents=True, exist_ok=True)
    return str(tmp_path / "sys")


def fake_by_id(tmp_path: Path, links: dict[str, str]) -> str:
    by_id = tmp_path / "by-id"
    by_id.mkdir()
    for name, target in links.items():
        os.symlink(target, by_id / name)
    return str(by_id)


@pytest.mark.parametrize(("given", "serial"), [
    (VOLUME, SERIAL),  # an EBS volume id loses its dash
    (SERIAL, SERIAL),  # a serial stays as it is
    ("vol-0a1b2c3d", "vol0a1b2c3d"),  # the old 8-digit ids too
    ("  " + VOLUME + "\n", SERIAL),
    ("WD-WCC4N1234567", "WD-WCC4N1234567"),  # any other serial is left alone
])
def test_normalize_serial(given, serial):
    assert bdev.normalize_serial(given) == serial


def test_found_by_lsblk_serial():
    dev, source = bdev.find_by_serial(VOLUME, lsblk())
    assert dev["path"] == "/dev/nvme1n1" and source == "lsblk"


def test_the_nvme_order_does_not_matter():
    # after a reboot the data volume may be nvme0n1 and the root disk nvme1n1
    doc = lsblk()
    doc["blockdevices"][0]["path"], doc["blockdevices"][1]["path"] = "/dev/nvme1n1", "/dev/nvme0n1"
    assert bdev.find_by_serial(VOLUME, doc)[0]["path"] == "/dev/nvme0n1"


def test_found_in_sysfs_when_lsblk_has_no_serial(tmp_path):
    # lsblk reads SERIAL from udev; without udev data it is null, sysfs still has it
    sysfs = bdev.sysfs_serials(fake_sysfs(tmp_path, {"nvme0n1": ROOT_SERIAL, "nvme1n1": SERIAL}))
    assert sysfs == {"/dev/nvme0n1": ROOT_SERIAL, "/dev/nvme1n1": SERIAL}
    dev, source = bdev.find_by_serial(VOLUME, lsblk(data_serial=None), sysfs=sysfs)
    assert dev["path"] == "/dev/nvme1n1" and source == "sysfs"


def test_found_by_the_ebs_by_id_link(tmp_path):
    links = bdev.by_id_links(fake_by_id(tmp_path, {
        f"nvme-Amazon_Elastic_Block_Store_{SERIAL}": "/dev/nvme1n1",
        f"nvme-Amazon_Elastic_Block_Store_{SERIAL}-ns-1": "/dev/nvme1n1",
        f"nvme-Amazon_Elastic_Block_Store_{ROOT_SERIAL}-part1": "/dev/nvme0n1p1",
        f"nvme-nvme.1d0f-{SERIAL}-416d617a6f6e-00000001": "/dev/nvme1n1",
    }))
    assert links == {SERIAL: "/dev/nvme1n1"}
    dev, source = bdev.find_by_serial(VOLUME, lsblk(data_serial=None), links=links)
    assert dev["path"] == "/dev/nvme1n1" and source == "by-id"


def test_not_attached_fails_naming_the_variable_the_volume_and_the_xen_way_out():
    with pytest.raises(bdev.DeviceError) as err:
        bdev.find_by_serial("vol-0aaaaaaaaaaaaaaaa", lsblk(), var_name="qdrant_data_volume_id")
    message = str(err.value)
    assert message.startswith("qdrant_data_volume_id: no disk of this host has serial vol0aaaaaaaaaaaaaaaa")
    assert "aws ec2 describe-volumes --volume-ids vol-0aaaaaaaaaaaaaaaa" in message
    assert f"/dev/nvme0n1 ({ROOT_SERIAL})" in message and f"/dev/nvme1n1 ({SERIAL})" in message
    assert "Xen" in message and "/dev/xvdf" in message


def test_xen_disks_have_no_serial_and_are_not_guessed():
    xen = {"blockdevices": [
        {"path": "/dev/xvda", "serial": None, "type": "disk", "pttype": "gpt", "children": [
            {"path": "/dev/xvda1", "type": "part", "mountpoint": "/"}]},
        {"path": "/dev/xvdf", "serial": None, "type": "disk", "pttype": None}]}
    with pytest.raises(bdev.DeviceError, match="no disk of this host has serial"):
        bdev.find_by_serial(VOLUME, xen)


def test_two_disks_with_the_serial_are_refused():
    twin = {"path": "/dev/nvme2n1", "serial": SERIAL, "type": "disk", "pttype": None}
    with pytest.raises(bdev.DeviceError, match="more than one disk has serial"):
        bdev.find_by_serial(VOLUME, lsblk(twin))


def test_partitions_and_the_serial_of_a_partition_never_match():
    part_only = {"blockdevices": [{"path": "/dev/nvme1n1p1", "serial": SERIAL, "type": "part"}]}
    with pytest.raises(bdev.DeviceError):
        bdev.find_by_serial(VOLUME, part_only)


def test_a_partitioned_disk_is_refused():
    # e.g. the root volume's id given by mistake: never format a disk with a partition table
    root = lsblk()["blockdevices"][0]
    with pytest.raises(bdev.DeviceError, match="holds a partition table"):
        bdev.check_usable(root, "/var/lib/qdrant", "qdrant_data_volume_id")


def test_mounted_elsewhere_is_refused_mounted_at_the_mount_path_is_fine():
    dev = lsblk(data={"fstype": "ext4", "mountpoint": "/mnt/old"})["blockdevices"][1]
    with pytest.raises(bdev.DeviceError, match="mounted at /mnt/old"):
        bdev.check_usable(dev, "/var/lib/qdrant")
    dev["mountpoint"] = "/var/lib/qdrant"
    bdev.check_usable(dev, "/var/lib/qdrant/")


@pytest.mark.parametrize(("output", "expected"), [
    ('DEVNAME=/dev/nvme1n1\nUUID=2f1c3c5e-8a0d-4f5e-9b1d-0c7f1b6e2a11\nBLOCK_SIZE=4096\nTYPE=ext4\n',
     ("ext4", "2f1c3c5e-8a0d-4f5e-9b1d-0c7f1b6e2a11")),
    ("", ("", "")),
])
def test_parse_blkid(output, expected):
    assert bdev.parse_blkid(output) == expected


class FakeHost:
    """The commands `locate` runs, answered from fake data; records every argv."""

    def __init__(self, docs: list[dict], blkid: tuple[int, str, str] = (2, "", "")):
        self.docs, self.blkid, self.calls = list(docs), blkid, []

    def __call__(self, argv):
        self.calls.append(argv)
        if argv[0] == "lsblk":
            return 0, json.dumps(self.docs.pop(0) if len(self.docs) > 1 else self.docs[0]), ""
        return self.blkid


def test_locate_waits_for_a_volume_still_attaching(tmp_path):
    host = FakeHost([lsblk(data_serial="x"), lsblk(data_serial="x"), lsblk()])
    sleeps = []
    result = bdev.locate(host, "lsblk", "blkid", serial=VOLUME, timeout=60, sysfs_root=str(tmp_path),
                         by_id_dir=str(tmp_path), sleep=sleeps.append)
    assert result["device"] == "/dev/nvme1n1" and len(sleeps) == 2
    assert result == {"device": "/dev/nvme1n1", "serial": SERIAL, "source": "lsblk", "fstype": "", "uuid": "",
                      "mountpoints": []}
    assert host.calls[-1] == ["blkid", "-p", "-o", "export", "/dev/nvme1n1"]


def test_locate_reads_an_existing_filesystem(tmp_path):
    host = FakeHost([lsblk()], blkid=(0, "UUID=2f1c3c5e-8a0d-4f5e-9b1d-0c7f1b6e2a11\nTYPE=xfs\n", ""))
    result = bdev.locate(host, "lsblk", "blkid", serial=VOLUME, sysfs_root=str(tmp_path), by_id_dir=str(tmp_path))
    assert (result["fstype"], result["uuid"]) == ("xfs", "2f1c3c5e-8a0d-4f5e-9b1d-0c7f1b6e2a11")


def test_locate_by_path(tmp_path):
    doc = {"blockdevices": [{"path": "/dev/xvdf", "serial": None, "type": "disk", "pttype": None}]}
    result = bdev.locate(FakeHost([doc]), "lsblk", "blkid", path="/dev/xvdf")
    assert result["device"] == "/dev/xvdf" and result["source"] == "path" and result["serial"] == ""
    part = {"blockdevices": [{"path": "/dev/xvdf1", "type": "part"}]}
    with pytest.raises(bdev.DeviceError, match="ollama_data_device: /dev/xvdf1 is not a disk"):
        bdev.locate(FakeHost([part]), "lsblk", "blkid", path="/dev/xvdf1", var_name="ollama_data_device")


def test_locate_gives_up_after_the_timeout(tmp_path):
    with pytest.raises(bdev.DeviceError, match="no disk of this host has serial"):
        bdev.locate(FakeHost([lsblk(data_serial=None)]), "lsblk", "blkid", serial=VOLUME, timeout=0,
                    sysfs_root=str(tmp_path), by_id_dir=str(tmp_path))


# --- through Ansible, with fake lsblk and blkid -------------------------------------------


def run_module(tmp_path: Path, doc: dict, blkid_out: str, *args: str) -> dict:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (tmp_path / "lsblk.json").write_text(json.dumps(doc))
    (bin_dir / "lsblk").write_text(f"#!/bin/sh\ncat {tmp_path / 'lsblk.json'}\n")
    (bin_dir / "blkid").write_text(f"#!/bin/sh\nprintf '%s' '{blkid_out}'\n[ -n '{blkid_out}' ] || exit 2\n")
    for tool in ("lsblk", "blkid"):
        (bin_dir / tool).chmod(0o755)
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env.update(PATH=f"{bin_dir}:{env['PATH']}", ANSIBLE_LOAD_CALLBACK_PLUGINS="1", ANSIBLE_STDOUT_CALLBACK="json",
               ANSIBLE_CALLBACKS_ENABLED="ansible.builtin.json", ANSIBLE_LOCALHOST_WARNING="0",
               ANSIBLE_CONFIG=str(REPO / "ansible.cfg"))
    proc = subprocess.run(
        [str(ANSIBLE), "localhost", "-c", "local", "-e", f"ansible_python_interpreter={sys.executable}",
         "-m", "block_device_by_serial", "-a", " ".join(args)],
        capture_output=True, text=True, env=env, cwd=REPO, check=False, timeout=120,
    )
    document, _ = json.JSONDecoder().raw_decode(proc.stdout[proc.stdout.index("{"):])
    return document["plays"][0]["tasks"][0]["hosts"]["localhost"]


def test_module_through_ansible_finds_the_volume(tmp_path):
    # ansible.cfg's `library = plugins/modules` makes the module available by its short name
    result = run_module(tmp_path, lsblk(), "UUID=2f1c3c5e-8a0d-4f5e-9b1d-0c7f1b6e2a11\nTYPE=ext4\n",
                        f"serial={VOLUME}", "mount_path=/var/lib/qdrant", "timeout=0")
    assert not result.get("failed"), result
    assert result["changed"] is False
    assert result["device"] == "/dev/nvme1n1" and result["uuid"] == "2f1c3c5e-8a0d-4f5e-9b1d-0c7f1b6e2a11"


def test_module_through_ansible_fails_clearly(tmp_path):
    result = run_module(tmp_path, lsblk(data_serial=None), "", "serial=vol-0aaaaaaaaaaaaaaaa",
                        "var_name=ollama_data_volume_id", "timeout=0")
    assert result["failed"] is True
    assert result["msg"].startswith("ollama_data_volume_id: no disk of this host has serial vol0aaaaaaaaaaaaaaaa")


def test_module_refuses_serial_and_path_together(tmp_path):
    result = run_module(tmp_path, lsblk(), "", f"serial={VOLUME}", "path=/dev/xvdf")
    assert result["failed"] is True and "mutually exclusive" in result["msg"]
