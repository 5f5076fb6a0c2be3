# Least-privilege roles, one pair per component:
# - the execution role (used by the ECS agent): pull the image from its one repository,
#   write to the component's log group, read only `hokusai/{env}/{component}/*` secrets;
# - the task role (used by the application): api may send deployment commands; the worker
#   consumes, retries and dead-letters them; both publish metrics only to Hokusai/API.
#   `migrate` makes no AWS call and has no task role.

data "aws_iam_policy_document" "ecs_tasks_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ecs-tasks.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }
  }
}

# --- execution roles --------------------------------------------------------------------------

resource "aws_iam_role" "execution" {
  for_each = local.components

  name               = "${local.service_names[each.key]}-execution"
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks_assume.json
}

data "aws_iam_policy_document" "execution" {
  for_each = local.components

  statement {
    sid       = "EcrAuthorization"
    actions   = ["ecr:GetAuthorizationToken"] # account-wide by design: no resource-level form
    resources = ["*"]
  }

  statement {
    sid = "PullTheHokusaiImage"
    actions = [
      "ecr:BatchCheckLayerAvailability",
      "ecr:BatchGetImage",
      "ecr:GetDownloadUrlForLayer",
    ]
    resources = [var.ecr_repository_arn]
  }

  statement {
    sid       = "WriteOwnLogGroup"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${aws_cloudwatch_log_group.task[each.key].arn}:log-stream:*"]
  }

  statement {
    sid     = "ReadOwnSecrets"
    actions = ["secretsmanager:GetSecretValue"]
    resources = [
      for key, secret in aws_secretsmanager_secret.hokusai : secret.arn
      if local.secrets[key].component == each.key
    ]
  }

  statement {
    sid       = "DecryptOwnSecrets"
    actions   = ["kms:Decrypt"]
    resources = [aws_kms_key.hokusai.arn]
    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["secretsmanager.${var.aws_region}.amazonaws.com"]
    }
  }
}

resource "aws_iam_role_policy" "execution" {
  for_each = local.components

  name   = "hokusai-execution"
  role   = aws_iam_role.execution[each.key].id
  policy = data.aws_iam_policy_document.execution[each.key].json
}

# --- task roles -------------------------------------------------------------------------------

resource "aws_iam_role" "task" {
  for_each = toset(["api", "worker"])

  name               = "${local.service_names[each.key]}-task"
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks_assume.json
}

data "aws_iam_policy_document" "put_metrics" {
  statement {
    sid       = "PutMetricDataToHokusaiNamespaceOnly"
    actions   = ["cloudwatch:PutMetricData"] # no resource-level form: the namespace condition scopes it
    resources = ["*"]
    condition {
      test     = "StringEquals"
      variable = "cloudwatch:namespace"
      values   = [local.metrics_namespace]
    }
  }
}

data "aws_iam_policy_document" "api_task" {
  source_policy_documents = [data.aws_iam_policy_document.put_metrics.json]

  statement {
    sid       = "SendDeploymentCommands"
    actions   = ["sqs:SendMessage", "sqs:GetQueueAttributes"]
    resources = [aws_sqs_queue.deployments.arn]
  }

  # The admin dead-letter routes (list, replay, purge) read and delete DLQ messages.
  statement {
    sid = "OperateDeadLetters"
    actions = [
      "sqs:ReceiveMessage",
      "sqs:DeleteMessage",
      "sqs:ChangeMessageVisibility",
      "sqs:GetQueueAttributes",
    ]
    resources = [aws_sqs_queue.dlq.arn]
  }

  statement {
    sid       = "EncryptQueueMessages"
    actions   = ["kms:GenerateDataKey", "kms:Decrypt"]
    resources = [aws_kms_key.hokusai.arn]
    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["sqs.${var.aws_region}.amazonaws.com"]
    }
  }
}

data "aws_iam_policy_document" "worker_task" {
  source_policy_documents = [data.aws_iam_policy_document.put_metrics.json]

  statement {
    sid = "ConsumeRetryAndDeadLetterCommands"
    actions = [
      "sqs:ReceiveMessage",
      "sqs:DeleteMessage",
      "sqs:ChangeMessageVisibility",
      "sqs:SendMessage",
      "sqs:GetQueueAttributes",
    ]
    resources = [aws_sqs_queue.deployments.arn, aws_sqs_queue.dlq.arn]
  }

  statement {
    sid       = "UseQueueEncryptionKey"
    actions   = ["kms:GenerateDataKey", "kms:Decrypt"]
    resources = [aws_kms_key.hokusai.arn]
    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["sqs.${var.aws_region}.amazonaws.com"]
    }
  }
}

resource "aws_iam_role_policy" "api_task" {
  name   = "hokusai-api"
  role   = aws_iam_role.task["api"].id
  policy = data.aws_iam_policy_document.api_task.json
}

resource "aws_iam_role_policy" "worker_task" {
  name   = "hokusai-worker"
  role   = aws_iam_role.task["worker"].id
  policy = data.aws_iam_policy_document.worker_task.json
}
