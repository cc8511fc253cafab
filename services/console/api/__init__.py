"""The JSON API under /api/v1: one thin route per endpoint (validate, call the gateway,
convert), grouped by what they show."""
