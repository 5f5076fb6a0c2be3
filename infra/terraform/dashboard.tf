# The CloudWatch dashboard `hokusai-{env}`: traffic, errors and latency of predictions,
# deployments and dead letters, cost, and the ECS and ALB view of the services.
locals {
  ns = local.metrics_namespace

  dashboard_widgets = [
    {
      type = "metric", x = 0, y = 0, width = 12, height = 6
      properties = {
        title  = "Predictions and errors (all models)"
        region = var.aws_region
        stat   = "Sum"
        period = 300
        metrics = [
          [{ expression = "SELECT SUM(PredictionRequests) FROM \"${local.ns}\"", label = "requests", id = "r" }],
          [{ expression = "SELECT SUM(PredictionErrors) FROM \"${local.ns}\"", label = "errors", id = "e" }],
        ]
      }
    },
    {
      type = "metric", x = 12, y = 0, width = 12, height = 6
      properties = {
        title  = "Prediction latency (${var.alarm_provider})"
        region = var.aws_region
        period = 300
        metrics = [
          [local.ns, "PredictionLatency", "Provider", var.alarm_provider, { stat = "p50", label = "p50" }],
          [local.ns, "PredictionLatency", "Provider", var.alarm_provider, { stat = "p99", label = "p99" }],
        ]
        annotations = { horizontal = [{ value = var.alarm_predict_p99_latency_ms, label = "p99 alarm" }] }
      }
    },
    {
      type = "metric", x = 0, y = 6, width = 8, height = 6
      properties = {
        title  = "Deployment failures and rollback_failed"
        region = var.aws_region
        period = 300
        stat   = "Sum"
        metrics = [
          [{ expression = "SELECT SUM(DeploymentFailures) FROM \"${local.ns}\"", label = "deployment failures", id = "f" }],
          [local.ns, "RollbackFailed", { label = "rollback_failed" }],
        ]
      }
    },
    {
      type = "metric", x = 8, y = 6, width = 8, height = 6
      properties = {
        title  = "Queues and dead letters"
        region = var.aws_region
        period = 300
        metrics = [
          ["AWS/SQS", "ApproximateNumberOfMessagesVisible", "QueueName", aws_sqs_queue.deployments.name, { stat = "Maximum", label = "queue depth" }],
          ["AWS/SQS", "ApproximateNumberOfMessagesVisible", "QueueName", aws_sqs_queue.dlq.name, { stat = "Maximum", label = "DLQ depth" }],
          [{ expression = "SELECT SUM(DeadLetteredMessages) FROM \"${local.ns}\"", label = "dead-lettered (app)", id = "d" }],
          [local.ns, "OutboxPending", { stat = "Maximum", label = "outbox pending" }],
        ]
      }
    },
    {
      type = "metric", x = 16, y = 6, width = 8, height = 6
      properties = {
        title  = "Provider cost (USD per hour)"
        region = var.aws_region
        period = 3600
        stat   = "Sum"
        metrics = [
          [{ expression = "SELECT SUM(ProviderCostUSD) FROM \"${local.ns}\" GROUP BY ModelId", label = "", id = "c" }],
        ]
      }
    },
    {
      type = "metric", x = 0, y = 12, width = 12, height = 6
      properties = {
        title  = "ECS CPU and memory"
        region = var.aws_region
        period = 300
        stat   = "Average"
        metrics = [
          ["AWS/ECS", "CPUUtilization", "ClusterName", local.cluster_name, "ServiceName", local.service_names["api"], { label = "api CPU" }],
          ["AWS/ECS", "MemoryUtilization", "ClusterName", local.cluster_name, "ServiceName", local.service_names["api"], { label = "api memory" }],
          ["AWS/ECS", "CPUUtilization", "ClusterName", local.cluster_name, "ServiceName", local.service_names["worker"], { label = "worker CPU" }],
          ["AWS/ECS", "MemoryUtilization", "ClusterName", local.cluster_name, "ServiceName", local.service_names["worker"], { label = "worker memory" }],
        ]
      }
    },
    {
      type = "metric", x = 12, y = 12, width = 12, height = 6
      properties = {
        title  = "ALB: API requests, 5xx and healthy targets"
        region = var.aws_region
        period = 300
        metrics = [
          ["AWS/ApplicationELB", "RequestCount", "TargetGroup", aws_lb_target_group.api.arn_suffix, "LoadBalancer", var.alb_arn_suffix, { stat = "Sum" }],
          ["AWS/ApplicationELB", "HTTPCode_Target_5XX_Count", "TargetGroup", aws_lb_target_group.api.arn_suffix, "LoadBalancer", var.alb_arn_suffix, { stat = "Sum" }],
          ["AWS/ApplicationELB", "HealthyHostCount", "TargetGroup", aws_lb_target_group.api.arn_suffix, "LoadBalancer", var.alb_arn_suffix, { stat = "Minimum" }],
        ]
      }
    },
    {
      type = "alarm", x = 0, y = 18, width = 24, height = 4
      properties = {
        title = "Alarms"
        alarms = [
          aws_cloudwatch_metric_alarm.deployment_failures.arn,
          aws_cloudwatch_metric_alarm.rollback_failed.arn,
          aws_cloudwatch_metric_alarm.dlq_not_empty.arn,
          aws_cloudwatch_metric_alarm.predict_error_ratio.arn,
          aws_cloudwatch_metric_alarm.predict_p99_latency.arn,
          aws_cloudwatch_metric_alarm.auth_unavailable.arn,
          aws_cloudwatch_metric_alarm.outbox_backlog.arn,
          aws_cloudwatch_metric_alarm.idle_costly_endpoints.arn,
          aws_cloudwatch_metric_alarm.dead_lettered_messages.arn,
          aws_cloudwatch_metric_alarm.alb_target_5xx_ratio.arn,
          aws_cloudwatch_metric_alarm.alb_unhealthy_hosts.arn,
        ]
      }
    },
  ]
}

resource "aws_cloudwatch_dashboard" "hokusai" {
  dashboard_name = "hokusai-${local.env}"
  dashboard_body = jsonencode({ widgets = local.dashboard_widgets })
}
