# Edge (nginx + frontend) instances in the private subnets, one per AZ, behind an
# internet-facing Network Load Balancer with plain TCP listeners on 80 and 443: TLS
# terminates on nginx (certbot certificates), the NLB only spreads connections and keeps
# the client address (instance targets preserve it, hence "anywhere" in the edge rules).

resource "aws_instance" "edge" {
  count = var.edge_count

  ami                         = local.ami_id
  instance_type               = var.instance_types.edge
  subnet_id                   = aws_subnet.private[count.index % var.az_count].id
  vpc_security_group_ids      = [aws_security_group.tier["edge"].id]
  iam_instance_profile        = aws_iam_instance_profile.tier["edge"].name
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
    Name = "${local.name}-edge-${count.index + 1}"
    Role = "edge"
  }

  lifecycle {
    # A newer AMI must not replace a running host; Ansible patches in place.
    ignore_changes = [ami]
  }
}

locals {
  edge_ports = { http = 80, https = 443 }

  # One target-group attachment per (listener port, edge instance).
  edge_attachments = {
    for pair in setproduct(keys(local.edge_ports), range(var.edge_count)) :
    "${pair[0]}-${pair[1]}" => { port = pair[0], index = pair[1] }
  }
}

resource "aws_lb" "edge" {
  #checkov:skip=CKV2_AWS_20:An ALB check; this is a TCP passthrough NLB, and nginx on the edge answers port 80 with a redirect to HTTPS (except ACME HTTP-01).
  #checkov:skip=CKV_AWS_91:An NLB writes access logs only for TLS listeners; these are TCP passthrough, nginx logs every request.
  name               = "${local.name}-edge"
  load_balancer_type = "network"
  internal           = false
  subnets            = aws_subnet.public[*].id

  enable_cross_zone_load_balancing = true
  enable_deletion_protection       = var.enable_deletion_protection

  tags = {
    Name = "${local.name}-edge"
  }
}

resource "aws_lb_target_group" "edge" {
  for_each = local.edge_ports

  name                 = "${local.name}-edge-${each.key}"
  port                 = each.value
  protocol             = "TCP"
  target_type          = "instance"
  vpc_id               = aws_vpc.main.id
  deregistration_delay = 30

  # An edge that stops answering (its zone lost) leaves the NLB after 2 failed checks 5 s
  # apart, so clients get answers again within about 15 s (docs/architecture.md, "Rollouts and
  # drain"); it returns after 3 good ones. lab/playbooks/prepare_lb.yml mirrors these values.
  health_check {
    enabled             = true
    protocol            = "TCP"
    port                = "traffic-port"
    interval            = 5
    healthy_threshold   = 3
    unhealthy_threshold = 2
  }

  tags = {
    Name = "${local.name}-edge-${each.key}"
  }
}

resource "aws_lb_target_group_attachment" "edge" {
  for_each = local.edge_attachments

  target_group_arn = aws_lb_target_group.edge[each.value.port].arn
  target_id        = aws_instance.edge[each.value.index].id
  port             = local.edge_ports[each.value.port]
}

resource "aws_lb_listener" "edge" {
  for_each = local.edge_ports

  load_balancer_arn = aws_lb.edge.arn
  port              = each.value
  protocol          = "TCP"

  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.edge[each.key].arn
  }

  tags = {
    Name = "${local.name}-edge-${each.key}"
  }
}
