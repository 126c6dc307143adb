# The lab's values for terraform/: NEVER APPLIED. `bin/lab up` reads the instances Terraform
# would create with these values (lab/labctl/terraform.py) and seeds the lab's EC2 emulator
# with them, one systemd container per instance at its private address. Variables not set
# here take their defaults from terraform/variables.tf.
env    = "lab"
region = "eu-central-1"

vpc_cidr = "10.42.0.0/16"
az_count = 3

# The instance types only label the emulated instances (containers have no size).
instance_types = {
  bastion    = "t3.micro"
  edge       = "t3.small"
  backend    = "t3.small"
  qdrant     = "t3.small"
  ollama     = "t3.small"
  monitoring = "t3.small"
  postgres   = "t3.small"
}

edge_count     = 2
backend_count  = 2
qdrant_count   = 3
ollama_count   = 2
postgres_count = 2

# Operators reach the bastion from the controller, the gateway of the lab's "internet"
# network (lab/labctl/fleet.py).
admin_cidrs = ["198.51.100.1/32"]
