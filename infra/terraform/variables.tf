# Inputs. Per-environment values live in environments/{staging,production}.tfvars; nothing
# secret is a variable (secret values are set in Secrets Manager out of band).

variable "environment" {
  description = "Deployment environment; also ENVIRONMENT of the tasks (config/{environment}.toml)."
  type        = string
  validation {
    condition     = contains(["staging", "production"], var.environment)
    error_message = "environment must be staging or production."
  }
}

variable "aws_region" {
  description = "AWS region of the stack."
  type        = string
  default     = "us-east-1"
}

variable "image" {
  description = "Container image of hokusai-serve (repository:tag or @digest); one image for api, worker and migrate."
  type        = string
}

variable "ecr_repository_arn" {
  description = "ARN of the ECR repository the image is pulled from (the execution roles may pull only from it)."
  type        = string
}

# --- network and the existing main ALB -------------------------------------------------

variable "vpc_id" {
  description = "VPC of the ECS services and of the Cloud Map namespace."
  type        = string
}

variable "private_subnet_ids" {
  description = "Private subnets of the tasks (no public IPs)."
  type        = list(string)
}

variable "database_cidr_blocks" {
  description = "CIDR blocks of the PostgreSQL database the tasks connect to (egress on 5432)."
  type        = list(string)
}

variable "alb_listener_arn" {
  description = "ARN of the existing main ALB's HTTPS listener that gets the hokusai rules."
  type        = string
}

variable "alb_security_group_id" {
  description = "Security group of the existing main ALB (the only ingress allowed to the API tasks)."
  type        = string
}

variable "alb_arn_suffix" {
  description = "ARN suffix of the main ALB (app/name/id), for CloudWatch dimensions."
  type        = string
}

variable "listener_rule_priority_base" {
  description = "First listener-rule priority of this environment; the stack uses base .. base+3."
  type        = number
}

variable "metrics_allowed_cidrs" {
  description = "Source CIDRs allowed to reach /metrics through the ALB (Prometheus scrapers); empty = no public /metrics rule."
  type        = list(string)
  default     = []
}

# --- application settings (non-secret) ------------------------------------------------------

variable "hokusai_auth_service_url" {
  description = "HOKUSAI_AUTH_SERVICE_URL."
  type        = string
  default     = "https://auth.hokus.ai"
}

variable "huggingface_namespace" {
  description = "HUGGINGFACE_NAMESPACE: the HF user or organisation owning the endpoints."
  type        = string
}

variable "mlflow_tracking_uri" {
  description = "MLFLOW_TRACKING_URI of the MLflow server."
  type        = string
}

variable "http_provider_allowed_hosts" {
  description = "HTTP_PROVIDER_ALLOWED_HOSTS: hosts, host:port and CIDRs the http provider may call (empty disables it)."
  type        = string
  default     = ""
}

variable "rust_log" {
  description = "RUST_LOG of the tasks."
  type        = string
  default     = "info,sqlx=warn,sea_orm=warn"
}

# --- capacity ------------------------------------------------------------------------------

variable "api_desired_count" {
  description = "Running API tasks."
  type        = number
  default     = 2
}

variable "worker_desired_count" {
  description = "Running worker tasks."
  type        = number
  default     = 1
}

variable "task_size" {
  description = "Fargate CPU units and memory (MiB) per component."
  type = map(object({
    cpu    = number
    memory = number
  }))
  default = {
    api     = { cpu = 512, memory = 1024 }
    worker  = { cpu = 256, memory = 512 }
    migrate = { cpu = 256, memory = 512 }
  }
}

# --- queues ----------------------------------------------------------------------------------

variable "queue_visibility_timeout_seconds" {
  description = "SQS visibility timeout; the worker extends it while a step runs."
  type        = number
  default     = 60
}

variable "queue_max_receive_count" {
  description = "Receives before SQS moves a message to the DLQ (the worker's QUEUE_MAX_ATTEMPTS)."
  type        = number
  default     = 8
}

# --- observability --------------------------------------------------------------------------

variable "log_retention_days" {
  description = "Retention of the CloudWatch log groups (days)."
  type        = number
  default     = 365
}

variable "alarm_sns_topic_names" {
  description = "Names of the SNS topics (in this account and region) notified when an alarm fires or recovers: the platform's on-call topics. The ARNs are built from the account Terraform runs in."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for name in var.alarm_sns_topic_names : can(regex("^[A-Za-z0-9_-]{1,256}$", name))])
    error_message = "alarm_sns_topic_names holds topic names (letters, digits, - and _), not ARNs or placeholders."
  }
}

variable "alarm_provider" {
  description = "Provider dimension of the Hokusai/API rollup series the ratio, latency and idle alarms read."
  type        = string
  default     = "huggingface"
}

variable "alarm_predict_5xx_ratio_percent" {
  description = "Predict error ratio (PredictionErrors / PredictionRequests, %) that raises the alarm."
  type        = number
  default     = 5
}

variable "alarm_alb_5xx_ratio_percent" {
  description = "Share of the API's ALB responses that are 5xx (%) that raises the alarm."
  type        = number
  default     = 5
}

variable "alarm_predict_p99_latency_ms" {
  description = "p99 of PredictionLatency (ms) that raises the alarm."
  type        = number
  default     = 2000
}

variable "alarm_outbox_backlog" {
  description = "Unpublished outbox rows (OutboxPending) that raise the alarm."
  type        = number
  default     = 100
}

variable "alarm_idle_hours" {
  description = "Hours of provider cost with no prediction before the idle-endpoint alarm."
  type        = number
  default     = 6
}

variable "tags" {
  description = "Extra tags on every resource."
  type        = map(string)
  default     = {}
}
