# What the release pipeline and operators need: names to run the migrate task, update the
# services, set the secrets, and find the dashboard.

output "cluster_name" {
  description = "ECS cluster."
  value       = aws_ecs_cluster.hokusai.name
}

output "service_names" {
  description = "ECS services of the api and the worker."
  value       = { api = aws_ecs_service.api.name, worker = aws_ecs_service.worker.name }
}

output "task_definition_arns" {
  description = "Task definitions (api, worker, migrate) of this apply."
  value       = { for c, td in aws_ecs_task_definition.hokusai : c => td.arn }
}

output "migrate_network_configuration" {
  description = "awsvpcConfiguration for `aws ecs run-task` of the migrate task."
  value = {
    subnets        = var.private_subnet_ids
    securityGroups = [aws_security_group.task["migrate"].id]
    assignPublicIp = "DISABLED"
  }
}

output "sqs_queue_url" {
  description = "SQS_QUEUE_URL."
  value       = aws_sqs_queue.deployments.url
}

output "sqs_dlq_url" {
  description = "SQS_DLQ_URL."
  value       = aws_sqs_queue.dlq.url
}

output "secret_names" {
  description = "Secrets Manager secrets whose values an operator sets (hokusai/{env}/{component}/{name})."
  value       = sort([for s in aws_secretsmanager_secret.hokusai : s.name])
}

output "api_target_group_arn" {
  description = "Target group of the API on the main ALB."
  value       = aws_lb_target_group.api.arn
}

output "service_discovery_name" {
  description = "In-VPC name of the API."
  value       = "${aws_service_discovery_service.api.name}.${aws_service_discovery_private_dns_namespace.hokusai.name}"
}

output "dashboard_name" {
  description = "CloudWatch dashboard."
  value       = aws_cloudwatch_dashboard.hokusai.dashboard_name
}

output "kms_key_arn" {
  description = "KMS key encrypting queues, secrets and logs."
  value       = aws_kms_key.hokusai.arn
}
