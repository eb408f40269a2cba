"""The package version, in one place (no I/O): the node state, the CLI and the package read it."""

__version__ = "0.1.0"
