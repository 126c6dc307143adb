# One security group per tier, and one ingress rule resource per row of the firewall
# matrix in docs/architecture.md ("Who may talk to whom"). The rows are kept literal on
# purpose: tests/terraform reads them back from this file and compares them with the
# matrix, so a rule added here and not there (or the other way round) fails the build.
#
#   to          port(s)        from
#   edge        80, 443        anywhere
#   backend     8000           edge, monitoring
#   qdrant      6333, 6334     backend, monitoring
#   qdrant      6335           qdrant (p2p between the peers)
#   ollama      11434          backend, monitoring
#   postgres    5432           backend, postgres (replication), monitoring
#   postgres    9187           monitoring (postgres exporter)
#   postgres    8432           postgres (pgBackRest's TLS server)
#   monitoring  9090, 9093     bastion
#   monitoring  19532          every host
#   every host  9100           monitoring
#   edge        9113           monitoring
#   every host  22             bastion
#   bastion     22             admin CIDRs
#
# Everything else inbound is denied (a security group denies what it does not allow).
# Egress is not part of the matrix: hosts may reach the VPC (the receiving side's rules
# decide) and HTTP/HTTPS on the internet through NAT (apt, releases, models).

resource "aws_security_group" "tier" {
  for_each = toset(local.tiers)

  # name_prefix, not name: create_before_destroy needs the replacement to have a new name.
  name_prefix = "${local.name}-${each.key}-"
  description = "QueryGPT ${var.env} ${each.key} tier"
  vpc_id      = aws_vpc.main.id

  tags = {
    Name = "${local.name}-${each.key}"
  }

  lifecycle {
    create_before_destroy = true
  }
}

# --- Ingress: the matrix, row by row ----------------------------------------------------

# edge 80, 443 from anywhere (the NLB preserves client addresses; users; ACME HTTP-01).
resource "aws_vpc_security_group_ingress_rule" "edge_web_from_anywhere" {
  #checkov:skip=CKV_AWS_260:The edge tier is the public web entry point; docs/architecture.md opens 80 (ACME HTTP-01, redirect to HTTPS) and 443 to anywhere.
  for_each = { http = 80, https = 443 }

  security_group_id = aws_security_group.tier["edge"].id
  cidr_ipv4         = "0.0.0.0/0"
  ip_protocol       = "tcp"
  from_port         = each.value
  to_port           = each.value
  description       = "edge ${each.key} (${each.value}) from anywhere"
}

# backend 8000 (HTTP API) from edge, monitoring.
resource "aws_vpc_security_group_ingress_rule" "backend_api_from_edge_monitoring" {
  for_each = toset(["edge", "monitoring"])

  security_group_id            = aws_security_group.tier["backend"].id
  referenced_security_group_id = aws_security_group.tier[each.key].id
  ip_protocol                  = "tcp"
  from_port                    = 8000
  to_port                      = 8000
  description                  = "backend API 8000 from ${each.key}"
}

# qdrant 6333 (HTTP), 6334 (gRPC) from backend, monitoring.
resource "aws_vpc_security_group_ingress_rule" "qdrant_from_backend_monitoring" {
  for_each = toset(["backend", "monitoring"])

  security_group_id            = aws_security_group.tier["qdrant"].id
  referenced_security_group_id = aws_security_group.tier[each.key].id
  ip_protocol                  = "tcp"
  from_port                    = 6333
  to_port                      = 6334
  description                  = "qdrant HTTP 6333 and gRPC 6334 from ${each.key}"
}

# qdrant 6335 (distributed mode's p2p) between the qdrant hosts only: the group's own
# security group as the source (self-referencing).
resource "aws_vpc_security_group_ingress_rule" "qdrant_p2p_from_qdrant" {
  security_group_id            = aws_security_group.tier["qdrant"].id
  referenced_security_group_id = aws_security_group.tier["qdrant"].id
  ip_protocol                  = "tcp"
  from_port                    = 6335
  to_port                      = 6335
  description                  = "qdrant p2p 6335 from qdrant"
}

# ollama 11434 from backend, monitoring (health probe only).
resource "aws_vpc_security_group_ingress_rule" "ollama_from_backend_monitoring" {
  for_each = toset(["backend", "monitoring"])

  security_group_id            = aws_security_group.tier["ollama"].id
  referenced_security_group_id = aws_security_group.tier[each.key].id
  ip_protocol                  = "tcp"
  from_port                    = 11434
  to_port                      = 11434
  description                  = "ollama API 11434 from ${each.key}"
}

# postgres 5432 from backend (the app), postgres (streaming replication between primary and
# standby) and monitoring (the blackbox probe of the TLS listener).
resource "aws_vpc_security_group_ingress_rule" "postgres_from_backend_postgres_monitoring" {
  for_each = toset(["backend", "postgres", "monitoring"])

  security_group_id            = aws_security_group.tier["postgres"].id
  referenced_security_group_id = aws_security_group.tier[each.key].id
  ip_protocol                  = "tcp"
  from_port                    = 5432
  to_port                      = 5432
  description                  = "postgres 5432 from ${each.key}"
}

