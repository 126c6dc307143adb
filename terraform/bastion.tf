# The bastion: the only host with a public address, SSH from var.admin_cidrs only
# (security_groups.tf). Ansible reaches every other host with ProxyJump through it
# (inventories/<env>/group_vars/all/connection.yml). Its Elastic IP survives a
# replacement of the instance, so operators' known_hosts and firewalls keep working.

resource "aws_instance" "bastion" {
  ami                         = local.ami_id
  instance_type               = var.instance_types.bastion
  subnet_id                   = aws_subnet.public[0].id
  vpc_security_group_ids      = [aws_security_group.tier["bastion"].id]
  iam_instance_profile        = aws_iam_instance_profile.tier["bastion"].name
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
    Name = "${local.name}-bastion"
    Role = "bastion"
  }

  lifecycle {
    # A newer AMI must not replace a running host; Ansible patches in place.
    ignore_changes = [ami]
  }
}

resource "aws_eip" "bastion" {
  domain = "vpc"

  tags = {
    Name = "${local.name}-bastion"
  }

  depends_on = [aws_internet_gateway.main]
}

resource "aws_eip_association" "bastion" {
  instance_id   = aws_instance.bastion.id
  allocation_id = aws_eip.bastion.id
}
