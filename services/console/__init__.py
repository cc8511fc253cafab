"""The web console: pages and a JSON API over the four services' gRPC APIs (docs/console.md)."""
