resource "aws_rds_cluster" "main" {
  engine         = "aurora-postgresql"
  engine_version = "15.4"
}
