resource "aws_cloudwatch_dashboard" "main" {
  dashboard_name = "app"
}
