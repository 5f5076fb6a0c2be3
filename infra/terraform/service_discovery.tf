# Cloud Map namespace `hokusai-{env}.local`: the API is reachable inside the VPC as
# api.hokusai-{env}.local:8001 (the worker serves no traffic and is not registered).

resource "aws_service_discovery_private_dns_namespace" "hokusai" {
  name        = local.namespace_name
  description = "hokusai-serve ${local.env}"
  vpc         = var.vpc_id
}

resource "aws_service_discovery_service" "api" {
  name = "api"

  dns_config {
    namespace_id   = aws_service_discovery_private_dns_namespace.hokusai.id
    routing_policy = "MULTIVALUE"

    dns_records {
      type = "A"
      ttl  = 10
    }
  }

  health_check_custom_config {
    failure_threshold = 1
  }
}
