# Inputs. Per-environment values live in environments/<env>/terraform.tfvars; the defaults
# here are the prod shape. Every validation names the variable and the rule it enforces.

# --- Identity -------------------------------------------------------------------------

variable "project" {
  description = "Project name: the Project tag on every resource and the prefix of every name. The inventories filter on it."
  type        = string
  default     = "querygpt"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,11}$", var.project))
    error_message = "project must be 2-12 characters of lower-case letters, digits and dashes (it goes into S3 bucket names and 32-character load balancer names)."
  }
}

variable "env" {
  description = "Environment name: the Environment tag the dynamic inventory of inventories/<env> filters on."
  type        = string

  validation {
    condition     = contains(["staging", "prod"], var.env)
    error_message = "env must be \"staging\" or \"prod\" (one inventory directory exists per environment)."
  }
}

variable "region" {
  description = "Primary AWS region. Must match `regions` in inventories/<env>/aws_ec2.yml."
  type        = string

  validation {
    condition     = can(regex("^[a-z]{2}(-gov)?-[a-z]+-[0-9]$", var.region))
    error_message = "region must look like an AWS region name, e.g. eu-central-1."
  }
}

variable "replica_region" {
  description = "Region that holds the cross-region replica of the documents bucket."
  type        = string

  validation {
    condition     = can(regex("^[a-z]{2}(-gov)?-[a-z]+-[0-9]$", var.replica_region)) && var.replica_region != var.region
    error_message = "replica_region must be an AWS region name different from region (a replica in the same region protects against nothing)."
  }
}

# --- Network --------------------------------------------------------------------------

variable "vpc_cidr" {
  description = "CIDR of the VPC. Subnets are /20s carved from it: public at index 0..az_count-1, private at 8..8+az_count-1."
  type        = string
  default     = "10.40.0.0/16"

  validation {
    condition     = can(cidrhost(var.vpc_cidr, 0)) && can(regex("/([89]|1[0-6])$", var.vpc_cidr))
    error_message = "vpc_cidr must be a valid IPv4 CIDR with a prefix from /8 to /16 (16 /20 subnets are carved from it)."
  }
}

variable "az_count" {
  description = "Number of availability zones to spread subnets and instances over."
  type        = number
  default     = 3

  validation {
    condition     = var.az_count >= 2 && var.az_count <= 6 && floor(var.az_count) == var.az_count
    error_message = "az_count must be a whole number from 2 to 6 (the edge tier needs two AZs behind the NLB)."
  }
}

variable "availability_zones" {
  description = "Zone names to use, in order. Empty = the region's zones a, b, c, ... (first az_count). Set it where a letter is missing for the account."
  type        = list(string)
  default     = []

  validation {
    condition     = length(var.availability_zones) == 0 || length(var.availability_zones) == var.az_count
    error_message = "availability_zones must be empty or list exactly az_count zone names."
  }

  validation {
    condition     = alltrue([for z in var.availability_zones : startswith(z, var.region)])
    error_message = "availability_zones must be zones of region, e.g. eu-central-1a."
  }
}

variable "nat_gateway_per_az" {
  description = "One NAT gateway per AZ (true, prod: an AZ outage does not cut the others off) or one shared NAT gateway (false, staging: cheaper)."
  type        = bool
  default     = true
}

variable "route53_zone_id" {
  description = "Route 53 hosted zone of the public name the edges serve: certbot on the edges writes its DNS-01 TXT records there. Required by acme_challenge = \"dns-01\" (the default); empty only with http-01."
  type        = string
  default     = ""
  nullable    = false

  validation {
    condition     = var.route53_zone_id == "" || can(regex("^Z[A-Z0-9]{1,31}$", var.route53_zone_id))
    error_message = "route53_zone_id must be a bare hosted zone id such as Z0123456789ABCDEFGHIJ (not /hostedzone/...), or empty."
  }
}

# How certbot proves the public name. Exported (terraform_acme_challenge) so the nginx role
# uses the method IAM was built for. The edges share one name behind the NLB, which sends
# Let's Encrypt's HTTP-01 request to either edge: only DNS-01 works with more than one.
variable "acme_challenge" {
  description = "ACME challenge certbot uses on the edges: \"dns-01\" (TXT records in route53_zone_id; any edge_count) or \"http-01\" (only with edge_count = 1)."
  type        = string
  default     = "dns-01"
  nullable    = false

  validation {
    condition     = contains(["dns-01", "http-01"], var.acme_challenge)
    error_message = "acme_challenge must be \"dns-01\" or \"http-01\"."
  }

  validation {
    condition     = var.acme_challenge != "dns-01" || can(regex("^Z[A-Z0-9]{1,31}$", var.route53_zone_id))
    error_message = "acme_challenge = \"dns-01\" needs route53_zone_id: set it in environments/<env>/terraform.tfvars to the hosted zone id of the public name (aws route53 list-hosted-zones-by-name --dns-name <name>, e.g. Z0123456789ABCDEFGHIJ) before the first apply, so the edges may write their _acme-challenge TXT records. Without a Route 53 zone, use acme_challenge = \"http-01\" with edge_count = 1."
  }

  validation {
    condition     = var.acme_challenge != "http-01" || var.edge_count == 1
    error_message = "acme_challenge = \"http-01\" works only with edge_count = 1: the NLB sends Let's Encrypt's validation request to either edge, and only the one that asked can answer. Use acme_challenge = \"dns-01\" with route53_zone_id set, or edge_count = 1."
  }
}

