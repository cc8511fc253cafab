"""executor service - domain."""
