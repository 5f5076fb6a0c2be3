# Names shared by every file: they follow the platform's conventions (cluster
# `hokusai-{env}`, services `hokusai-{component}-{env}`, secrets
# `hokusai/{env}/{component}/{name}`, namespace `hokusai-{env}.local`).
locals {
  env        = var.environment
  account_id = data.aws_caller_identity.current.account_id
  partition  = data.aws_partition.current.partition

  cluster_name   = "hokusai-${local.env}"
  namespace_name = "hokusai-${local.env}.local"

  # The three ECS task families of the one image.
  components = toset(["api", "worker", "migrate"])
  service_names = {
    for c in local.components : c => "hokusai-${c}-${local.env}"
  }

  # CloudWatch namespace of docs/design/observability.md (must equal CLOUDWATCH_NAMESPACE).
  metrics_namespace = "Hokusai/API"

  api_port = 8001

  tags = merge(var.tags, {
    Project     = "hokusai-serve"
    Environment = local.env
    ManagedBy   = "terraform"
  })
}
