# Buckets:
#   backups            Qdrant snapshots (written only by the qdrant tier's role; the backup
#                      role uploads them and applies retention). Versioned, KMS; deleted snapshots kept
#                      noncurrent_version_retention_days.
#   documents          uploaded source documents (backend tier). Versioned, KMS, replicated
#                      to documents-replica in replica_region.
#   documents-replica  the cross-region copy (aws.replica provider, its own KMS key).
#   access-logs        S3 server access logs of backups and documents.
# Every bucket: public access blocked, ACLs disabled (BucketOwnerEnforced), TLS-only
# policy, lifecycle rules, EventBridge notifications on.

locals {
  bucket_prefix = "${local.name}-"
  bucket_suffix = "-${local.account_id}"
}

# Denies every request that does not use TLS; used by each bucket's policy.
data "aws_iam_policy_document" "tls_only" {
  for_each = {
    access_logs       = aws_s3_bucket.access_logs.arn
    backups           = aws_s3_bucket.backups.arn
    documents         = aws_s3_bucket.documents.arn
    documents_replica = aws_s3_bucket.documents_replica.arn
  }

  statement {
    sid       = "DenyInsecureTransport"
    effect    = "Deny"
    actions   = ["s3:*"]
    resources = [each.value, "${each.value}/*"]

    principals {
      type        = "*"
      identifiers = ["*"]
    }

    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
}

# --- access-logs --------------------------------------------------------------------------

resource "aws_s3_bucket" "access_logs" {
  #checkov:skip=CKV_AWS_18:This is the access-log target bucket; logging it into itself would loop.
  #checkov:skip=CKV_AWS_144:Access logs are audit data of this region only; no cross-region copy is kept.
  #checkov:skip=CKV_AWS_145:S3 server access logging only delivers to buckets with SSE-S3 (AES256), not SSE-KMS.
  bucket = "${local.bucket_prefix}access-logs${local.bucket_suffix}"
}

resource "aws_s3_bucket_ownership_controls" "access_logs" {
  bucket = aws_s3_bucket.access_logs.id

  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_public_access_block" "access_logs" {
  bucket                  = aws_s3_bucket.access_logs.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_versioning" "access_logs" {
  bucket = aws_s3_bucket.access_logs.id

  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "access_logs" {
  bucket = aws_s3_bucket.access_logs.id

  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm = "AES256"
    }
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "access_logs" {
  bucket = aws_s3_bucket.access_logs.id

  rule {
    id     = "expire-access-logs"
    status = "Enabled"

    filter {}

    expiration {
      days = var.access_log_retention_days
    }

    noncurrent_version_expiration {
      noncurrent_days = var.noncurrent_version_retention_days
    }

    abort_incomplete_multipart_upload {
      days_after_initiation = 7
    }
  }

  depends_on = [aws_s3_bucket_versioning.access_logs]
}

data "aws_iam_policy_document" "access_logs" {
  source_policy_documents = [data.aws_iam_policy_document.tls_only["access_logs"].json]

  statement {
    sid       = "S3ServerAccessLogsDelivery"
    actions   = ["s3:PutObject"]
    resources = ["${aws_s3_bucket.access_logs.arn}/*"]

    principals {
      type        = "Service"
      identifiers = ["logging.s3.amazonaws.com"]
    }

    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }

    condition {
      test     = "ArnLike"
      variable = "aws:SourceArn"
      values   = [aws_s3_bucket.backups.arn, aws_s3_bucket.documents.arn]
    }
  }
}

resource "aws_s3_bucket_policy" "access_logs" {
  bucket = aws_s3_bucket.access_logs.id
  policy = data.aws_iam_policy_document.access_logs.json

  depends_on = [aws_s3_bucket_public_access_block.access_logs]
}

resource "aws_s3_bucket_notification" "access_logs" {
  bucket      = aws_s3_bucket.access_logs.id
  eventbridge = true
}

# --- backups ------------------------------------------------------------------------------

resource "aws_s3_bucket" "backups" {
  #checkov:skip=CKV_AWS_144:Qdrant snapshots are derived data (re-embeddable from the replicated documents bucket); a cross-region snapshot copy is a cost decision left out, see docs/terraform.md.
  bucket = "${local.bucket_prefix}backups${local.bucket_suffix}"
}

resource "aws_s3_bucket_ownership_controls" "backups" {
  bucket = aws_s3_bucket.backups.id

  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_public_access_block" "backups" {
  bucket                  = aws_s3_bucket.backups.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_versioning" "backups" {
  bucket = aws_s3_bucket.backups.id

  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "backups" {
  bucket = aws_s3_bucket.backups.id

  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = "aws:kms"
      kms_master_key_id = aws_kms_key.main.arn
    }
    bucket_key_enabled = true
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "backups" {
  bucket = aws_s3_bucket.backups.id

  # Retention is the backup program's (roles/backup: N days, never the newest good copy,
  # which an age-based expiration here could remove after a long outage). What it deletes
  # only becomes noncurrent, and goes after noncurrent_version_retention_days: the window
  # in which a deletion can be undone.
  rule {
    id     = "expire-deleted-snapshots"
    status = "Enabled"

    filter {}

    noncurrent_version_expiration {
      noncurrent_days = var.noncurrent_version_retention_days
    }

    abort_incomplete_multipart_upload {
      days_after_initiation = 7
    }
  }

  depends_on = [aws_s3_bucket_versioning.backups]
}

resource "aws_s3_bucket_logging" "backups" {
  bucket        = aws_s3_bucket.backups.id
  target_bucket = aws_s3_bucket.access_logs.id
  target_prefix = "backups/"
}

resource "aws_s3_bucket_policy" "backups" {
  bucket = aws_s3_bucket.backups.id
  policy = data.aws_iam_policy_document.tls_only["backups"].json

  depends_on = [aws_s3_bucket_public_access_block.backups]
}

resource "aws_s3_bucket_notification" "backups" {
  bucket      = aws_s3_bucket.backups.id
  eventbridge = true
}

# --- documents ----------------------------------------------------------------------------

resource "aws_s3_bucket" "documents" {
  bucket = "${local.bucket_prefix}documents${local.bucket_suffix}"
}

resource "aws_s3_bucket_ownership_controls" "documents" {
  bucket = aws_s3_bucket.documents.id

  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_public_access_block" "documents" {
  bucket                  = aws_s3_bucket.documents.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_versioning" "documents" {
  bucket = aws_s3_bucket.documents.id

  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "documents" {
  bucket = aws_s3_bucket.documents.id

  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = "aws:kms"
      kms_master_key_id = aws_kms_key.main.arn
    }
    bucket_key_enabled = true
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "documents" {
  bucket = aws_s3_bucket.documents.id

  # Current documents stay until the application deletes them; old versions go after
  # the undo window. An erasure leaves one delete marker for replication to carry
  # (docs/architecture.md, "Storage"); it goes once it is the key's only version.
  rule {
    id     = "expire-noncurrent-versions"
    status = "Enabled"

    filter {}

    expiration {
      expired_object_delete_marker = true
    }

    noncurrent_version_expiration {
      noncurrent_days = var.noncurrent_version_retention_days
    }

    abort_incomplete_multipart_upload {
      days_after_initiation = 7
    }
  }

  depends_on = [aws_s3_bucket_versioning.documents]
}

resource "aws_s3_bucket_logging" "documents" {
  bucket        = aws_s3_bucket.documents.id
  target_bucket = aws_s3_bucket.access_logs.id
  target_prefix = "documents/"
}

resource "aws_s3_bucket_policy" "documents" {
  bucket = aws_s3_bucket.documents.id
  policy = data.aws_iam_policy_document.tls_only["documents"].json

  depends_on = [aws_s3_bucket_public_access_block.documents]
}

resource "aws_s3_bucket_notification" "documents" {
  bucket      = aws_s3_bucket.documents.id
  eventbridge = true
}

resource "aws_s3_bucket_replication_configuration" "documents" {
  bucket = aws_s3_bucket.documents.id
  role   = aws_iam_role.replication.arn

  rule {
    id     = "documents-to-${var.replica_region}"
    status = "Enabled"

    filter {}

    delete_marker_replication {
      status = "Enabled"
    }

    source_selection_criteria {
      sse_kms_encrypted_objects {
        status = "Enabled"
      }
    }

    destination {
      bucket        = aws_s3_bucket.documents_replica.arn
      storage_class = "STANDARD_IA"

      encryption_configuration {
        replica_kms_key_id = aws_kms_key.replica.arn
      }
    }
  }

  # Replication needs versioning on both sides first.
  depends_on = [
    aws_s3_bucket_versioning.documents,
    aws_s3_bucket_versioning.documents_replica,
  ]
}

# --- documents-replica (replica_region) ---------------------------------------------------

resource "aws_s3_bucket" "documents_replica" {
  #checkov:skip=CKV_AWS_18:Replica bucket written only by S3 replication; access is logged on the source bucket and in CloudTrail, and an access-log bucket in the replica region would only log replication.
  #checkov:skip=CKV_AWS_144:This bucket is itself the cross-region replica of the documents bucket.
  provider = aws.replica

  bucket = "${local.bucket_prefix}documents-replica${local.bucket_suffix}"
}

resource "aws_s3_bucket_ownership_controls" "documents_replica" {
  provider = aws.replica

  bucket = aws_s3_bucket.documents_replica.id

  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_public_access_block" "documents_replica" {
  provider = aws.replica

  bucket                  = aws_s3_bucket.documents_replica.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_versioning" "documents_replica" {
  provider = aws.replica

  bucket = aws_s3_bucket.documents_replica.id

  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "documents_replica" {
  provider = aws.replica

  bucket = aws_s3_bucket.documents_replica.id

  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = "aws:kms"
      kms_master_key_id = aws_kms_key.replica.arn
    }
    bucket_key_enabled = true
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "documents_replica" {
  provider = aws.replica

  bucket = aws_s3_bucket.documents_replica.id

  rule {
    id     = "expire-noncurrent-versions"
    status = "Enabled"

    filter {}

    # The replicated delete marker of an erased document, once its copies have expired.
    expiration {
      expired_object_delete_marker = true
    }

    noncurrent_version_expiration {
      noncurrent_days = var.noncurrent_version_retention_days
    }

    abort_incomplete_multipart_upload {
      days_after_initiation = 7
    }
  }

  depends_on = [aws_s3_bucket_versioning.documents_replica]
}

resource "aws_s3_bucket_policy" "documents_replica" {
  provider = aws.replica

  bucket = aws_s3_bucket.documents_replica.id
  policy = data.aws_iam_policy_document.tls_only["documents_replica"].json

  depends_on = [aws_s3_bucket_public_access_block.documents_replica]
}

resource "aws_s3_bucket_notification" "documents_replica" {
  provider = aws.replica

  bucket      = aws_s3_bucket.documents_replica.id
  eventbridge = true
}
