# Ollama on GPU instances. Models live on their own gp3 volume (mounted by the ollama
# role at OLLAMA_MODELS), so an instance replacement or a resize of the root volume does
# not re-download tens of GiB. var.ollama_ami_id can point at an AMI with the NVIDIA
# driver baked in; otherwise the plain Debian 13 AMI is used. The volume survives an
# instance replacement the same way as Qdrant's (vectordb.tf, docs/terraform.md).

resource "aws_instance" "ollama" {
  count = var.ollama_count

  ami                         = local.ollama_ami_id
  instance_type               = var.instance_types.ollama
  subnet_id                   = aws_subnet.private[count.index % var.az_count].id
  vpc_security_group_ids      = [aws_security_group.tier["ollama"].id]
  iam_instance_profile        = aws_iam_instance_profile.tier["ollama"].name
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
    Name = "${local.name}-ollama-${count.index + 1}"
    Role = "ollama"
  }

  lifecycle {
    # A newer AMI must not replace a running host; Ansible patches in place.
    ignore_changes = [ami]
  }
}

resource "aws_ebs_volume" "ollama_models" {
  # No EBS backup plan: models are re-downloadable with pinned digests.
  count = var.ollama_count

  # The subnet the instance is placed in (the same index expression), not the instance:
  # a replaced instance's zone is unknown at plan time and would replace the volume.
  availability_zone = aws_subnet.private[count.index % var.az_count].availability_zone
  type              = "gp3"
  size              = var.ollama_models_volume_size_gb
  encrypted         = true
  kms_key_id        = aws_kms_key.main.arn

  tags = {
    Name = "${local.name}-ollama-${count.index + 1}-models"
    Role = "ollama"
  }

  lifecycle {
    # Re-downloading the models takes long; a plan that would destroy the volume fails.
    prevent_destroy = true
  }
}

resource "aws_volume_attachment" "ollama_models" {
  count = var.ollama_count

  # Appears as an NVMe device on Nitro instances; the role finds it by the volume id
  # (the NVMe serial, in the inventory's block device mapping for /dev/sdf), not by this
  # name.
  device_name = "/dev/sdf"
  volume_id   = aws_ebs_volume.ollama_models[count.index].id
  instance_id = aws_instance.ollama[count.index].id

  # Stop the old instance before detaching when it is replaced (see vectordb.tf).
  stop_instance_before_detaching = true
}
