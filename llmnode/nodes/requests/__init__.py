"""The request path: scheduler (pure), retry policy, router, server: one path for every request."""
