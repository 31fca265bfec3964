"""What the tools print on stdout: JSON for programs, aligned tables for people."""

from __future__ import annotations

import json
import sys
from typing import Any

from processor.core.display import fit, pad, printable, width


def write_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2) + "\n")
    sys.stdout.flush()


def format_table(headers: list[str], rows: list[list[Any]], max_width: int = 80) -> str:
    """A plain aligned text table for terminals.

    Every cell goes through `display.printable` (one record is one row; no control, bidi or
    invisible character reaches the terminal) and is cut to `max_width` display columns.
    """
    cells = [[fit(printable(str(c)), max_width) for c in r] for r in [headers, *rows]]
    widths = [max(width(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(pad(c, w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
