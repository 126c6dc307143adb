# PostgreSQL: the application's state (documents, collections, query history). A primary and
# a streaming hot standby in two zones (instance i in zone i mod az_count); which one is the
# primary is PostgreSQL's state, not Terraform's: the first in launch order bootstraps as the
# primary, and after a failover (playbooks/runbooks/failover_postgres.yml) the roles follow
# what the servers report (roles/postgresql). The cluster lives on its own encrypted gp3
# volume that outlives the instance, exactly like Qdrant's (vectordb.tf: zone from the
# subnet, prevent_destroy, the old instance stopped before the detach).

resource "aws_instance" "postgres" {
  count = var.postgres_count

  ami                         = local.ami_id
  instance_type               = var.instance_types.postgres
  subnet_id                   = aws_subnet.private[count.index % var.az_count].id
  vpc_security_group_ids      = [aws_security_group.tier["postgres"].id]
  iam_instance_profile        = aws_iam_instance_profile.tier["postgres"].name
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
    Name = "${local.name}-postgres-${count.index + 1}"
    Role = "postgres"
  }

  lifecycle {
    # A newer AMI must not replace a running host; Ansible patches in place.
    ignore_changes = [ami]
  }
}

resource "aws_ebs_volume" "postgres_data" {
  # No EBS backup plan: backups are pgBackRest's, in the backups bucket (docs/architecture.md).
  count = var.postgres_count

  # The subnet the instance is placed in (the same index expression), not the instance.
  availability_zone = aws_subnet.private[count.index % var.az_count].availability_zone
  type              = "gp3"
  size              = var.postgres_data_volume_size_gb
  encrypted         = true
  kms_key_id        = aws_kms_key.main.arn

  tags = {
    Name = "${local.name}-postgres-${count.index + 1}-data"
    Role = "postgres"
  }

  lifecycle {
    # The application's state lives here: a plan that would destroy it fails instead
    # (docs/terraform.md, "Data volumes").
    prevent_destroy = true
  }
}

resource "aws_volume_attachment" "postgres_data" {
  count = var.postgres_count

  # Found by the guest through its volume id (the NVMe serial), as vectordb.tf explains.
  device_name = "/dev/sdf"
  volume_id   = aws_ebs_volume.postgres_data[count.index].id
  instance_id = aws_instance.postgres[count.index].id

  # PostgreSQL shuts down cleanly with the instance before the volume is detached.
  stop_instance_before_detaching = true
}
