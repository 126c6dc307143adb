# Qdrant: one node for now (docs/architecture.md), with its storage on a separate encrypted
# gp3 volume. Qdrant needs block storage (not NFS/EFS); the data volume outlives the
# instance, and consistent backups are Qdrant snapshots in the backups bucket (the
# backup role), not EBS snapshots.
#
# How the volume survives an instance replacement (docs/terraform.md, "Data volumes"):
# its zone comes from the subnet, never from the instance (a replaced instance's zone is
# unknown at plan time, and availability_zone forces a new volume); prevent_destroy makes
# any plan that would still destroy it fail; the attachment stops the old instance before
# detaching, so the same volume moves to the new instance with a clean file system.

resource "aws_instance" "qdrant" {
  count = var.qdrant_count

  ami                         = local.ami_id
  instance_type               = var.instance_types.qdrant
  subnet_id                   = aws_subnet.private[count.index % var.az_count].id
  vpc_security_group_ids      = [aws_security_group.tier["qdrant"].id]
  iam_instance_profile        = aws_iam_instance_profile.tier["qdrant"].name
  key_name                    = var.ssh_key_name
  associate_public_ip_address = false
  ebs_optimized               = true
  monitoring                  = true

  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
  }

  root_block_device {
    volume_type           = "gp3"
    volume_size           = var.root_volume_size_gb
    encrypted             = true
    kms_key_id            = aws_kms_key.main.arn
    delete_on_termination = true
  }

  tags = {
    Name = "${local.name}-qdrant-${count.index + 1}"
    Role = "qdrant"
  }

  lifecycle {
    # A newer AMI must not replace a running host; Ansible patches in place.
    ignore_changes = [ami]
  }
}

resource "aws_ebs_volume" "qdrant_data" {
  # No EBS backup plan: backups are Qdrant snapshots in the backups bucket (backup role).
  count = var.qdrant_count

  # The subnet the instance is placed in (the same index expression), not the instance.
  availability_zone = aws_subnet.private[count.index % var.az_count].availability_zone
  type              = "gp3"
  size              = var.qdrant_data_volume_size_gb
  iops              = var.qdrant_data_volume_iops
  throughput        = var.qdrant_data_volume_throughput
  encrypted         = true
  kms_key_id        = aws_kms_key.main.arn

  tags = {
    Name = "${local.name}-qdrant-${count.index + 1}-data"
    Role = "qdrant"
  }

  lifecycle {
    # The vectors live here. Lowering qdrant_count, a subnet or zone change, a new KMS
    # key: each would destroy the volume, so the plan fails instead. To really remove it
    # (tearing staging down), see docs/terraform.md, "Data volumes".
    prevent_destroy = true
  }
}

resource "aws_volume_attachment" "qdrant_data" {
  count = var.qdrant_count

  # The API name. On Nitro instances the guest sees an NVMe device instead (nvme1n1, in
  # no fixed order); Ansible finds it by volume id: the inventory's block device mapping
  # for /dev/sdf carries ebs.volume_id, which is the NVMe serial number.
  device_name = "/dev/sdf"
  volume_id   = aws_ebs_volume.qdrant_data[count.index].id
  instance_id = aws_instance.qdrant[count.index].id

  # A replaced instance replaces this attachment (instance_id forces it). Stopping the
  # old instance first shuts Qdrant down and unmounts the file system before the detach;
  # detaching a mounted volume from a running instance would hang in "busy" or lose
  # writes. The provider never restarts the instance: it is about to be terminated.
  # Not skip_destroy (it leaves the detach to the termination, and a lone attachment
  # replacement would then fail on a volume still in use) and not force_detach (data loss).
  stop_instance_before_detaching = true
}
