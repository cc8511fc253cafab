"""scheduler service - api."""
