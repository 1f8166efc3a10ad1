"""What is deployed beside the functions, and the table of platform limits (`infra.limits`)."""
