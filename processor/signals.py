"""A stop signal that arrives before `run` can act on it is remembered, not fatal.

Importing the commands takes about 2 s on a loaded node, and a rolling restart can send SIGTERM to a
process that is still importing. The default action would kill it (exit -15) before any handler of
`run` exists. `hold()` is the first thing the executable does; `release()` gives the other commands
their default behaviour back (Ctrl-C stops `tail`), re-delivering a signal that arrived meanwhile.
Stdlib only: every layer may read `EARLY`.
"""

from __future__ import annotations

import signal
import threading
from typing import Any

#: Set by a SIGTERM or SIGINT received while held.
EARLY = threading.Event()
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
_previous: dict[int, Any] = {}
_received: list[int] = []


def _remember(signum: int, _frame: object) -> None:
    _received.append(signum)
    EARLY.set()


def hold() -> None:
    """Remember stop signals instead of acting on them (main thread only)."""
    for s in _STOP_SIGNALS:
        _previous[s] = signal.signal(s, _remember)


def release() -> None:
    """Restore the handlers `hold` replaced, then deliver the first signal received meanwhile."""
    for s, handler in _previous.items():
        signal.signal(s, handler)
    _previous.clear()
    if _received:
        signal.raise_signal(_received[0])
