"""The executable's entry (`access-eval`, `python -m processor`): hold stop signals, then import.

See `processor.signals` for why the hold comes before the (slow) import of the commands.
"""

from __future__ import annotations

from processor import signals


def main() -> int:
    signals.hold()
    from processor.cli import main as cli_main

    return cli_main()
