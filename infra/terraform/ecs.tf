# The ECS cluster `hokusai-{env}`, the three task definitions of the one image (api, worker,
# and the one-off migrate task the release runs first), and the two long-running services
# `hokusai-api-{env}` and `hokusai-worker-{env}` on Fargate in private subnets.

resource "aws_ecs_cluster" "hokusai" {
  name = local.cluster_name

  setting {
    name  = "containerInsights"
    value = "enabled"
  }
}

locals {
  # Non-secret settings; names and values match docs/design/configuration.md and config/{env}.toml.
  common_env = {
    ENVIRONMENT                = local.env
    QUEUE_BACKEND              = "sqs"
    SQS_QUEUE_URL              = aws_sqs_queue.deployments.url
    SQS_DLQ_URL                = aws_sqs_queue.dlq.url
    AWS_REGION                 = var.aws_region
    AUTH_BACKEND               = "hokusai"
    HOKUSAI_AUTH_SERVICE_URL   = var.hokusai_auth_service_url
    HUGGINGFACE_NAMESPACE      = var.huggingface_namespace
    MLFLOW_TRACKING_URI        = var.mlflow_tracking_uri
    CLOUDWATCH_NAMESPACE       = local.metrics_namespace
    METRICS_CLOUDWATCH_ENABLED = "true"
    LOG_FORMAT                 = "json"
    RUST_LOG                   = var.rust_log
    # Where the `http` provider may connect (empty: provider disabled; docs/operator-guide.md).
    HTTP_PROVIDER_ALLOWED_HOSTS = var.http_provider_allowed_hosts
  }

  component_env = {
    # Behind the ALB (one proxy, which appends the address it saw to X-Forwarded-For): the
    # client IP is the last entry. The ALB forwards to the tasks over HTTP inside the VPC
    # (TLS ends at the ALB; the tasks' security group admits only the ALB).
    api = merge(local.common_env, {
      API_HOST            = "0.0.0.0"
      API_PORT            = tostring(local.api_port)
      TRUST_FORWARDED_FOR = "true"
      TRUSTED_PROXY_HOPS  = "1"
    })
    worker = merge(local.common_env, { WORKER_METRICS_PORT = tostring(local.worker_metrics_port) })
    # The migrate task uses only the database. Production's serving checks (HF token, auth
    # backend) apply to `api` and `worker` only, so migrate gets neither the HF token nor
    # a placeholder; the queue URLs come with common_env.
    migrate = local.common_env
  }

  # Ports with an HTTP listener: the API, and the worker's /metrics and /health.
  worker_metrics_port = 9091
  http_ports          = { api = local.api_port, worker = local.worker_metrics_port }

  commands = {
    api     = ["api"]
    worker  = ["worker"]
    migrate = ["migrate", "up"]
  }

  container_definitions = {
    for c in local.components : c => [merge(
      {
        name                   = c
        image                  = var.image
        essential              = true
        command                = local.commands[c]
        user                   = "10001:10001"
        readonlyRootFilesystem = true
        stopTimeout            = 30
        environment = [
          for k in sort(keys(local.component_env[c])) : { name = k, value = local.component_env[c][k] }
        ]
        secrets = [
          for key, s in local.secrets : {
            name      = s.env_var
            valueFrom = aws_secretsmanager_secret.hokusai[key].arn
          } if s.component == c
        ]
        logConfiguration = {
          logDriver = "awslogs"
          options = {
            awslogs-group         = aws_cloudwatch_log_group.task[c].name
            awslogs-region        = var.aws_region
            awslogs-stream-prefix = c
          }
        }
      },
      contains(keys(local.http_ports), c) ? {
        portMappings = [{ containerPort = local.http_ports[c], protocol = "tcp", name = c == "api" ? "http" : "metrics" }]
        # Same check as the image's HEALTHCHECK (the image has bash, not curl): GET /health on
        # the API port, or on the worker's metrics port.
        healthCheck = {
          command = [
            "CMD", "bash", "-c",
            "exec 3<>/dev/tcp/127.0.0.1/${local.http_ports[c]} && printf 'GET /health HTTP/1.0\\r\\nHost: localhost\\r\\n\\r\\n' >&3 && read -r -t 4 _ status _ <&3 && [ \"$status\" = 200 ]",
          ]
          interval    = 15
          timeout     = 5
          retries     = 3
          startPeriod = 20
        }
      } : {}
    )]
  }
}

