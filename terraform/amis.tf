# Debian 13 (trixie) from Debian's own AWS account (136693071363, published on
# https://wiki.debian.org/Cloud/AmazonEC2Image). The default login is `admin`, which is
# what group_vars/all/connection.yml uses. Debian 12 is not supported (docs/upgrading.md).
#
# Instances ignore AMI changes after creation (lifecycle ignore_changes in each tier), so a
# new Debian point release never replaces a running host: patching is Ansible's job.
# Set var.ami_id to pin an exact image (recommended for prod, recorded in terraform.tfvars).
data "aws_ami" "debian13" {
  most_recent = true
  owners      = ["136693071363"]

  filter {
    name   = "name"
    values = ["debian-13-amd64-*"]
  }

  filter {
    name   = "architecture"
    values = ["x86_64"]
  }

  filter {
    name   = "virtualization-type"
    values = ["hvm"]
  }

  filter {
    name   = "root-device-type"
    values = ["ebs"]
  }
}

locals {
  ami_id        = coalesce(var.ami_id, data.aws_ami.debian13.id)
  ollama_ami_id = coalesce(var.ollama_ami_id, local.ami_id)
}
