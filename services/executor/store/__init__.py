"""executor service - store."""
