# Customer-managed keys: one in the primary region (EBS volumes, secrets, buckets, flow
# logs) and one in the replica region (the documents replica). Rotation is on; the key
# policy delegates to IAM (instance roles get kms:* only through their own policies) and
# lets CloudWatch Logs use the key for the flow-log group only.

resource "aws_kms_key" "main" {
  description             = "QueryGPT ${var.env}: EBS, Secrets Manager, S3 and flow logs"
  enable_key_rotation     = true
  deletion_window_in_days = var.kms_deletion_window_days

  # A key policy's Resource "*" means "this key". Written inline (not as an
  # aws_iam_policy_document) because it is not an identity policy.
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [
      {
        Sid       = "AccountAdministersKeyThroughIAM"
        Effect    = "Allow"
        Principal = { AWS = "arn:${local.partition}:iam::${local.account_id}:root" }
        Action    = "kms:*"
        Resource  = "*"
      },
      {
        Sid       = "CloudWatchLogsEncryptsFlowLogs"
        Effect    = "Allow"
        Principal = { Service = "logs.${var.region}.amazonaws.com" }
        Action = [
          "kms:Encrypt*",
          "kms:Decrypt*",
          "kms:ReEncrypt*",
          "kms:GenerateDataKey*",
          "kms:Describe*",
        ]
        Resource = "*"
        Condition = {
          ArnEquals = {
            "kms:EncryptionContext:aws:logs:arn" = "arn:${local.partition}:logs:${var.region}:${local.account_id}:log-group:${local.flow_log_group_name}"
          }
        }
      },
    ]
  })

  tags = {
    Name = "${local.name}-main"
  }
}

resource "aws_kms_alias" "main" {
  name          = "alias/${local.name}-main"
  target_key_id = aws_kms_key.main.key_id
}

resource "aws_kms_key" "replica" {
  provider = aws.replica

  description             = "QueryGPT ${var.env}: documents replica bucket"
  enable_key_rotation     = true
  deletion_window_in_days = var.kms_deletion_window_days

  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [
      {
        Sid       = "AccountAdministersKeyThroughIAM"
        Effect    = "Allow"
        Principal = { AWS = "arn:${local.partition}:iam::${local.account_id}:root" }
        Action    = "kms:*"
        Resource  = "*"
      },
    ]
  })

  tags = {
    Name = "${local.name}-replica"
  }
}

resource "aws_kms_alias" "replica" {
  provider = aws.replica

  name          = "alias/${local.name}-replica"
  target_key_id = aws_kms_key.replica.key_id
}
