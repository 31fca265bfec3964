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


def from_millis(ms: int) -> datetime:
    return EPOCH + timedelta(milliseconds=ms)


def rfc3339_millis(ms: int) -> str:
    """`2026-11-27T12:00:00.123Z`: the rendering every JSON output of the product uses."""
    dt = from_millis(ms)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"
