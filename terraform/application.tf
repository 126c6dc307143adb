# Backend (FastAPI) instances, spread over the AZs: instance i in private subnet i % az_count.

resource "aws_instance" "backend" {
  count = var.backend_count

  ami                         = local.ami_id
  instance_type               = var.instance_types.backend
  subnet_id                   = aws_subnet.private[count.index % var.az_count].id
  vpc_security_group_ids      = [aws_security_group.tier["backend"].id]
  iam_instance_profile        = aws_iam_instance_profile.tier["backend"].name
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
    Name = "${local.name}-backend-${count.index + 1}"
    Role = "backend"
  }

  lifecycle {
    # A newer AMI must not replace a running host; Ansible patches in place.
    ignore_changes = [ami]
  }
}
