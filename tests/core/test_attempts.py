"""SPEC §4 access attempts: every invalid kind gives its documented reason and a detail naming the field."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from processor.codec.avro import EvalCodec
from processor.core.attempts import INVALID_REASONS, InvalidAttempt, parse_attempt
from processor.core.evaluator import assess
from processor.core.events import build_event
from processor.core.settings import SettingsHistory
from tests.support.strategies import ACCOUNTS, BASE_MS, NOW_MS, SPEC_EXAMPLE, SPEC_EXAMPLE_EVENT_MS, attempt_obj, iso

HOUR_MS = 3_600_000
Y2000_MS = 946_684_800_000  # 2000-01-01T00:00:00Z

SPEC_EXAMPLE_MS = SPEC_EXAMPLE_EVENT_MS
CLOCK = SPEC_EXAMPLE_MS + 60_000


def invalid(raw: Any, now_ms: int = CLOCK, **kw: Any) -> InvalidAttempt:
    with pytest.raises(InvalidAttempt) as info:
        parse_attempt(raw, now_ms, **kw)
    exc = info.value
    assert exc.reason in INVALID_REASONS
    assert exc.detail
    return exc


def patched(path: str, value: Any = ...) -> bytes:
    """The SPEC example with one field set (or removed when value is ...)."""
    obj = copy.deepcopy(SPEC_EXAMPLE)
    *parents, last = path.split(".")
    node: Any = obj
    for p in parents:
        node = node[p]
    if value is ...:
        del node[last]
    else:
        node[last] = value
    return json.dumps(obj).encode()


def test_spec_example_is_valid() -> None:
    a = parse_attempt(json.dumps(SPEC_EXAMPLE).encode(), CLOCK)
    assert a.event_ms == SPEC_EXAMPLE_MS
    m = a.model
    assert (m.id, m.account_id, m.action) == (SPEC_EXAMPLE["id"], SPEC_EXAMPLE["account_id"], SPEC_EXAMPLE["action"])
    assert (m.identity.iam_id, m.identity.type, m.identity.account_id, m.identity.name) == (
        "IBMid-270000ABCD", "user", "0b1c2d3e4f5a69788796a5b4c3d2e1f0", "jane@example.com",
    )
    assert m.resource is not None and m.resource.service_name == "cloud-object-storage"
    assert (m.source_ip, m.user_agent) == ("203.0.113.7", "ibmcloud-cli/2.30")


def test_str_and_bytes_inputs_agree() -> None:
    raw = json.dumps(SPEC_EXAMPLE)
    assert parse_attempt(raw, CLOCK).event_ms == parse_attempt(raw.encode(), CLOCK).event_ms


def test_optional_fields_may_be_absent_or_null() -> None:
    minimal = {k: v for k, v in SPEC_EXAMPLE.items() if k not in ("resource", "source_ip", "user_agent")}
    minimal["identity"] = {k: v for k, v in SPEC_EXAMPLE["identity"].items() if k != "name"}  # type: ignore[union-attr]
    a = parse_attempt(json.dumps(minimal), CLOCK)
    assert (a.model.resource, a.model.source_ip, a.model.user_agent, a.model.identity.name) == (None, None, None, None)
    nulls = dict(SPEC_EXAMPLE, resource=None, source_ip=None, user_agent=None)
    assert parse_attempt(json.dumps(nulls), CLOCK).model.resource is None


def test_unknown_extra_fields_are_ignored() -> None:
    obj = copy.deepcopy(SPEC_EXAMPLE)
    obj["schema_version"] = 7
    obj["tags"] = ["a", {"b": None}]
    obj["identity"]["mfa"] = True  # type: ignore[index]
    obj["resource"]["region"] = "eu-de"  # type: ignore[index]
    a = parse_attempt(json.dumps(obj), CLOCK)
    assert a.model.id == SPEC_EXAMPLE["id"]


def test_account_ids_are_trimmed_and_lower_cased() -> None:
    raw = json.dumps(attempt_obj(" \tABCdef  ", "  0B1C  ")).encode()
    a = parse_attempt(raw, NOW_MS)
    assert (a.model.account_id, a.model.identity.account_id) == ("abcdef", "0b1c")


@pytest.mark.parametrize(
    "raw",
    [b"{", b"", b"not json", b'{"id": "x",}', b"\xff\xfe{}", b'{"id": "\xff"}', b'{"id": "caf\xe9"}', b"{}{}"],
    ids=["truncated", "empty", "text", "trailing-comma", "utf16-bom", "invalid-utf8", "latin1", "two-objects"],
)
def test_bad_json_and_invalid_utf8(raw: bytes) -> None:
    exc = invalid(raw)
    assert exc.reason == "bad_json"
    assert "JSON" in exc.detail


def test_tombstone_is_bad_json() -> None:
    exc = invalid(None)
    assert exc.reason == "bad_json"
    assert "null" in exc.detail


@pytest.mark.parametrize("raw", [b"[]", b"[{}]", b"null", b"42", b'"attempt"', b"true"])
def test_top_level_not_an_object(raw: bytes) -> None:
    exc = invalid(raw)
    assert exc.reason in ("wrong_type", "bad_json")
    assert "object" in exc.detail


REQUIRED = ["id", "event_time", "account_id", "identity", "identity.iam_id", "identity.type",
            "identity.account_id", "action"]


@pytest.mark.parametrize("path", REQUIRED)
def test_missing_required_field(path: str) -> None:
    exc = invalid(patched(path))
    assert exc.reason == "missing_field"
    assert path in exc.detail


@pytest.mark.parametrize("path", [p for p in REQUIRED if p != "event_time"])
def test_required_field_null_is_wrong_type(path: str) -> None:
    exc = invalid(patched(path, None))
    assert exc.reason in ("wrong_type", "unknown_identity_type")
    assert path in exc.detail


WRONG_TYPES = [
    ("id", 5),
    ("id", True),
    ("id", {"x": 1}),
    ("account_id", 12345),
    ("account_id", ["a"]),
    ("identity", "IBMid-1"),
    ("identity", [1]),
    ("identity.iam_id", 1),
    ("identity.account_id", 0),
    ("identity.name", 5),
    ("action", ["read"]),
    ("resource", "crn:v1:..."),
    ("resource.crn", 5),
    ("resource.service_name", False),
    ("source_ip", 203),
    ("user_agent", ["x"]),
]


REQUIRED_WRONG = [(p, v) for p, v in WRONG_TYPES if p.split(".")[0] in ("id", "account_id", "identity", "action")
                  and p != "identity.name"]


@pytest.mark.parametrize(("path", "value"), REQUIRED_WRONG, ids=[f"{p}={v!r}" for p, v in REQUIRED_WRONG])
def test_wrong_types(path: str, value: Any) -> None:
    exc = invalid(patched(path, value))
    assert exc.reason == "wrong_type"
    assert path in exc.detail


EMPTY = [(p, "") for p in ("id", "account_id", "identity.iam_id", "identity.account_id", "action")] + [
    ("account_id", "   "),  # account ids are trimmed before the length check
    ("identity.account_id", " \t "),
]


@pytest.mark.parametrize(("path", "value"), EMPTY)
def test_empty_required_strings_are_invalid(path: str, value: str) -> None:
    exc = invalid(patched(path, value))
    assert exc.reason == "invalid_field"
    assert path in exc.detail


@pytest.mark.parametrize("itype", ["robot", "User", "USER", "trusted_profile", "", "service-id"])
def test_unknown_identity_type_exact_message(itype: str) -> None:
    exc = invalid(patched("identity.type", itype))
    assert exc.reason == "unknown_identity_type"
    assert exc.detail == "identity.type: must be one of user, service_id, service"


@pytest.mark.parametrize("value", [5, None, ["user"]])
def test_non_string_identity_type(value: Any) -> None:
    exc = invalid(patched("identity.type", value))
    assert exc.reason in ("unknown_identity_type", "wrong_type")
    assert "identity.type" in exc.detail


@pytest.mark.parametrize(
    "value",
    ["2026-11-27T12:00:00.123", "2026-11-27T12:00:00", "2026-11-27", "yesterday", "2026-13-40T00:00:00Z", "",
     "12:00:00Z", None],
    ids=["no-offset-ms", "no-offset", "date-only", "word", "impossible-date", "empty", "time-only", "null"],
)
def test_bad_event_time(value: Any) -> None:
    exc = invalid(patched("event_time", value))
    assert exc.reason == "bad_timestamp"
    assert "event_time" in exc.detail


@pytest.mark.parametrize("value", [1_795_780_800, "1795780800"], ids=["number", "numeric-string"])
def test_event_time_must_be_rfc3339_not_a_unix_timestamp(value: Any) -> None:
    exc = invalid(patched("event_time", value))
    assert exc.reason == "bad_timestamp"


@pytest.mark.parametrize(
    ("event_ms", "ok"),
    [
        (Y2000_MS, True),
        (Y2000_MS - 1, False),
        (0, False),
        (CLOCK + HOUR_MS, True),
        (CLOCK + HOUR_MS + 1, False),
        (CLOCK + 365 * 24 * HOUR_MS, False),
        (CLOCK - 10 * 365 * 24 * HOUR_MS, True),
    ],
    ids=["2000-01-01", "just-before-2000", "1970", "exactly-1h-ahead", "1h+1ms-ahead", "next-year", "10y-old"],
)
def test_event_time_window(event_ms: int, ok: bool) -> None:
    raw = patched("event_time", iso(event_ms))
    if ok:
        assert parse_attempt(raw, CLOCK).event_ms == event_ms
    else:
        exc = invalid(raw)
        assert exc.reason == "bad_timestamp"
        assert "event_time" in exc.detail


def test_future_bound_is_configurable() -> None:
    raw = patched("event_time", iso(CLOCK + 10_000))
    assert parse_attempt(raw, CLOCK, max_future_ms=10_000).event_ms == CLOCK + 10_000
    assert invalid(raw, max_future_ms=9_999).reason == "bad_timestamp"


def test_offsets_are_honoured() -> None:
    for offset in (0, 60, -330, 14 * 60):
        assert parse_attempt(patched("event_time", iso(BASE_MS + 7, offset)), NOW_MS).event_ms == BASE_MS + 7


def test_oversize() -> None:
    big = patched("user_agent", "x" * 300_000)
    exc = invalid(big)
    assert exc.reason == "oversize"
    assert str(len(big)) in exc.detail
    small = json.dumps(SPEC_EXAMPLE).encode()
    assert invalid(small, max_bytes=len(small) - 1).reason == "oversize"
    assert parse_attempt(small, CLOCK, max_bytes=len(small)).event_ms == SPEC_EXAMPLE_MS


def test_oversize_wins_over_bad_json() -> None:
    assert invalid(b"{" * 1000, max_bytes=100).reason == "oversize"


# --- fuzz: never another exception ----------------------------------------------------------------

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
FIELDS = [*REQUIRED, "identity.name", "resource", "source_ip", "user_agent"]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(path=st.sampled_from(FIELDS), value=JSON_VALUES)
def test_any_field_value_is_valid_or_a_documented_rejection(path: str, value: Any) -> None:
    raw = patched(path, value)
    try:
        parse_attempt(raw, CLOCK)
    except InvalidAttempt as exc:
        assert exc.reason in INVALID_REASONS
        if exc.reason == "bad_json" and "is not a JSON number" in exc.detail:
            assert "NaN" in raw.decode() or "Infinity" in raw.decode()  # the strict-JSON check names no field
            return
        assert path.split(".")[0] in exc.detail


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300) | st.text(max_size=300).map(lambda s: s.encode("utf-8", "surrogatepass")))
def test_arbitrary_bytes_never_raise_anything_else(raw: bytes) -> None:
    try:
        parse_attempt(raw, CLOCK)
    except InvalidAttempt as exc:
        assert exc.reason in INVALID_REASONS and exc.detail


def test_accounts_pool_is_usable() -> None:
    assert parse_attempt(json.dumps(attempt_obj(ACCOUNTS[0], ACCOUNTS[1])), NOW_MS).model.account_id == ACCOUNTS[0]


# --- optional display fields never decide evaluation (SPEC §4) ---------------------------------------

#: Optional display fields and their maxima (the eval event carries at most this much of each).
OPTIONAL_MAX = {"identity.name": 1024, "resource.crn": 4096, "resource.service_name": 1024, "source_ip": 256,
                "user_agent": 4096}


def _get(data: Any, path: str) -> Any:
    for part in path.split("."):
        data = (data or {}).get(part)
    return data


@pytest.mark.parametrize("over", [1, 50_000])
@pytest.mark.parametrize("path", list(OPTIONAL_MAX))
def test_too_long_optional_field_is_truncated_not_dead_lettered(path: str, over: int) -> None:
    limit = OPTIONAL_MAX[path]
    text = "\u00e9" + "a" * (limit + over - 1)
    a = parse_attempt(patched(path, text), CLOCK)
    assert _get(a.data, path) == text[:limit]
    assert a.truncated is True
    assert parse_attempt(patched(path, text[:limit]), CLOCK).truncated is False  # at the limit: untouched


OPTIONAL_WRONG = [(p, v) for p, v in WRONG_TYPES if p in ("identity.name", "resource", "resource.crn",
                                                           "resource.service_name", "source_ip", "user_agent")]
OPTIONAL_WRONG += [("resource", ["crn"]), ("resource", 7), ("user_agent", {"a": 1}), ("identity.name", True)]


@pytest.mark.parametrize(("path", "value"), OPTIONAL_WRONG, ids=[f"{p}={v!r}" for p, v in OPTIONAL_WRONG])
def test_optional_field_of_the_wrong_type_is_dropped(path: str, value: Any) -> None:
    a = parse_attempt(patched(path, value), CLOCK)
    assert _get(a.data, path) is None
    assert a.truncated is True
    assert a.data["account_id"] == SPEC_EXAMPLE["account_id"]


def test_denied_attempt_with_an_attacker_sized_user_agent_is_still_evaluated_and_says_so() -> None:
    target, external = ACCOUNTS[0], ACCOUNTS[1]
    h = SettingsHistory()
    doc = {"account_id": target, "external_account_identity_interaction": {"identity_types": {
        "user": {"state": "limited"}}}}
    assert h.apply_record(target.encode(), json.dumps(doc).encode(), 0) is None
    obj = attempt_obj(target, external, "user", BASE_MS, user_agent="A" * 200_000, source_ip=["1.2.3.4"])
    a = parse_attempt(json.dumps(obj).encode(), NOW_MS)
    verdict, version, exact = assess(h, a)
    assert verdict.outcome == "enforced_deny"
    codec = EvalCodec()
    event = codec.decode(codec.encode(build_event(a, verdict, version, exact, NOW_MS)))
    assert event["truncated"] is True
    assert event["initiator"]["host"] == {"address": None, "agent": "A" * 4096}
    plain = parse_attempt(json.dumps(attempt_obj(target, external, "user", BASE_MS)).encode(), NOW_MS)
    assert codec.decode(codec.encode(build_event(plain, verdict, version, exact, NOW_MS)))["truncated"] is False


def test_attempt_cannot_claim_truncated_itself() -> None:
    a = parse_attempt(json.dumps(dict(SPEC_EXAMPLE, truncated=True)).encode(), CLOCK)
    assert a.truncated is False
