"""scheduler service - advisor."""
