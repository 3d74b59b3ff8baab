resource "aws_ecs_service" "app" {
  name          = "app"
  desired_count = 3
}
