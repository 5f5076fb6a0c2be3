# Production. Placeholders in <angle brackets> are the platform's existing resources; no
# secret goes here (secret values live in Secrets Manager).
environment = "production"
aws_region  = "us-east-1"

image              = "<account>.dkr.ecr.us-east-1.amazonaws.com/hokusai-serve:<git-sha>"
ecr_repository_arn = "arn:aws:ecr:us-east-1:<account>:repository/hokusai-serve"

vpc_id               = "<vpc-id>"
private_subnet_ids   = ["<subnet-a>", "<subnet-b>", "<subnet-c>"]
database_cidr_blocks = ["10.10.0.0/16"]

alb_listener_arn            = "arn:aws:elasticloadbalancing:us-east-1:<account>:listener/app/main-production/<lb-id>/<listener-id>"
alb_security_group_id       = "<alb-sg-id>"
alb_arn_suffix              = "app/main-production/<lb-id>"
listener_rule_priority_base = 1100
metrics_allowed_cidrs       = ["10.10.0.0/16"]

huggingface_namespace = "hokusai"
mlflow_tracking_uri   = "https://mlflow.hokus.ai"

api_desired_count    = 2
worker_desired_count = 2
task_size = {
  api     = { cpu = 1024, memory = 2048 }
  worker  = { cpu = 512, memory = 1024 }
  migrate = { cpu = 256, memory = 512 }
}
log_retention_days = 731

alarm_sns_topic_names = ["hokusai-production-alerts"]
