# terraform init -reconfigure -backend-config=environments/staging/backend.tfvars
# The bucket is created once per account (docs/first-deploy.md, "State"). The lock is an
# S3 lockfile next to the state (use_lockfile in backend.tf): no lock table.
bucket  = "querygpt-terraform-state-REPLACE_WITH_ACCOUNT_ID"
key     = "querygpt/staging/terraform.tfstate"
region  = "eu-central-1"
encrypt = true
