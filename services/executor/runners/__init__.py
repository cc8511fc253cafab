"""executor service - runners."""
