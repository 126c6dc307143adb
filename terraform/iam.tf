# One role and instance profile per tier, each with only what its roles use:
#   qdrant      writes and reads its snapshots, the <env>/qdrant/ prefix of the backups bucket, reads its API keys
#   backend     reads and writes the documents bucket (and erases a document's versions), reads its secrets
#   postgres    writes and reads pgBackRest's repository, the pgbackrest/ prefix of the backups bucket
#   monitoring  reads the Qdrant read-only key (to scrape Qdrant's /metrics)
#   edge        with acme_challenge = "dns-01": certbot's TXT records in route53_zone_id only
#   bastion, ollama: nothing (their roles exist so every tier has the same shape)
# No Systems Manager policy: no role installs or runs its agent, and SSH through the
# bastion is the only way onto a host (docs/terraform.md, IAM).
# Secrets reach hosts through the ansible-vault file; the secret read permissions let a
# host fetch its own keys at runtime instead (e.g. after a rotation) and no more.

data "aws_iam_policy_document" "ec2_assume" {
  statement {
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["ec2.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "tier" {
  for_each = toset(local.tiers)

  name               = "${local.name}-${each.key}"
  description        = "QueryGPT ${var.env} ${each.key} instances"
  assume_role_policy = data.aws_iam_policy_document.ec2_assume.json
}

resource "aws_iam_instance_profile" "tier" {
  for_each = toset(local.tiers)

  name = "${local.name}-${each.key}"
  role = aws_iam_role.tier[each.key].name
}

# --- qdrant: the backups bucket and its own keys -------------------------------------------

data "aws_iam_policy_document" "qdrant" {
  # Its own prefix only: the backup role's backup_s3_prefix, "<querygpt_env>/qdrant", where
  # querygpt_env is the instances' Environment tag (var.env). pgBackRest's repository, under
  # pgbackrest/ in the same bucket, stays out of this tier's reach.
  statement {
    sid       = "ListBackups"
    actions   = ["s3:ListBucket", "s3:ListBucketMultipartUploads"]
    resources = [aws_s3_bucket.backups.arn]

    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = ["${var.env}/qdrant", "${var.env}/qdrant/*"]
    }
  }

  # s3:DeleteObject for the backup program's retention. The bucket is versioned and no
  # s3:DeleteObjectVersion is granted: a deletion leaves a noncurrent version for
  # noncurrent_version_retention_days, so a compromised host cannot erase the backups.
  statement {
    sid = "ReadWriteSnapshots"
    actions = [
      "s3:PutObject",
      "s3:GetObject",
      "s3:DeleteObject",
      "s3:AbortMultipartUpload",
      "s3:ListMultipartUploadParts",
    ]
    resources = ["${aws_s3_bucket.backups.arn}/${var.env}/qdrant/*"]
  }

  statement {
    sid       = "ReadQdrantKeys"
    actions   = ["secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret"]
    resources = [for k, s in aws_secretsmanager_secret.app : s.arn if contains(local.secrets[k].readers, "qdrant")]
  }

  statement {
    sid       = "UseKeyForBackupsAndSecrets"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [aws_kms_key.main.arn]

    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["s3.${var.region}.amazonaws.com", "secretsmanager.${var.region}.amazonaws.com"]
    }
  }
}

resource "aws_iam_role_policy" "qdrant" {
  name   = "backups-and-keys"
  role   = aws_iam_role.tier["qdrant"].id
  policy = data.aws_iam_policy_document.qdrant.json
}

# --- backend: the documents bucket and its secrets ------------------------------------------

data "aws_iam_policy_document" "backend" {
  statement {
    sid       = "ListDocuments"
    actions   = ["s3:ListBucket"]
    resources = [aws_s3_bucket.documents.arn]
  }

  statement {
    sid       = "ReadWriteDocuments"
    actions   = ["s3:PutObject", "s3:GetObject", "s3:DeleteObject"]
    resources = ["${aws_s3_bucket.documents.arn}/*"]
  }

  # Erasure (DELETE /documents/{id}): every stored version of a document's original goes, not
  # only the current one. The replica region receives the delete marker and expires its copies
  # with its noncurrent-version lifecycle (docs/architecture.md, "Storage").
  statement {
    sid       = "EraseDocumentVersions"
    actions   = ["s3:ListBucketVersions"]
    resources = [aws_s3_bucket.documents.arn]
  }

  statement {
    sid       = "EraseDocumentVersionObjects"
    actions   = ["s3:DeleteObjectVersion"]
    resources = ["${aws_s3_bucket.documents.arn}/*"]
  }

  statement {
    sid       = "ReadBackendSecrets"
    actions   = ["secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret"]
    resources = [for k, s in aws_secretsmanager_secret.app : s.arn if contains(local.secrets[k].readers, "backend")]
  }

  statement {
    sid       = "UseKeyForDocumentsAndSecrets"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [aws_kms_key.main.arn]

    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["s3.${var.region}.amazonaws.com", "secretsmanager.${var.region}.amazonaws.com"]
    }
  }
}

resource "aws_iam_role_policy" "backend" {
  name   = "documents-and-secrets"
  role   = aws_iam_role.tier["backend"].id
  policy = data.aws_iam_policy_document.backend.json
}

# --- postgres: pgBackRest's repository in the backups bucket ------------------------------------

