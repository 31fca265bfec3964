"""Account-id normalisation and time helpers shared by every boundary model."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

from pydantic import StringConstraints

#: Account ids are compared after trimming and lower-casing (SPEC §3).
AccountId = Annotated[str, StringConstraints(strip_whitespace=True, to_lower=True, min_length=1, max_length=256)]

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
