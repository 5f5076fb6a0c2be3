# The deployment-command queue of docs/design/queue.md and its dead-letter queue. SQS moves a
# message to the DLQ after `queue_max_receive_count` receives (a crash-loop backstop: the
# worker itself dead-letters after QUEUE_MAX_ATTEMPTS). Both are encrypted with the KMS key.
resource "aws_sqs_queue" "dlq" {
  name                              = "hokusai-deployments-dlq-${local.env}"
  message_retention_seconds         = 1209600 # 14 days, the SQS maximum: time to replay
  kms_master_key_id                 = aws_kms_key.hokusai.arn
  kms_data_key_reuse_period_seconds = 300
}

resource "aws_sqs_queue" "deployments" {
  name                              = "hokusai-deployments-${local.env}"
  visibility_timeout_seconds        = var.queue_visibility_timeout_seconds
  message_retention_seconds         = 345600 # 4 days
  receive_wait_time_seconds         = 20     # long polling
  kms_master_key_id                 = aws_kms_key.hokusai.arn
  kms_data_key_reuse_period_seconds = 300

  redrive_policy = jsonencode({
    deadLetterTargetArn = aws_sqs_queue.dlq.arn
    maxReceiveCount     = var.queue_max_receive_count
  })
}

# Only the deployments queue may use the DLQ as its dead-letter target.
resource "aws_sqs_queue_redrive_allow_policy" "dlq" {
  queue_url = aws_sqs_queue.dlq.id
  redrive_allow_policy = jsonencode({
    redrivePermission = "byQueue"
    sourceQueueArns   = [aws_sqs_queue.deployments.arn]
  })
}
