"""access-eval: evaluates IAM access attempts against external identity interaction settings."""

__version__ = "0.1.0"
PRODUCT = "access-eval"
