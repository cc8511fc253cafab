"""scheduler service - domain."""
