"""Avro eval events for the codec's tests (`tests/codec/test_avro*.py`): one realistic event the
processor would produce, the two framings' codecs, and decoded records normalised for comparison
(timestamp-millis decode as datetimes)."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any

from processor.codec.avro import (
    EvalCodec,
)
from processor.core.attempts import parse_attempt
from processor.core.evaluator import assess
from processor.core.events import build_event
from processor.core.settings import SettingsHistory
from tests.support.strategies import (
    ACCOUNTS,
    BASE_MS,
    NOW_MS,
    attempt_obj,
    dumps,
    settings_obj,
)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


SINGLE = EvalCodec()
CONFLUENT = EvalCodec(schema_id=4242)


def produced_event(state: str = "monitor", allowed: bool = False) -> dict[str, Any]:
    h = SettingsHistory()
    allow = [ACCOUNTS[1]] if allowed else []
    doc = settings_obj(ACCOUNTS[0], {"user": {"state": state, "external_allowed_accounts": allow}})
    assert h.apply_record(ACCOUNTS[0].encode(), dumps(doc), BASE_MS - 5, "iam.account-settings", 2, 77) is None
    obj = attempt_obj(ACCOUNTS[0], ACCOUNTS[1], "user", BASE_MS + 123, attempt_id="att-ü-1",
                      resource={"crn": "crn:v1:x", "service_name": "cos"}, user_agent="curl/8 ☃")
    attempt = parse_attempt(dumps(obj), NOW_MS)
    verdict, version, exact = assess(h, attempt)
    assert verdict.emit
    return build_event(attempt, verdict, version, exact, NOW_MS)


def _ms(value: Any) -> Any:
    return (value - _EPOCH) // timedelta(milliseconds=1) if isinstance(value, datetime) else value


def normalise(record: dict[str, Any]) -> dict[str, Any]:
    """Decoded timestamp-millis come back as datetimes: compare as epoch ms."""
    out = copy.deepcopy(record)
    out["eventTime"] = _ms(out["eventTime"])
    out["observer"]["evaluatedAt"] = _ms(out["observer"]["evaluatedAt"])
    sv = out["responseData"]["settingsVersion"]
    sv["effectiveTime"] = _ms(sv["effectiveTime"])
    return out
