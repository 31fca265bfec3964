"""argparse only: one module per command; no command module imports another."""

from processor.cli.main import main

__all__ = ["main"]
