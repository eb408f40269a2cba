"""llmnode: a peer-to-peer mesh for serving language models and running agents."""

__version__ = "0.1.0"
