# Terraform and provider pins. The lock file (.terraform.lock.hcl) is committed after the
# first `terraform init` so every operator and CI runner uses the same provider builds.
terraform {
  # 1.11+ for the S3 backend's lockfile (use_lockfile, backend.tf): added in 1.10, generally
  # available in 1.11, which deprecated lock tables. Validations that refer to other
  # variables (replica_region != region, acme_challenge) need 1.9+, which this covers.
  # < 2 so a major Terraform release is a deliberate change.
  required_version = ">= 1.11.0, < 2.0.0"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 6.0"
    }
    random = {
      source  = "hashicorp/random"
      version = "~> 3.6"
    }
  }
}
