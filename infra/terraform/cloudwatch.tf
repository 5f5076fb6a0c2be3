# Logs, alarms and the dashboard. The alarms mirror the alerts of infra/prometheus/alerts.yml
# (issue 9) on CloudWatch data: the Hokusai/API metrics of docs/design/observability.md, two
# log metric filters for the signals without a CloudWatch metric of their own, and the DLQ's
# own SQS metric.
#
# Which series each alarm reads (see README.md, "Alarms"):
# - sums across every ModelId/Provider series use a Metrics Insights query, so they hold
#   whatever dimensions the publisher attaches;
# - the ratio, the p99 and the idle check need one series per metric: they read the
#   Provider-level rollup (dimension Provider only) that the publisher emits next to the
#   per-model series (CloudWatch cannot take a percentile across dimension sets).

resource "aws_cloudwatch_log_group" "task" {
  for_each = local.components

  name              = "/ecs/${local.service_names[each.key]}"
  retention_in_days = var.log_retention_days
  kms_key_id        = aws_kms_key.hokusai.arn
}

# --- log metric filters (JSON log lines, docs/design/observability.md) ----------------------

# The worker's one line per deployment that reaches rollback_failed: the consumer's
# dead-letter warning whose reason is the failed compensation (worker/src/saga/check_status.rs).
# The queue layer's own "dead-lettering" line carries the same reason, so the pattern names
# both phrases to count each failure once. tests/tests/cloudwatch_claims.rs matches this
# pattern against the lines a real failed compensation writes.
resource "aws_cloudwatch_log_metric_filter" "rollback_failed" {
  name           = "hokusai-rollback-failed-${local.env}"
  log_group_name = aws_cloudwatch_log_group.task["worker"].name
  pattern        = "\"compensation failed\" \"dead-lettering the command for an operator\""

  metric_transformation {
    name          = "RollbackFailed"
    namespace     = local.metrics_namespace
    value         = "1"
    default_value = "0"
  }
}

# The API's request line of every 503 AUTH_UNAVAILABLE (tests/tests/cloudwatch_claims.rs
# checks the match too).
resource "aws_cloudwatch_log_metric_filter" "auth_unavailable" {
  name           = "hokusai-auth-unavailable-${local.env}"
  log_group_name = aws_cloudwatch_log_group.task["api"].name
  pattern        = "\"AUTH_UNAVAILABLE\""

  metric_transformation {
    name          = "AuthUnavailable"
    namespace     = local.metrics_namespace
    value         = "1"
    default_value = "0"
  }
}

# --- alarms -------------------------------------------------------------------------------

locals {
  alarm_prefix = "hokusai-${local.env}"
  provider_dim = { Provider = var.alarm_provider }
  # The on-call topics, by name, in this deployment's account and region.
  alarm_topic_arns = [
    for name in var.alarm_sns_topic_names :
    "arn:${local.partition}:sns:${var.aws_region}:${local.account_id}:${name}"
  ]
}

resource "aws_cloudwatch_metric_alarm" "deployment_failures" {
  alarm_name          = "${local.alarm_prefix}-deployment-failures"
  alarm_description   = "Deployments failed in the last 15 minutes (DeploymentFailures > 0). Troubleshooting: docs, alert HokusaiDeploymentFailures."
  comparison_operator = "GreaterThanThreshold"
  threshold           = 0
  evaluation_periods  = 1
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_topic_arns
  ok_actions          = local.alarm_topic_arns

  metric_query {
    id          = "failures"
    expression  = "SELECT SUM(DeploymentFailures) FROM \"${local.metrics_namespace}\""
    period      = 900
    return_data = true
  }
}

resource "aws_cloudwatch_metric_alarm" "rollback_failed" {
  alarm_name          = "${local.alarm_prefix}-rollback-failed"
  alarm_description   = "A deployment reached rollback_failed: compensation exhausted, its command is dead-lettered and an endpoint may still be billing. Act now."
  namespace           = local.metrics_namespace
  metric_name         = "RollbackFailed"
  statistic           = "Sum"
  period              = 300
  evaluation_periods  = 1
  comparison_operator = "GreaterThanThreshold"
  threshold           = 0
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_topic_arns
  ok_actions          = local.alarm_topic_arns
}

resource "aws_cloudwatch_metric_alarm" "dlq_not_empty" {
  alarm_name          = "${local.alarm_prefix}-dlq-not-empty"
  alarm_description   = "Dead-lettered deployment commands wait in ${aws_sqs_queue.dlq.name}: inspect with `hokusai-serve dlq list`, then replay or purge."
  namespace           = "AWS/SQS"
  metric_name         = "ApproximateNumberOfMessagesVisible"
  dimensions          = { QueueName = aws_sqs_queue.dlq.name }
  statistic           = "Maximum"
  period              = 300
  evaluation_periods  = 1
  comparison_operator = "GreaterThanThreshold"
  threshold           = 0
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_topic_arns
  ok_actions          = local.alarm_topic_arns
}

