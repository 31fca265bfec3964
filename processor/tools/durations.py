"""Time windows given on the command line (`--since 30d`, `--since 2026-11-01T00:00:00Z`) and the clock
they count back from."""

from __future__ import annotations

import re
import time
from datetime import datetime

from processor.core.display import printable
from processor.core.times import rfc3339_millis, to_millis
from processor.errors import usage_error

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 7 * 86_400_000}


def parse_duration_ms(text: str, flag: str = "--since") -> int:
    """`30d`, `12h`, `1d12h`, `90s`, `500ms`, `2w` -> milliseconds."""
    compact = text.strip().lower().replace(" ", "")
    pos, total = 0, 0.0
    while pos < len(compact):
        m = _DURATION_PART.match(compact, pos)
        if m is None:
            usage_error(f"{flag}: invalid duration '{printable(text)}': use e.g. 30d, 12h, 15m, 90s, 1d12h")
        total += float(m.group(1)) * _UNIT_MS[m.group(2)]
        pos = m.end()
    if pos == 0 or total <= 0:
        usage_error(f"{flag}: invalid duration '{printable(text)}': use e.g. 30d, 12h, 15m, 90s, 1d12h")
    return int(total)


def parse_since(text: str, now_ms: int, flag: str = "--since") -> tuple[int, str]:
    """A duration back from now (`30d`) or an RFC 3339 instant -> (start ms, words for messages)."""
    if "T" in text or (text[:4].isdigit() and "-" in text):
        try:
            dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            usage_error(
                f"{flag}: invalid time '{printable(text)}': use a duration (30d) or RFC 3339 (2026-11-01T00:00:00Z)"
            )
        if dt.tzinfo is None:
            usage_error(f"{flag}: '{printable(text)}' has no UTC offset: add Z or +HH:MM")
        start = to_millis(dt)
        return start, f"since {rfc3339_millis(start)}"
    ms = parse_duration_ms(text, flag)
    return now_ms - ms, f"in the last {_words(text)}"


def _words(duration: str) -> str:
    m = re.fullmatch(r"\s*(\d+)\s*([smhdw])\s*", duration.lower())
    if m is None:
        return duration.strip()
    n, unit = int(m.group(1)), {"s": "second", "m": "minute", "h": "hour", "d": "day", "w": "week"}[m.group(2)]
    return f"{n} {unit}" if n == 1 else f"{n} {unit}s"


def now_ms() -> int:
    return int(time.time() * 1000)
