"""Time at the boundaries: RFC 3339 input (with an offset, never a number), exact epoch milliseconds,
the latest instant every reader can decode, and the one RFC 3339 rendering of every JSON output."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from pydantic import AwareDatetime, BeforeValidator

_RFC3339_PREFIX = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}").match


def _rfc3339_only(value: Any) -> Any:
    """pydantic's lax datetime also takes Unix timestamps; the contract says RFC 3339 with an offset."""
    if not isinstance(value, str) or not _RFC3339_PREFIX(value):
        raise ValueError("must be an RFC 3339 date-time string with an offset, e.g. 2026-11-27T12:00:00.123Z")
    return value


#: RFC 3339 timestamps with an offset (SPEC §3 updated_at, §4 event_time); numbers are rejected.
Rfc3339 = Annotated[AwareDatetime, BeforeValidator(_rfc3339_only)]

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
#: The last millisecond a Python datetime (and so every reader of timestamp-millis we know) can hold.
MAX_TIME_MS = (datetime(9999, 12, 31, 23, 59, 59, 999_000, tzinfo=UTC) - EPOCH) // _MS


def to_millis(dt: datetime) -> int:
    """Exact epoch milliseconds (floor), without float rounding surprises."""
    return (dt - EPOCH) // _MS


#: Minutes whose start is known (`known_minute_millis`), by their text `YYYY-MM-DDTHH:MM`; bounded.
_MINUTES: dict[str, int] = {}
MINUTES_MAX = 4096


#: What `_digit` gives for anything but an ASCII digit: enough to make any sum of the six digits negative.
_NOT_A_DIGIT = -1_000_000


def _digit(ts: str, i: int) -> int:
    d = ord(ts[i]) - 48
    return d if 0 <= d <= 9 else _NOT_A_DIGIT


def _minute_offset(ts: str) -> int:
    """Milliseconds past its minute of a `YYYY-MM-DDTHH:MM:SS.fffZ` or `…:SSZ` text (UTC, seconds 00-59),
    or -1 for any other text. Decides the form only; the minute's text is not checked here. Digit by
    digit (`ord`), not by slices, `isdigit` and `int`: a quarter of the time compiled."""
    n = len(ts)
    if n == 24:
        if ts[19] != "." or ts[23] != "Z":
            return -1
        ms = _digit(ts, 20) * 100 + _digit(ts, 21) * 10 + _digit(ts, 22)
    elif n == 20:
        if ts[19] != "Z":
            return -1
        ms = 0
    else:
        return -1
    if ts[16] != ":":
        return -1
    ms += (_digit(ts, 17) * 10 + _digit(ts, 18)) * 1000
    return ms if 0 <= ms < 60_000 else -1


def known_minute_millis(ts: str) -> int | None:
    """The exact epoch milliseconds of an RFC 3339 text whose minute a full parse has already read
    (`remember_minute`), or None: the caller parses it. Why: most event times of a stream share a few
    minutes, and a datetime per attempt (parse, subtract, divide) was ~0.7 µs of the hot path. The texts
    taken here are a subset of what the full parse takes, with the same value: the minute's text was
    valid there, and any seconds 00-59 with 0 or 3 fraction digits in UTC are valid after it."""
    base = _MINUTES.get(ts[:16])
    if base is None:
        return None
    offset = _minute_offset(ts)
    return None if offset < 0 else base + offset


def remember_minute(ts: str, ms: int) -> None:
    """After a full parse gave `ms` for `ts`: its minute's start, for `known_minute_millis`."""
    offset = _minute_offset(ts)
    if offset < 0:
        return
    if len(_MINUTES) >= MINUTES_MAX:
        _MINUTES.clear()
    _MINUTES[ts[:16]] = ms - offset


def from_millis(ms: int) -> datetime:
    return EPOCH + timedelta(milliseconds=ms)


def rfc3339_millis(ms: int) -> str:
    """`2026-11-27T12:00:00.123Z`: the rendering every JSON output of the product uses."""
    dt = from_millis(ms)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"
