"""Settings versions for the history's tests: each one distinguishable by the outcome of one external
`user` attempt (limited, monitor, enabled), applied at an effective time through `updated_at` or through
the record timestamp, and the decision read back. Shared by `tests/core/test_settings*.py`."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from processor.core.attempts import parse_attempt
from processor.core.evaluator import assess
from processor.core.settings import (
    SettingsHistory,
)
from processor.core.times import to_millis
from tests.support.strategies import (
    ACCOUNTS,
    BASE_MS,
    MINUTE,
    NOW_MS,
    attempt_obj,
    dumps,
    iso,
    settings_obj,
)

#: 9999-12-31T23:59:59.999Z, the last instant SPEC §3 accepts.
MAX_MS = to_millis(datetime(9999, 12, 31, 23, 59, 59, 999_000, tzinfo=UTC))

ACC = ACCOUNTS[0]
EXT = ACCOUNTS[1]
T1 = BASE_MS + 10 * MINUTE
T2 = BASE_MS + 20 * MINUTE
T3 = BASE_MS + 30 * MINUTE

# Each version is distinguishable by the outcome of one external `user` attempt.
LIMITED = {"user": {"state": "limited"}}
MONITOR = {"user": {"state": "monitor"}}
ENABLED: dict[str, Any] = {}
OUTCOME_OF = {"limited": "enforced_deny", "monitor": "would_be_deny", "enabled": "unrestricted"}
TYPES = {"limited": LIMITED, "monitor": MONITOR, "enabled": ENABLED}


def record(types: dict[str, Any] | None, updated_ms: int | None = None, account: str = ACC) -> bytes:
    return dumps(settings_obj(account, types, iso(updated_ms) if updated_ms is not None else None))


def put(h: SettingsHistory, state: str, t_ms: int, account: str = ACC, *, via: str = "updated_at",
        offset: int | None = None) -> None:
    """Apply a version effective at t_ms, either through updated_at or through the record timestamp."""
    if via == "updated_at":
        err = h.apply_record(account.encode(), record(TYPES[state], t_ms, account), 0, "s", 0, offset)
    else:
        err = h.apply_record(account.encode(), record(TYPES[state], None, account), t_ms, "s", 0, offset)
    assert err is None


def decide(h: SettingsHistory, t_ms: int, account: str = ACC) -> tuple[str, int | None, bool]:
    """(outcome, effective ms of the version used, exact) of an external user attempt at t_ms."""
    attempt = parse_attempt(dumps(attempt_obj(account, EXT, "user", t_ms)), NOW_MS)
    verdict, version, exact = assess(h, attempt)
    return verdict.outcome, (version.effective_ms if version else None), exact
