# Terraform and provider pins. The lock file (.terraform.lock.hcl) is committed after the
# first `terraform init` so every operator and CI runner uses the same provider builds.
terraform {
  # 1.9+ because variable validations refer to other variables (replica_region != region);
  # < 2 so a major Terraform release is a deliberate change.
  required_version = ">= 1.9.0, < 2.0.0"

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
