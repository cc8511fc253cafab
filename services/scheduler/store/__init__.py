"""scheduler service - store."""
