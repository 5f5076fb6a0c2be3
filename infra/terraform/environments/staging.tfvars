# Staging. Placeholders in <angle brackets> are the platform's existing resources; no
# secret goes here (secret values live in Secrets Manager).
environment = "staging"
aws_region  = "us-east-1"

image              = "<account>.dkr.ecr.us-east-1.amazonaws.com/hokusai-serve:<git-sha>"
ecr_repository_arn = "arn:aws:ecr:us-east-1:<account>:repository/hokusai-serve"

vpc_id               = "<vpc-id>"
private_subnet_ids   = ["<subnet-a>", "<subnet-b>"]
database_cidr_blocks = ["10.20.0.0/16"]

alb_listener_arn            = "arn:aws:elasticloadbalancing:us-east-1:<account>:listener/app/main-staging/<lb-id>/<listener-id>"
alb_security_group_id       = "<alb-sg-id>"
alb_arn_suffix              = "app/main-staging/<lb-id>"
listener_rule_priority_base = 1100
metrics_allowed_cidrs       = ["10.20.0.0/16"]

huggingface_namespace = "hokusai-staging"
mlflow_tracking_uri   = "https://mlflow.staging.hokus.ai"

api_desired_count    = 1
worker_desired_count = 1
log_retention_days   = 365

alarm_sns_topic_names = ["hokusai-staging-alerts"]
