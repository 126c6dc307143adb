# Secrets Manager entries with generated values. They are the source of truth for the
# ansible-vault file of the environment (docs/first-deploy.md, "Secrets"): the operator
# copies them into inventories/<env>/group_vars/all/vault.yml; hosts never need the
# Terraform state.
#
# The generated values are in the Terraform state too: the state bucket is encrypted,
# versioned and readable only by operators (docs/first-deploy.md, "State").

locals {
  # name => who may read it at runtime (iam.tf) and what it is for.
  secrets = {
    "qdrant-api-key" = {
      description = "Qdrant service.api_key (read-write API access)"
      readers     = ["qdrant", "backend"]
    }
    "qdrant-read-only-api-key" = {
      description = "Qdrant service.read_only_api_key (metrics scraping, read-only queries)"
      readers     = ["qdrant", "monitoring"]
    }
    "postgres-app-password" = {
      description = "PostgreSQL password of the app role (the backends log in with it)"
      readers     = ["backend"] # the postgres hosts get it from the vault, as the replication one
    }
    "postgres-replication-password" = {
      description = "PostgreSQL password of the replication role (the standbys)"
      readers     = [] # from the vault only: no instance reads it at runtime
    }
    "backend-secret-key" = {
      description = "Backend application secret (signing, session and CSRF tokens)"
      readers     = ["backend"]
    }
  }
}

resource "random_password" "app" {
  for_each = local.secrets

  length = 48
  # Alphanumeric only: the values go into HTTP headers, YAML and env files unquoted.
  special = false
}

resource "aws_secretsmanager_secret" "app" {
  #checkov:skip=CKV2_AWS_57:Static API keys shared by two services; rotation is an operator runbook (new value here, vault update, rolling restart), there is no rotation Lambda for Qdrant.
  for_each = local.secrets

  name                    = "${var.project}/${var.env}/${each.key}"
  description             = each.value.description
  kms_key_id              = aws_kms_key.main.arn
  recovery_window_in_days = var.secret_recovery_window_days
}

resource "aws_secretsmanager_secret_version" "app" {
  for_each = local.secrets

  secret_id     = aws_secretsmanager_secret.app[each.key].id
  secret_string = random_password.app[each.key].result
}
