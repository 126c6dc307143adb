# terraform apply -var-file=environments/staging/terraform.tfvars
# Same shape as prod, smaller: two AZs, one NAT gateway, one instance per tier except
# edge and backend (two each, so the NLB and the rolling deploys are exercised), ollama (a
# pool of two) and qdrant (three peers: distributed mode needs a majority to survive one).
env            = "staging"
region         = "eu-central-1"
replica_region = "eu-west-1"

vpc_cidr           = "10.41.0.0/16"
az_count           = 2
nat_gateway_per_az = false

# Operator addresses allowed to SSH to the bastion. REPLACE before the first apply.
admin_cidrs = ["203.0.113.10/32"]

ssh_key_name = "querygpt-staging-admin"

instance_types = {
  bastion    = "t3.micro"
  edge       = "t3.micro"
  backend    = "t3.medium"
  qdrant     = "r6i.large"
  ollama     = "g4dn.xlarge"
  monitoring = "t3.small"
  postgres   = "t3.medium"
}

edge_count     = 2
backend_count  = 2
qdrant_count   = 3
ollama_count   = 2
postgres_count = 2

ollama_models_volume_size_gb  = 100
qdrant_data_volume_size_gb    = 30
qdrant_data_volume_iops       = 3000
qdrant_data_volume_throughput = 125
postgres_data_volume_size_gb  = 20

noncurrent_version_retention_days = 7
access_log_retention_days         = 90
flow_log_retention_days           = 365

# Staging is torn down and rebuilt; prod keeps deletion protection on.
enable_deletion_protection = false
kms_deletion_window_days    = 7
secret_recovery_window_days = 0

# TLS certificates: both edges share the public name behind the NLB, so certbot proves it
# with DNS-01 through Route 53 (HTTP-01 works only with edge_count = 1).
acme_challenge = "dns-01"

# REQUIRED before the first apply: the Route 53 hosted zone id of the staging public name,
# e.g. "Z0123456789ABCDEFGHIJ" (aws route53 list-hosted-zones-by-name --dns-name <name>).
# The edges may write _acme-challenge TXT records in this zone only. Left empty, plan and
# apply stop with an error naming this variable (acme_challenge = "dns-01" needs it).
route53_zone_id = ""
