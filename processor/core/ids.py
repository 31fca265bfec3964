"""Account-id normalisation and time helpers shared by every boundary model."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from pydantic import AwareDatetime, BeforeValidator, StringConstraints

#: Account ids are compared after trimming and lower-casing (SPEC §3).
AccountId = Annotated[str, StringConstraints(strip_whitespace=True, to_lower=True, min_length=1, max_length=256)]

_RFC3339_PREFIX = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}").match


def _rfc3339_only(value: Any) -> Any:
    """pydantic's lax datetime also takes Unix timestamps; the contract says RFC 3339 with an offset."""
    if not isinstance(value, str) or not _RFC3339_PREFIX(value):
        raise ValueError("must be an RFC 3339 date-time string with an offset, e.g. 2026-11-27T12:00:00.123Z")
    return value


#: RFC 3339 timestamps with an offset (SPEC §3 updated_at, §4 event_time); numbers are rejected.
Rfc3339 = Annotated[AwareDatetime, BeforeValidator(_rfc3339_only)]

IDENTITY_TYPES: tuple[str, ...] = ("user", "service_id", "service")
STATES: tuple[str, ...] = ("enabled", "monitor", "limited")

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


def normalize_account(raw: str) -> str:
    """The one place that says how two account ids compare."""
    return raw.strip().lower()


def to_millis(dt: datetime) -> int:
    """Exact epoch milliseconds (floor), without float rounding surprises."""
    return (dt - EPOCH) // _MS


def from_millis(ms: int) -> datetime:
    return EPOCH + timedelta(milliseconds=ms)


def rfc3339_millis(ms: int) -> str:
    """`2026-11-27T12:00:00.123Z`: the rendering every JSON output of the product uses."""
    dt = from_millis(ms)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"