variable "admin_cidrs" {
  description = "CIDRs allowed to SSH to the bastion (the only inbound path for operators). No default: an empty or open list is a mistake."
  type        = list(string)

  validation {
    condition     = length(var.admin_cidrs) > 0 && alltrue([for c in var.admin_cidrs : can(cidrhost(c, 0))])
    error_message = "admin_cidrs must be a non-empty list of valid IPv4 CIDRs, e.g. [\"203.0.113.10/32\"]."
  }

  validation {
    condition     = !contains(var.admin_cidrs, "0.0.0.0/0")
    error_message = "admin_cidrs must not contain 0.0.0.0/0: SSH to the bastion is for known operator addresses only."
  }
}

# --- Compute --------------------------------------------------------------------------

variable "ami_id" {
  description = "Pin every instance to this AMI. null = newest Debian 13 AMI from Debian's account (amis.tf); instances ignore later AMI changes either way."
  type        = string
  default     = null

  validation {
    condition     = var.ami_id == null || can(regex("^ami-[0-9a-f]{8,17}$", var.ami_id))
    error_message = "ami_id must be null or an AMI id like ami-0123456789abcdef0."
  }
}

variable "ollama_ami_id" {
  description = "AMI for the GPU (ollama) instances, e.g. one with the NVIDIA driver baked in. null = the same AMI as the other tiers."
  type        = string
  default     = null

  validation {
    condition     = var.ollama_ami_id == null || can(regex("^ami-[0-9a-f]{8,17}$", var.ollama_ami_id))
    error_message = "ollama_ami_id must be null or an AMI id like ami-0123456789abcdef0."
  }
}

variable "ssh_key_name" {
  description = "Name of an existing EC2 key pair installed for the `admin` user on every instance. Required: SSH through the bastion is the only way onto a host."
  type        = string
  nullable    = false

  validation {
    condition     = length(trimspace(var.ssh_key_name)) > 0
    error_message = "ssh_key_name must name an existing EC2 key pair (aws ec2 describe-key-pairs): without one no operator can log in, as SSH through the bastion is the only way in."
  }
}

variable "instance_types" {
  description = "Instance type per tier. The ollama tier needs a GPU type (g4dn/g5/g6)."
  type = object({
    bastion    = string
    edge       = string
    backend    = string
    qdrant     = string
    ollama     = string
    monitoring = string
    postgres   = string
  })
  default = {
    bastion    = "t3.micro"
    edge       = "t3.small"
    backend    = "m6i.large"
    qdrant     = "r6i.large"
    ollama     = "g5.xlarge"
    monitoring = "t3.medium"
    postgres   = "m6i.large"
  }

  validation {
    condition     = alltrue([for t in values(var.instance_types) : can(regex("^[a-z][a-z0-9-]*\\.[a-z0-9]+$", t))])
    error_message = "instance_types values must be EC2 instance type names such as t3.small."
  }

  validation {
    condition     = can(regex("^(g|p)[0-9]", var.instance_types.ollama))
    error_message = "instance_types.ollama must be a GPU family (g4dn, g5, g6, p4d, ...)."
  }
}

variable "edge_count" {
  description = "Number of edge (nginx) instances behind the NLB, spread one per AZ in order."
  type        = number
  default     = 2

  validation {
    condition     = var.edge_count >= 1 && floor(var.edge_count) == var.edge_count
    error_message = "edge_count must be a whole number >= 1."
  }
}

variable "backend_count" {
  description = "Number of backend (FastAPI) instances, spread over the AZs in order."
  type        = number
  default     = 2

  validation {
    condition     = var.backend_count >= 1 && floor(var.backend_count) == var.backend_count
    error_message = "backend_count must be a whole number >= 1."
  }
}

variable "qdrant_count" {
  description = "Number of Qdrant instances. docs/architecture.md: a single node for now (a cluster later)."
  type        = number
  default     = 1

  validation {
    condition     = var.qdrant_count >= 1 && floor(var.qdrant_count) == var.qdrant_count
    error_message = "qdrant_count must be a whole number >= 1."
  }
}

variable "ollama_count" {
  description = "Number of Ollama GPU instances: a pool spread over the zones (instance i in zone i mod az_count); the backend spreads its calls over all of them and retries on another. 1 = no failover."
  type        = number
  default     = 2

  validation {
    condition     = var.ollama_count >= 1 && floor(var.ollama_count) == var.ollama_count
    error_message = "ollama_count must be a whole number >= 1."
  }
}

