# Remote state in S3 with DynamoDB locking. Nothing environment-specific lives here: the
# bucket, key, region and lock table come from
#   terraform init -backend-config=environments/<env>/backend.tfvars
# so one configuration serves staging and prod with separate state objects. The bucket
# and table are created once per account before the first init (docs/first-deploy.md).
terraform {
  backend "s3" {
    encrypt = true
  }
}
