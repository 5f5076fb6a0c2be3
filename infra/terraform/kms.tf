# One customer-managed key per environment encrypts everything this stack stores: the SQS
# queues, the Secrets Manager secrets and the CloudWatch log groups. Rotation is on.
resource "aws_kms_key" "hokusai" {
  description             = "hokusai-serve ${local.env}: SQS, Secrets Manager and CloudWatch Logs"
  enable_key_rotation     = true
  deletion_window_in_days = 30

  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [
      {
        Sid       = "AccountAdministers"
        Effect    = "Allow"
        Principal = { AWS = "arn:${local.partition}:iam::${local.account_id}:root" }
        Action    = "kms:*"
        Resource  = "*"
      },
      {
        Sid       = "CloudWatchLogsEncryptsHokusaiLogGroups"
        Effect    = "Allow"
        Principal = { Service = "logs.${var.aws_region}.amazonaws.com" }
        Action = [
          "kms:Encrypt*",
          "kms:Decrypt*",
          "kms:ReEncrypt*",
          "kms:GenerateDataKey*",
          "kms:Describe*",
        ]
        Resource = "*"
        Condition = {
          ArnLike = {
            "kms:EncryptionContext:aws:logs:arn" = "arn:${local.partition}:logs:${var.aws_region}:${local.account_id}:log-group:/ecs/hokusai-*-${local.env}"
          }
        }
      },
    ]
  })
}

resource "aws_kms_alias" "hokusai" {
  name          = "alias/hokusai-${local.env}"
  target_key_id = aws_kms_key.hokusai.key_id
}
