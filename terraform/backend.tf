# Remote state in S3, locked by an S3 lockfile: Terraform writes <key>.tflock next to the
# state object for the length of a run (Terraform >= 1.11, versions.tf), so no lock table.
# Nothing environment-specific lives here: the bucket, key and region come from
#   terraform init -backend-config=environments/<env>/backend.tfvars
# so one configuration serves staging and prod with separate state objects (and locks).
# The bucket is created once per account before the first init (docs/first-deploy.md).
terraform {
  backend "s3" {
    encrypt      = true
    use_lockfile = true
  }
}
