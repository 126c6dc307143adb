# Project and Environment reach every taggable resource through default_tags; each
# instance adds its Role tag itself (the inventory groups are built from it).
locals {
  default_tags = {
    Project     = var.project
    Environment = var.env
    ManagedBy   = "terraform"
  }
}

provider "aws" {
  region = var.region

  default_tags {
    tags = local.default_tags
  }
}

# The documents bucket replicates into this region (disaster recovery copy).
provider "aws" {
  alias  = "replica"
  region = var.replica_region

  default_tags {
    tags = local.default_tags
  }
}