variable "postgres_count" {
  description = "Number of PostgreSQL instances (app state): the first in launch order bootstraps as the primary, every other streams from it as a hot standby, spread over the zones (instance i in zone i mod az_count). 2 = a primary and a standby in two zones; 1 = no standby to fail over to."
  type        = number
  default     = 2

  validation {
    condition     = var.postgres_count >= 1 && floor(var.postgres_count) == var.postgres_count
    error_message = "postgres_count must be a whole number >= 1."
  }
}

# --- Storage --------------------------------------------------------------------------

variable "root_volume_size_gb" {
  description = "Size of every instance's encrypted gp3 root volume, in GiB."
  type        = number
  default     = 20

  validation {
    condition     = var.root_volume_size_gb >= 8
    error_message = "root_volume_size_gb must be at least 8 (the Debian 13 AMI's own size)."
  }
}

variable "ollama_models_volume_size_gb" {
  description = "Size of the gp3 volume each Ollama instance keeps its models on, in GiB."
  type        = number
  default     = 200

  validation {
    condition     = var.ollama_models_volume_size_gb >= 20
    error_message = "ollama_models_volume_size_gb must be at least 20 (one 7B model is about 5 GiB)."
  }
}

variable "qdrant_data_volume_size_gb" {
  description = "Size of each Qdrant instance's encrypted gp3 data volume, in GiB."
  type        = number
  default     = 100

  validation {
    condition     = var.qdrant_data_volume_size_gb >= 10
    error_message = "qdrant_data_volume_size_gb must be at least 10."
  }
}

variable "qdrant_data_volume_iops" {
  description = "Provisioned IOPS of the Qdrant gp3 data volume (gp3: 3000-16000)."
  type        = number
  default     = 3000

  validation {
    condition     = var.qdrant_data_volume_iops >= 3000 && var.qdrant_data_volume_iops <= 16000
    error_message = "qdrant_data_volume_iops must be between 3000 and 16000 (gp3 limits)."
  }
}

variable "qdrant_data_volume_throughput" {
  description = "Provisioned throughput of the Qdrant gp3 data volume in MiB/s (gp3: 125-1000)."
  type        = number
  default     = 125

  validation {
    condition     = var.qdrant_data_volume_throughput >= 125 && var.qdrant_data_volume_throughput <= 1000
    error_message = "qdrant_data_volume_throughput must be between 125 and 1000 MiB/s (gp3 limits)."
  }
}

variable "noncurrent_version_retention_days" {
  description = "Days overwritten or deleted object versions are kept in the versioned buckets (the undo window)."
  type        = number
  default     = 30

  validation {
    condition     = var.noncurrent_version_retention_days > 0 && floor(var.noncurrent_version_retention_days) == var.noncurrent_version_retention_days
    error_message = "noncurrent_version_retention_days must be a whole number > 0."
  }
}

variable "access_log_retention_days" {
  description = "Days S3 server access logs are kept in the access-logs bucket."
  type        = number
  default     = 365

  validation {
    condition     = var.access_log_retention_days > 0 && floor(var.access_log_retention_days) == var.access_log_retention_days
    error_message = "access_log_retention_days must be a whole number > 0."
  }
}

variable "flow_log_retention_days" {
  description = "Days VPC flow logs are kept in CloudWatch Logs (one of CloudWatch's allowed values, at least a year)."
  type        = number
  default     = 365

  validation {
    condition     = contains([365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.flow_log_retention_days)
    error_message = "flow_log_retention_days must be a CloudWatch retention value of at least one year: 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288 or 3653."
  }
}

variable "kms_deletion_window_days" {
  description = "Waiting period before a scheduled KMS key deletion takes effect."
  type        = number
  default     = 30

  validation {
    condition     = var.kms_deletion_window_days >= 7 && var.kms_deletion_window_days <= 30
    error_message = "kms_deletion_window_days must be between 7 and 30 (KMS limits)."
  }
}

variable "secret_recovery_window_days" {
  description = "Days a deleted Secrets Manager secret can still be restored (0 = delete immediately)."
  type        = number
  default     = 30

  validation {
    condition     = var.secret_recovery_window_days == 0 || (var.secret_recovery_window_days >= 7 && var.secret_recovery_window_days <= 30)
    error_message = "secret_recovery_window_days must be 0 or between 7 and 30 (Secrets Manager limits)."
  }
}

variable "enable_deletion_protection" {
  description = "Deletion protection on the NLB. Turn off only to tear an environment down."
  type        = bool
  default     = true
}

variable "postgres_data_volume_size_gb" {
  description = "Size of each PostgreSQL instance's encrypted gp3 data volume (the cluster and its WAL), in GiB."
  type        = number
  default     = 50

  validation {
    condition     = var.postgres_data_volume_size_gb >= 10
    error_message = "postgres_data_volume_size_gb must be at least 10."
  }
}
