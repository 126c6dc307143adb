# terraform apply -var-file=environments/prod/terraform.tfvars
env            = "prod"
region         = "eu-central-1"
replica_region = "eu-west-1"

vpc_cidr           = "10.40.0.0/16"
az_count           = 3
nat_gateway_per_az = true

# Operator addresses allowed to SSH to the bastion. REPLACE before the first apply
# (203.0.113.0/24 is the documentation range: it matches nobody).
admin_cidrs = ["203.0.113.10/32"]

# Existing EC2 key pair for the `admin` user (docs/first-deploy.md, step 2).
ssh_key_name = "querygpt-prod-admin"

# Pin the Debian 13 AMI once chosen (aws ec2 describe-images, see docs/first-deploy.md).
# ami_id = "ami-..."

instance_types = {
  bastion    = "t3.micro"
  edge       = "t3.small"
  backend    = "m6i.large"
  qdrant     = "r6i.large"
  ollama     = "g5.xlarge"
  monitoring = "t3.medium"
  postgres   = "m6i.large"
}

edge_count     = 2
backend_count  = 2
qdrant_count   = 3
ollama_count   = 2
postgres_count = 2

ollama_models_volume_size_gb  = 200
qdrant_data_volume_size_gb    = 100
qdrant_data_volume_iops       = 3000
qdrant_data_volume_throughput = 125
postgres_data_volume_size_gb  = 50

noncurrent_version_retention_days = 30
access_log_retention_days         = 365
flow_log_retention_days           = 365

enable_deletion_protection = true

# TLS certificates: both edges share the public name behind the NLB, so certbot proves it
# with DNS-01 through Route 53 (HTTP-01 works only with edge_count = 1).
acme_challenge = "dns-01"

# REQUIRED before the first apply: the Route 53 hosted zone id of the prod public name,
# e.g. "Z0123456789ABCDEFGHIJ" (aws route53 list-hosted-zones-by-name --dns-name <name>).
# The edges may write _acme-challenge TXT records in this zone only. Left empty, plan and
# apply stop with an error naming this variable (acme_challenge = "dns-01" needs it).
route53_zone_id = ""
