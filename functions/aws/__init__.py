"""AWS Lambda adapter (entry points `functions.aws.handler.*`)."""