resource "aws_ecs_task_definition" "hokusai" {
  for_each = local.components

  family                   = local.service_names[each.key]
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = var.task_size[each.key].cpu
  memory                   = var.task_size[each.key].memory
  execution_role_arn       = aws_iam_role.execution[each.key].arn
  task_role_arn            = each.key == "migrate" ? null : aws_iam_role.task[each.key].arn
  container_definitions    = jsonencode(local.container_definitions[each.key])

  runtime_platform {
    operating_system_family = "LINUX"
    cpu_architecture        = "X86_64"
  }
}

# --- security groups ---------------------------------------------------------------------------

resource "aws_security_group" "task" {
  # checkov:skip=CKV2_AWS_5:The migrate group is attached by `aws ecs run-task` at release time (README.md), not by a Terraform resource.
  for_each = local.components

  name        = "${local.service_names[each.key]}-tasks"
  description = "hokusai-serve ${each.key} tasks (${local.env})"
  vpc_id      = var.vpc_id
}

resource "aws_vpc_security_group_ingress_rule" "api_from_alb" {
  security_group_id            = aws_security_group.task["api"].id
  description                  = "API port from the main ALB only"
  referenced_security_group_id = var.alb_security_group_id
  ip_protocol                  = "tcp"
  from_port                    = local.api_port
  to_port                      = local.api_port
}

resource "aws_vpc_security_group_egress_rule" "https" {
  for_each = local.components

  security_group_id = aws_security_group.task[each.key].id
  description       = "HTTPS to AWS APIs, ECR, HuggingFace, auth.hokus.ai and MLflow"
  cidr_ipv4         = "0.0.0.0/0"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
}

resource "aws_vpc_security_group_egress_rule" "postgres" {
  for_each = {
    for pair in setproduct(tolist(local.components), var.database_cidr_blocks) :
    "${pair[0]}-${pair[1]}" => { component = pair[0], cidr = pair[1] }
  }

  security_group_id = aws_security_group.task[each.value.component].id
  description       = "PostgreSQL"
  cidr_ipv4         = each.value.cidr
  ip_protocol       = "tcp"
  from_port         = 5432
  to_port           = 5432
}

# --- services -----------------------------------------------------------------------------------

resource "aws_ecs_service" "api" {
  name                              = local.service_names["api"]
  cluster                           = aws_ecs_cluster.hokusai.id
  task_definition                   = aws_ecs_task_definition.hokusai["api"].arn
  desired_count                     = var.api_desired_count
  launch_type                       = "FARGATE"
  platform_version                  = "LATEST"
  health_check_grace_period_seconds = 30
  propagate_tags                    = "SERVICE"
  enable_execute_command            = false

  deployment_minimum_healthy_percent = 100
  deployment_maximum_percent         = 200
  deployment_circuit_breaker {
    enable   = true
    rollback = true
  }

  network_configuration {
    subnets          = var.private_subnet_ids
    security_groups  = [aws_security_group.task["api"].id]
    assign_public_ip = false
  }

  load_balancer {
    target_group_arn = aws_lb_target_group.api.arn
    container_name   = "api"
    container_port   = local.api_port
  }

  service_registries {
    registry_arn = aws_service_discovery_service.api.arn
  }

  depends_on = [aws_lb_listener_rule.api]
}

resource "aws_ecs_service" "worker" {
  name                   = local.service_names["worker"]
  cluster                = aws_ecs_cluster.hokusai.id
  task_definition        = aws_ecs_task_definition.hokusai["worker"].arn
  desired_count          = var.worker_desired_count
  launch_type            = "FARGATE"
  platform_version       = "LATEST"
  propagate_tags         = "SERVICE"
  enable_execute_command = false

  deployment_minimum_healthy_percent = 100
  deployment_maximum_percent         = 200
  deployment_circuit_breaker {
    enable   = true
    rollback = true
  }

  network_configuration {
    subnets          = var.private_subnet_ids
    security_groups  = [aws_security_group.task["worker"].id]
    assign_public_ip = false
  }
}
