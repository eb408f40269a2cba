"""The ``llmnode`` command (Typer) and the composition root that wires a node together (I/O)."""


def main() -> None:
    """The console script's entry point; imports the commands only when run."""
    from llmnode.cli.main import main as run  # noqa: PLC0415 - keeps `import llmnode.cli.x` light

    run()
