resource "aws_iam_role" "deployer" {
  name               = "stackyard-deployer"
  assume_role_policy = file("${path.module}/trust.json")
}
