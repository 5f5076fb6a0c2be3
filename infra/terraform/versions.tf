# Terraform and provider versions, and the one AWS provider of this stack (us-east-1).
terraform {
  required_version = ">= 1.6.0"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 5.80"
    }
  }

  # State lives in the platform's shared S3 backend; the bucket, key and lock table are
  # given at `terraform init -backend-config=...` time (see README.md), never committed.
  backend "s3" {}
}

provider "aws" {
  region = var.aws_region

  default_tags {
    tags = local.tags
  }
}

data "aws_caller_identity" "current" {}

data "aws_partition" "current" {}
