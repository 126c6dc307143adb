# Outputs. terraform/bin/export-outputs writes them (prefixed `terraform_`) into
# inventories/<env>/group_vars/all/terraform_outputs.yml for Ansible. No secret values
# here: only where to find them.

output "environment" {
  description = "The environment this state belongs to (export-outputs refuses to write it into another environment's inventory)."
  value       = var.env
}

output "region" {
  description = "Primary region (the dynamic inventory's `regions`)."
  value       = var.region
}

output "bastion_public_ip" {
  description = "Elastic IP of the bastion: the ProxyJump host of every other host."
  value       = aws_eip.bastion.public_ip
}

output "bastion_private_ip" {
  description = "Private address of the bastion."
  value       = aws_instance.bastion.private_ip
}

output "nlb_dns_name" {
  description = "DNS name of the edge Network Load Balancer: point the site's DNS name (CNAME/alias) here."
  value       = aws_lb.edge.dns_name
}

output "nlb_zone_id" {
  description = "Route 53 hosted zone id of the NLB, for an alias record."
  value       = aws_lb.edge.zone_id
}

output "backups_bucket" {
  description = "Bucket the backup role uploads Qdrant snapshots to."
  value       = aws_s3_bucket.backups.bucket
}

output "documents_bucket" {
  description = "Bucket of uploaded documents (backend)."
  value       = aws_s3_bucket.documents.bucket
}

output "documents_replica_bucket" {
  description = "Cross-region replica of the documents bucket."
  value       = aws_s3_bucket.documents_replica.bucket
}

output "kms_key_arn" {
  description = "KMS key of the buckets, volumes and secrets (the backup role passes it for SSE-KMS uploads)."
  value       = aws_kms_key.main.arn
}

output "secret_arns" {
  description = "ARNs of the generated Secrets Manager entries, by name; copy their values into the vault file."
  value       = { for k, s in aws_secretsmanager_secret.app : k => s.arn }
}

output "vpc_cidr" {
  description = "CIDR of the VPC (host firewalls may use it for defaults)."
  value       = aws_vpc.main.cidr_block
}

output "admin_cidrs" {
  description = "CIDRs allowed to SSH to the bastion; the bastion's host firewall opens 22 to the same list."
  value       = var.admin_cidrs
}

output "acme_challenge" {
  description = "ACME challenge certbot on the edges must use (dns-01 or http-01); the edges' IAM permissions were built for it."
  value       = var.acme_challenge
}

output "route53_zone_id" {
  description = "Route 53 hosted zone the edges may write _acme-challenge TXT records to under dns-01 (empty with http-01)."
  value       = var.route53_zone_id
}
