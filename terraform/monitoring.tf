# The monitoring host (Prometheus, Alertmanager, journal-remote receiver). Operators
# reach 9090/9093 through the bastion (SSH tunnel); see docs/first-deploy.md.

resource "aws_instance" "monitoring" {
  ami                         = local.ami_id
  instance_type               = var.instance_types.monitoring
  subnet_id                   = aws_subnet.private[0].id
  vpc_security_group_ids      = [aws_security_group.tier["monitoring"].id]
  iam_instance_profile        = aws_iam_instance_profile.tier["monitoring"].name
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
    Name = "${local.name}-monitoring"
    Role = "monitoring"
  }

  lifecycle {
    # A newer AMI must not replace a running host; Ansible patches in place.
    ignore_changes = [ami]
  }
}
