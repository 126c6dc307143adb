"""The data volumes (Qdrant's storage, Ollama's models) outlive their instances.

A replaced instance has an availability zone that is "known after apply"; a volume whose
zone came from the instance would then be planned for replacement (availability_zone
forces a new volume), i.e. destroyed with the data on it. The zone must come from the
subnet the instance is placed in, the volume must refuse destruction, and the attachment
must detach the same volume cleanly from the old instance and attach it to the new one.
"""

from __future__ import annotations

import json
import re

import pytest

from terraform_helpers import expr

# (instance, volume, attachment) resource names, one triple per tier with a data volume.
DATA_VOLUMES = [("qdrant", "qdrant_data", "qdrant_data"), ("ollama", "ollama_models", "ollama_models"),
                ("postgres", "postgres_data", "postgres_data")]
DEVICE_NAME = "/dev/sdf"  # the API name; Ansible finds the NVMe device by volume id


def _lifecycle(body: dict) -> dict:
    blocks = body.get("lifecycle", [])
    assert len(blocks) <= 1
    return blocks[0] if blocks else {}


def test_every_data_volume_is_covered(tf) -> None:
    assert set(tf.resources("aws_ebs_volume")) == {volume for _, volume, _ in DATA_VOLUMES}
    assert set(tf.resources("aws_volume_attachment")) == {attachment for _, _, attachment in DATA_VOLUMES}


@pytest.mark.parametrize("instance, volume, attachment", DATA_VOLUMES, ids=[v for _, v, _ in DATA_VOLUMES])
def test_volume_zone_comes_from_the_instances_subnet(tf, instance: str, volume: str, attachment: str) -> None:
    instance_body = tf.resources("aws_instance")[instance]
    volume_body = tf.resources("aws_ebs_volume")[volume]
    subnet = expr(instance_body["subnet_id"])
    assert subnet and subnet.endswith(".id"), instance_body["subnet_id"]
    expected = subnet[: -len(".id")] + ".availability_zone"
    assert expr(volume_body["availability_zone"]) == expected, (
        f"aws_ebs_volume.{volume}: availability_zone = {volume_body['availability_zone']!r}, want ${{{expected}}} "
        "(an instance's zone is unknown while it is replaced, which would replace the volume)"
    )
    assert expr(volume_body["count"]) == expr(instance_body["count"]), f"aws_ebs_volume.{volume}: one per instance"
    text = json.dumps(volume_body)
    assert "aws_instance." not in text, f"aws_ebs_volume.{volume} must not depend on the instance at all"


@pytest.mark.parametrize("instance, volume, attachment", DATA_VOLUMES, ids=[v for _, v, _ in DATA_VOLUMES])
def test_volume_refuses_destruction(tf, instance: str, volume: str, attachment: str) -> None:
    lifecycle = _lifecycle(tf.resources("aws_ebs_volume")[volume])
    assert lifecycle.get("prevent_destroy") is True, f"aws_ebs_volume.{volume}: lifecycle {{ prevent_destroy = true }}"
    assert "create_before_destroy" not in lifecycle, "a volume cannot be attached twice; never create before destroy"


@pytest.mark.parametrize("instance, volume, attachment", DATA_VOLUMES, ids=[v for _, v, _ in DATA_VOLUMES])
def test_attachment_moves_the_same_volume_cleanly(tf, instance: str, volume: str, attachment: str) -> None:
    """On an instance replacement the attachment is replaced too (instance_id changes):
    stop the old instance (a clean shutdown unmounts the file system), detach, terminate,
    create the new instance, attach the same volume. skip_destroy would leave the detach to
    the termination, and a lone attachment replacement would then fail on a volume still in
    use; force_detach risks the data."""
    body = tf.resources("aws_volume_attachment")[attachment]
    where = f"aws_volume_attachment.{attachment}"
    assert body["device_name"] == DEVICE_NAME, where
    assert expr(body["volume_id"]) == f"aws_ebs_volume.{volume}[count.index].id", where
    assert expr(body["instance_id"]) == f"aws_instance.{instance}[count.index].id", where
    assert expr(body["count"]) == expr(tf.resources("aws_instance")[instance]["count"]), where
    assert body.get("stop_instance_before_detaching") is True, f"{where}: stop_instance_before_detaching = true"
    assert not body.get("skip_destroy"), f"{where}: skip_destroy would not detach the volume"
    assert not body.get("force_detach"), f"{where}: force_detach can corrupt the file system"
    assert "create_before_destroy" not in _lifecycle(body), where


@pytest.mark.parametrize("instance, volume, attachment", DATA_VOLUMES, ids=[v for _, v, _ in DATA_VOLUMES])
def test_instance_does_not_depend_on_its_volume(tf, instance: str, volume: str, attachment: str) -> None:
    """Nothing about the volume or its attachment may force the instance's replacement."""
    body = tf.resources("aws_instance")[instance]
    text = json.dumps(body)
    assert not re.search(r"aws_(ebs_volume|volume_attachment)\.", text), f"aws_instance.{instance} refers to its volume"
    assert not body.get("ebs_block_device"), f"aws_instance.{instance}: inline ebs_block_device would fight the attachment"
    assert "replace_triggered_by" not in _lifecycle(body), f"aws_instance.{instance}"