resource "aws_cloudwatch_metric_alarm" "predict_error_ratio" {
  alarm_name          = "${local.alarm_prefix}-predict-5xx-ratio"
  alarm_description   = "More than ${var.alarm_predict_5xx_ratio_percent}% of predictions failed for 10 minutes (PredictionErrors / PredictionRequests)."
  comparison_operator = "GreaterThanThreshold"
  threshold           = var.alarm_predict_5xx_ratio_percent
  evaluation_periods  = 2
  datapoints_to_alarm = 2
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_topic_arns
  ok_actions          = local.alarm_topic_arns

  metric_query {
    id          = "ratio"
    expression  = "IF(requests > 0, 100 * FILL(errors, 0) / requests, 0)"
    label       = "Predict error ratio (%)"
    return_data = true
  }

  metric_query {
    id = "errors"
    metric {
      namespace   = local.metrics_namespace
      metric_name = "PredictionErrors"
      dimensions  = local.provider_dim
      period      = 300
      stat        = "Sum"
    }
  }

  metric_query {
    id = "requests"
    metric {
      namespace   = local.metrics_namespace
      metric_name = "PredictionRequests"
      dimensions  = local.provider_dim
      period      = 300
      stat        = "Sum"
    }
  }
}

resource "aws_cloudwatch_metric_alarm" "predict_p99_latency" {
  alarm_name          = "${local.alarm_prefix}-predict-p99-latency"
  alarm_description   = "p99 prediction latency above ${var.alarm_predict_p99_latency_ms} ms for 15 minutes."
  namespace           = local.metrics_namespace
  metric_name         = "PredictionLatency"
  dimensions          = local.provider_dim
  extended_statistic  = "p99"
  period              = 300
  evaluation_periods  = 3
  comparison_operator = "GreaterThanThreshold"
  threshold           = var.alarm_predict_p99_latency_ms
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_topic_arns
  ok_actions          = local.alarm_topic_arns
}

resource "aws_cloudwatch_metric_alarm" "auth_unavailable" {
  alarm_name          = "${local.alarm_prefix}-auth-unavailable"
  alarm_description   = "The auth service did not answer: requests got 503 AUTH_UNAVAILABLE in two consecutive 5-minute periods."
  namespace           = local.metrics_namespace
  metric_name         = "AuthUnavailable"
  statistic           = "Sum"
  period              = 300
  evaluation_periods  = 2
  datapoints_to_alarm = 2
  comparison_operator = "GreaterThanThreshold"
  threshold           = 0
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_topic_arns
  ok_actions          = local.alarm_topic_arns
}

resource "aws_cloudwatch_metric_alarm" "outbox_backlog" {
  alarm_name          = "${local.alarm_prefix}-outbox-backlog"
  alarm_description   = "More than ${var.alarm_outbox_backlog} outbox rows unpublished for 15 minutes: the relay is stuck or SQS refuses sends."
  namespace           = local.metrics_namespace
  metric_name         = "OutboxPending"
  statistic           = "Maximum"
  period              = 300
  evaluation_periods  = 3
  comparison_operator = "GreaterThanThreshold"
  threshold           = var.alarm_outbox_backlog
  # Missing data stays visible (INSUFFICIENT_DATA) rather than silently OK: the relay
  # publishes this gauge every cycle, so its absence is itself a symptom.
  treat_missing_data = "missing"
  alarm_actions      = local.alarm_topic_arns
  ok_actions         = local.alarm_topic_arns
}

resource "aws_cloudwatch_metric_alarm" "idle_costly_endpoints" {
  alarm_name          = "${local.alarm_prefix}-idle-costly-endpoints"
  alarm_description   = "Endpoints accrued provider cost for ${var.alarm_idle_hours} h without a single prediction: undeploy or scale them to zero."
  comparison_operator = "GreaterThanOrEqualToThreshold"
  threshold           = 1
  evaluation_periods  = var.alarm_idle_hours
  datapoints_to_alarm = var.alarm_idle_hours
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_topic_arns
  ok_actions          = local.alarm_topic_arns

  metric_query {
    id          = "idle"
    expression  = "IF(FILL(cost, 0) > 0 AND FILL(requests, 0) == 0, 1, 0)"
    label       = "Billing without predictions"
    return_data = true
  }

  metric_query {
    id = "cost"
    metric {
      namespace   = local.metrics_namespace
      metric_name = "ProviderCostUSD"
      dimensions  = local.provider_dim
      period      = 3600
      stat        = "Sum"
    }
  }

  metric_query {
    id = "requests"
    metric {
      namespace   = local.metrics_namespace
      metric_name = "PredictionRequests"
      dimensions  = local.provider_dim
      period      = 3600
      stat        = "Sum"
    }
  }
}

