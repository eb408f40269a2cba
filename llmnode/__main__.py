"""``python -m llmnode``: the same as the ``llmnode`` command."""

from llmnode.cli.main import main

main()
