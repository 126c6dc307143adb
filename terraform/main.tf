# Names and lookups shared by every file. One resource group per file; see docs/terraform.md.
data "aws_caller_identity" "current" {}

data "aws_partition" "current" {}

# The zones are named, not "whatever is available now": placement must not shift when a
# zone is impaired or AWS adds one. The lookup only proves the names exist.
data "aws_availability_zones" "selected" {
  filter {
    name   = "zone-name"
    values = local.azs
  }

  lifecycle {
    postcondition {
      condition     = length(self.names) == length(local.azs)
      error_message = "Not every zone of ${join(", ", local.azs)} exists in ${var.region} for this account: set availability_zones in terraform.tfvars to zones that do."
    }
  }
}

locals {
  name       = "${var.project}-${var.env}"
  account_id = data.aws_caller_identity.current.account_id
  partition  = data.aws_partition.current.partition

  # var.availability_zones, or zones a, b, c, ... of the region. Tiers place instance i in
  # zone i % az_count, so two instances of a tier land in two zones.
  azs = (length(var.availability_zones) > 0 ? var.availability_zones :
  [for i in range(var.az_count) : "${var.region}${substr("abcdef", i, 1)}"])

  # The inventory groups of docs/architecture.md: each instance's Role tag is exactly one of
  # these, and inventories/<env>/aws_ec2.yml builds its groups from that tag.
  tiers = ["bastion", "edge", "backend", "qdrant", "ollama", "postgres", "monitoring"]
}
