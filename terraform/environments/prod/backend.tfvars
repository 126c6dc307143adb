# terraform init -reconfigure -backend-config=environments/prod/backend.tfvars
# The bucket and table are created once per account (docs/first-deploy.md, "State").
bucket         = "querygpt-terraform-state-REPLACE_WITH_ACCOUNT_ID"
key            = "querygpt/prod/terraform.tfstate"
region         = "eu-central-1"
dynamodb_table = "querygpt-terraform-locks"
encrypt        = true
