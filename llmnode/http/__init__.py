"""The HTTP face of a node: the OpenAI API, agents over HTTP, /metrics and the dashboard (I/O)."""
