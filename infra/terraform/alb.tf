# The API behind the existing main ALB: one target group (health check on /health) and
# listener rules for `/api/*` and the ops paths of docs/design/http-api.md. /metrics is only routed
# for the scrapers' CIDRs (it names models and costs). TLS ends at the ALB's listener.

resource "aws_lb_target_group" "api" {
  name                 = local.service_names["api"]
  port                 = local.api_port
  protocol             = "HTTP"
  target_type          = "ip"
  vpc_id               = var.vpc_id
  deregistration_delay = 30

  health_check {
    enabled             = true
    path                = "/health"
    matcher             = "200"
    protocol            = "HTTP"
    port                = "traffic-port"
    interval            = 15
    timeout             = 5
    healthy_threshold   = 2
    unhealthy_threshold = 3
  }
}

locals {
  # An ALB rule accepts at most five path patterns, hence the split.
  listener_rules = merge(
    {
      api = { offset = 0, paths = ["/api/*"], source_ips = [] }
      ops = { offset = 1, paths = ["/health", "/ready", "/openapi.json"], source_ips = [] }
      ui  = { offset = 2, paths = ["/docs", "/docs/*", "/dashboard", "/dashboard/*"], source_ips = [] }
    },
    length(var.metrics_allowed_cidrs) > 0 ? {
      metrics = { offset = 3, paths = ["/metrics"], source_ips = var.metrics_allowed_cidrs }
    } : {}
  )
}

resource "aws_lb_listener_rule" "api" {
  for_each = local.listener_rules

  listener_arn = var.alb_listener_arn
  priority     = var.listener_rule_priority_base + each.value.offset

  action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.api.arn
  }

  condition {
    path_pattern {
      values = each.value.paths
    }
  }

  dynamic "condition" {
    for_each = length(each.value.source_ips) > 0 ? [each.value.source_ips] : []
    content {
      source_ip {
        values = condition.value
      }
    }
  }
}