# postgres 9187 (postgres exporter) from monitoring.
resource "aws_vpc_security_group_ingress_rule" "postgres_exporter_from_monitoring" {
  security_group_id            = aws_security_group.tier["postgres"].id
  referenced_security_group_id = aws_security_group.tier["monitoring"].id
  ip_protocol                  = "tcp"
  from_port                    = 9187
  to_port                      = 9187
  description                  = "postgres exporter 9187 from monitoring"
}

# postgres 8432 (pgBackRest's TLS server) from postgres: the host taking a backup reads the
# other hosts' clusters through it.
resource "aws_vpc_security_group_ingress_rule" "pgbackrest_from_postgres" {
  security_group_id            = aws_security_group.tier["postgres"].id
  referenced_security_group_id = aws_security_group.tier["postgres"].id
  ip_protocol                  = "tcp"
  from_port                    = 8432
  to_port                      = 8432
  description                  = "pgbackrest TLS 8432 from postgres"
}

# monitoring 9090 (Prometheus), 9093 (Alertmanager) from bastion (operators tunnel).
resource "aws_vpc_security_group_ingress_rule" "monitoring_ui_from_bastion" {
  for_each = { prometheus = 9090, alertmanager = 9093 }

  security_group_id            = aws_security_group.tier["monitoring"].id
  referenced_security_group_id = aws_security_group.tier["bastion"].id
  ip_protocol                  = "tcp"
  from_port                    = each.value
  to_port                      = each.value
  description                  = "monitoring ${each.key} ${each.value} from bastion"
}

# monitoring 19532 (systemd-journal-remote) from every host.
resource "aws_vpc_security_group_ingress_rule" "journal_remote_from_every_host" {
  for_each = toset(local.tiers)

  security_group_id            = aws_security_group.tier["monitoring"].id
  referenced_security_group_id = aws_security_group.tier[each.key].id
  ip_protocol                  = "tcp"
  from_port                    = 19532
  to_port                      = 19532
  description                  = "monitoring journal-remote 19532 from ${each.key}"
}

# every host 9100 (node_exporter) from monitoring.
resource "aws_vpc_security_group_ingress_rule" "node_exporter_from_monitoring" {
  for_each = toset(local.tiers)

  security_group_id            = aws_security_group.tier[each.key].id
  referenced_security_group_id = aws_security_group.tier["monitoring"].id
  ip_protocol                  = "tcp"
  from_port                    = 9100
  to_port                      = 9100
  description                  = "${each.key} node_exporter 9100 from monitoring"
}

# edge 9113 (nginx exporter) from monitoring.
resource "aws_vpc_security_group_ingress_rule" "nginx_exporter_from_monitoring" {
  security_group_id            = aws_security_group.tier["edge"].id
  referenced_security_group_id = aws_security_group.tier["monitoring"].id
  ip_protocol                  = "tcp"
  from_port                    = 9113
  to_port                      = 9113
  description                  = "edge nginx exporter 9113 from monitoring"
}

# every host 22 from bastion (the bastion included, as the matrix says "every host").
resource "aws_vpc_security_group_ingress_rule" "ssh_from_bastion" {
  #checkov:skip=CKV_AWS_24:False positive: the source is referenced_security_group_id (the bastion group), not a CIDR; the check only knows source_security_group_id.
  for_each = toset(local.tiers)

  security_group_id            = aws_security_group.tier[each.key].id
  referenced_security_group_id = aws_security_group.tier["bastion"].id
  ip_protocol                  = "tcp"
  from_port                    = 22
  to_port                      = 22
  description                  = "${each.key} SSH 22 from bastion"
}

# bastion 22 from admin CIDRs.
resource "aws_vpc_security_group_ingress_rule" "bastion_ssh_from_admin" {
  for_each = toset(var.admin_cidrs)

  security_group_id = aws_security_group.tier["bastion"].id
  cidr_ipv4         = each.value
  ip_protocol       = "tcp"
  from_port         = 22
  to_port           = 22
  description       = "bastion SSH 22 from admin CIDR ${each.value}"
}

# --- Egress (not part of the matrix) ----------------------------------------------------

resource "aws_vpc_security_group_egress_rule" "to_vpc" {
  for_each = toset(local.tiers)

  security_group_id = aws_security_group.tier[each.key].id
  cidr_ipv4         = var.vpc_cidr
  ip_protocol       = "-1"
  description       = "${each.key} to anything in the VPC (the receiving tier ingress rules decide)"
}

resource "aws_vpc_security_group_egress_rule" "https_to_internet" {
  for_each = toset(local.tiers)

  security_group_id = aws_security_group.tier[each.key].id
  cidr_ipv4         = "0.0.0.0/0"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  description       = "${each.key} HTTPS out (releases, models, AWS APIs, ACME)"
}

resource "aws_vpc_security_group_egress_rule" "http_to_internet" {
  for_each = toset(local.tiers)

  security_group_id = aws_security_group.tier[each.key].id
  cidr_ipv4         = "0.0.0.0/0"
  ip_protocol       = "tcp"
  from_port         = 80
  to_port           = 80
  description       = "${each.key} HTTP out (Debian mirrors sign their indexes; apt uses HTTP)"
}
