"""Example llmnode applications (run them with ``python -m examples.NAME``)."""
