# Secrets Manager secrets `hokusai/{env}/{component}/{name}`, one per component that needs
# the value, so each execution role reads only its own component's secrets. Terraform
# creates the secrets, never their values: an operator sets them once with
# `aws secretsmanager put-secret-value` (README.md), so no secret is in code or state.
locals {
  # component => { secret name => env var injected into the container }
  secret_env = {
    api = {
      "database-url"          = "DATABASE_URL"
      "huggingface-api-key"   = "HUGGINGFACE_API_KEY"
      "mlflow-webhook-secret" = "MLFLOW_WEBHOOK_SECRET"
    }
    worker = {
      "database-url"          = "DATABASE_URL"
      "huggingface-api-key"   = "HUGGINGFACE_API_KEY"
      "mlflow-tracking-token" = "MLFLOW_TRACKING_TOKEN"
    }
    migrate = {
      "database-url" = "DATABASE_URL"
    }
  }

  secrets = merge([
    for component, names in local.secret_env : {
      for name, env_var in names : "${component}/${name}" => {
        component = component
        name      = name
        env_var   = env_var
      }
    }
  ]...)
}

resource "aws_secretsmanager_secret" "hokusai" {
  for_each = local.secrets

  name                    = "hokusai/${local.env}/${each.key}"
  description             = "hokusai-serve ${local.env}: ${each.value.env_var} of the ${each.value.component} task"
  kms_key_id              = aws_kms_key.hokusai.arn
  recovery_window_in_days = 30

  tags = {
    Component = each.value.component
  }
}
