# Qdrant: one node for now (ARCHITECTURE.md), with its storage on a separate encrypted
# gp3 volume. Qdrant needs block storage (not NFS/EFS); the data volume outlives the
# instance, and consistent backups are Qdrant snapshots in the backups bucket (the
# backup role), not EBS snapshots.

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

  availability_zone = aws_instance.qdrant[count.index].availability_zone
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
}

resource "aws_volume_attachment" "qdrant_data" {
  count = var.qdrant_count

  device_name = "/dev/sdf"
  volume_id   = aws_ebs_volume.qdrant_data[count.index].id
  instance_id = aws_instance.qdrant[count.index].id
}
