"""Asking the person at the terminal before a change they cannot take back."""

from __future__ import annotations

import sys


def confirm(prompt: str) -> bool:
    """Ask on stderr, read the answer from stdin (a terminal): yes only for y/yes."""
    sys.stderr.write(prompt)
    sys.stderr.flush()
    try:
        answer = input()
    except EOFError:
        return False
    return answer.strip().lower() in ("y", "yes")