# The application's own count of dead-lettered commands (any queue backend), next to the SQS
# DLQ's depth above: a replay empties the DLQ, this records that commands failed at all.
resource "aws_cloudwatch_metric_alarm" "dead_lettered_messages" {
  alarm_name          = "${local.alarm_prefix}-dead-lettered-messages"
  alarm_description   = "Deployment commands were dead-lettered in the last 5 minutes (DeadLetteredMessages > 0). Runbook: docs/troubleshooting.md#hokusaideadletterspresent."
  comparison_operator = "GreaterThanThreshold"
  threshold           = 0
  evaluation_periods  = 1
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_topic_arns
  ok_actions          = local.alarm_topic_arns

  metric_query {
    id          = "dead_lettered"
    expression  = "SELECT SUM(DeadLetteredMessages) FROM \"${local.metrics_namespace}\""
    period      = 300
    return_data = true
  }
}

# --- the ALB's view of the API (AWS/ApplicationELB) ------------------------------------------

locals {
  api_target_dims = {
    TargetGroup  = aws_lb_target_group.api.arn_suffix
    LoadBalancer = var.alb_arn_suffix
  }
}

resource "aws_cloudwatch_metric_alarm" "alb_target_5xx_ratio" {
  alarm_name          = "${local.alarm_prefix}-alb-5xx-ratio"
  alarm_description   = "More than ${var.alarm_alb_5xx_ratio_percent} % of the API's responses through the ALB were 5xx for 10 minutes (HTTPCode_Target_5XX_Count / RequestCount)."
  comparison_operator = "GreaterThanThreshold"
  threshold           = var.alarm_alb_5xx_ratio_percent
  evaluation_periods  = 2
  datapoints_to_alarm = 2
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_topic_arns
  ok_actions          = local.alarm_topic_arns

  metric_query {
    id          = "ratio"
    expression  = "IF(requests > 0, 100 * FILL(errors, 0) / requests, 0)"
    label       = "API 5xx (%)"
    return_data = true
  }

  metric_query {
    id = "errors"
    metric {
      namespace   = "AWS/ApplicationELB"
      metric_name = "HTTPCode_Target_5XX_Count"
      dimensions  = local.api_target_dims
      period      = 300
      stat        = "Sum"
    }
  }

  metric_query {
    id = "requests"
    metric {
      namespace   = "AWS/ApplicationELB"
      metric_name = "RequestCount"
      dimensions  = local.api_target_dims
      period      = 300
      stat        = "Sum"
    }
  }
}

resource "aws_cloudwatch_metric_alarm" "alb_unhealthy_hosts" {
  alarm_name          = "${local.alarm_prefix}-alb-unhealthy-hosts"
  alarm_description   = "API tasks fail the ALB health check (GET /health) for 3 minutes. Runbook: docs/troubleshooting.md#hokusaiapidown."
  namespace           = "AWS/ApplicationELB"
  metric_name         = "UnHealthyHostCount"
  dimensions          = local.api_target_dims
  statistic           = "Maximum"
  period              = 60
  evaluation_periods  = 3
  comparison_operator = "GreaterThanThreshold"
  threshold           = 0
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_topic_arns
  ok_actions          = local.alarm_topic_arns
}

# --- the worker service (Container Insights, enabled on the cluster) ------------------------

# The CloudWatch twin of HokusaiWorkerDown: no worker task running. Missing data breaches:
# without a running task (or without Container Insights) there is no figure at all.
resource "aws_cloudwatch_metric_alarm" "worker_down" {
  alarm_name          = "${local.alarm_prefix}-worker-down"
  alarm_description   = "No hokusai-worker task has been running for 2 minutes: deployments do not progress and the outbox is not relayed. Runbook: docs/troubleshooting.md#hokusaiworkerdown."
  namespace           = "ECS/ContainerInsights"
  metric_name         = "RunningTaskCount"
  dimensions          = { ClusterName = aws_ecs_cluster.hokusai.name, ServiceName = aws_ecs_service.worker.name }
  statistic           = "Minimum"
  period              = 60
  evaluation_periods  = 2
  datapoints_to_alarm = 2
  comparison_operator = "LessThanThreshold"
  threshold           = 1
  treat_missing_data  = "breaching"
  alarm_actions       = local.alarm_topic_arns
  ok_actions          = local.alarm_topic_arns
}