data "aws_iam_policy_document" "postgres" {
  statement {
    sid       = "ListRepository"
    actions   = ["s3:ListBucket"]
    resources = [aws_s3_bucket.backups.arn]

    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = ["pgbackrest", "pgbackrest/*"]
    }
  }

  # s3:DeleteObject for pgBackRest's expiry (repo1-retention-full). As for the qdrant tier, no
  # s3:DeleteObjectVersion: an expired or deleted object stays as a noncurrent version for
  # noncurrent_version_retention_days, so a compromised host cannot erase the backups.
  statement {
    sid       = "ReadWriteRepository"
    actions   = ["s3:PutObject", "s3:GetObject", "s3:DeleteObject", "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts"]
    resources = ["${aws_s3_bucket.backups.arn}/pgbackrest/*"]
  }

  statement {
    sid       = "UseKeyForRepository"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [aws_kms_key.main.arn]

    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["s3.${var.region}.amazonaws.com"]
    }
  }
}

resource "aws_iam_role_policy" "postgres" {
  name   = "pgbackrest-repository"
  role   = aws_iam_role.tier["postgres"].id
  policy = data.aws_iam_policy_document.postgres.json
}

# --- monitoring: the Qdrant read-only key ----------------------------------------------------

data "aws_iam_policy_document" "monitoring" {
  statement {
    sid       = "ReadScrapeSecrets"
    actions   = ["secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret"]
    resources = [for k, s in aws_secretsmanager_secret.app : s.arn if contains(local.secrets[k].readers, "monitoring")]
  }

  statement {
    sid       = "UseKeyForSecrets"
    actions   = ["kms:Decrypt"]
    resources = [aws_kms_key.main.arn]

    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["secretsmanager.${var.region}.amazonaws.com"]
    }
  }
}

resource "aws_iam_role_policy" "monitoring" {
  name   = "scrape-secrets"
  role   = aws_iam_role.tier["monitoring"].id
  policy = data.aws_iam_policy_document.monitoring.json
}

# --- edge: certbot DNS-01 through Route 53 (two edges behind the NLB share one name) -------
# Only under acme_challenge = "dns-01", whose validation guarantees a zone id; with
# http-01 (one edge) the edges get no DNS permission even if a zone id is set.

data "aws_iam_policy_document" "edge_dns01" {
  count = var.acme_challenge == "dns-01" ? 1 : 0

  statement {
    sid       = "FindZone"
    actions   = ["route53:ListHostedZones"]
    resources = ["*"]
  }

  statement {
    sid       = "WaitForChange"
    actions   = ["route53:GetChange"]
    resources = ["arn:${local.partition}:route53:::change/*"]
  }

  statement {
    sid       = "WriteChallengeRecords"
    actions   = ["route53:ChangeResourceRecordSets"]
    resources = ["arn:${local.partition}:route53:::hostedzone/${var.route53_zone_id}"]

    condition {
      test     = "ForAllValues:StringEquals"
      variable = "route53:ChangeResourceRecordSetsRecordTypes"
      values   = ["TXT"]
    }
  }
}

resource "aws_iam_role_policy" "edge_dns01" {
  count = var.acme_challenge == "dns-01" ? 1 : 0

  name   = "certbot-dns01"
  role   = aws_iam_role.tier["edge"].id
  policy = data.aws_iam_policy_document.edge_dns01[0].json
}

# --- S3 replication of the documents bucket ---------------------------------------------------

data "aws_iam_policy_document" "replication_assume" {
  statement {
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["s3.amazonaws.com"]
    }

    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }
  }
}

resource "aws_iam_role" "replication" {
  name               = "${local.name}-documents-replication"
  description        = "S3 replication of the QueryGPT ${var.env} documents bucket"
  assume_role_policy = data.aws_iam_policy_document.replication_assume.json
}

data "aws_iam_policy_document" "replication" {
  statement {
    sid       = "ReadSourceConfiguration"
    actions   = ["s3:GetReplicationConfiguration", "s3:ListBucket"]
    resources = [aws_s3_bucket.documents.arn]
  }

  statement {
    sid = "ReadSourceVersions"
    actions = [
      "s3:GetObjectVersionForReplication",
      "s3:GetObjectVersionAcl",
      "s3:GetObjectVersionTagging",
    ]
    resources = ["${aws_s3_bucket.documents.arn}/*"]
  }

  statement {
    sid       = "WriteReplica"
    actions   = ["s3:ReplicateObject", "s3:ReplicateDelete", "s3:ReplicateTags"]
    resources = ["${aws_s3_bucket.documents_replica.arn}/*"]
  }

  statement {
    sid       = "DecryptSource"
    actions   = ["kms:Decrypt"]
    resources = [aws_kms_key.main.arn]

    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["s3.${var.region}.amazonaws.com"]
    }
  }

  statement {
    sid       = "EncryptReplica"
    actions   = ["kms:Encrypt", "kms:GenerateDataKey"]
    resources = [aws_kms_key.replica.arn]

    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["s3.${var.replica_region}.amazonaws.com"]
    }
  }
}

resource "aws_iam_role_policy" "replication" {
  name   = "replicate-documents"
  role   = aws_iam_role.replication.id
  policy = data.aws_iam_policy_document.replication.json
}
