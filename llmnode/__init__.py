"""llmnode: a peer-to-peer mesh for serving language models and running agents."""
