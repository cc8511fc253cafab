"""executor service - api."""
