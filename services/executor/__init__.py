"""executor service."""
