"""The hot path's faster equivalents agree with the reference implementations they replace.

* attempts: `parse_attempt` decodes with msgspec into plain dicts (`AttemptData`) and hands anything
  it does not accept as-is to the pydantic model (`AccessAttempt`, also the source of the published
  JSON Schema): together they must accept and reject exactly what the model does, with the same
  values and the same DLQ reason.
* avro: longs reuse the varint of their high bits (a bounded cache): byte-identical to the loop.
* settings: small allowlists are SmallSets (tuples comparing like sets), identity types configured
  alike share one Rule; membership and equality are those of sets.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from processor.codec import avro
from processor.core.attempts import AccessAttempt, InvalidAttempt, _classify, parse_attempt
from processor.core.settings import SMALL_ALLOWLIST, Rule, SmallSet, allowed_ids, parse_settings, rules_of
from processor.core.times import to_millis
from tests.support.strategies import NOW_MS, attempt_obj

BASE = attempt_obj("A3F1C0D2E4B5968778695A4B3C2D1E0F ", " 0b1c2d3e4f5a69788796a5b4c3d2e1f0", "user")
BASE.update(
    resource={"crn": "crn:v1:bluemix:public:cloud-object-storage:global:a/x:bucket:b1", "service_name": "cos"},
    source_ip="203.0.113.7",
    user_agent="ibmcloud-cli/2.30",
)
BASE["identity"]["name"] = "jane@example.com"
FIELDS = [
    "id", "event_time", "account_id", "identity", "identity.iam_id", "identity.type", "identity.account_id",
    "identity.name", "action", "resource", "resource.crn", "resource.service_name", "source_ip", "user_agent",
]
VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**40), 2**40)
    | st.floats(allow_nan=False)
    | st.text(max_size=12)
    | st.sampled_from(["", " ", "user", "service", "2026-11-27T12:00:00Z", "2026-11-27T12:00:00", "x" * 1025,
                       " ABC ", "1795780800", "2026-11-27"]),
    lambda inner: st.lists(inner, max_size=2) | st.dictionaries(st.sampled_from(["crn", "type", "z"]), inner,
                                                                 max_size=2),
    max_leaves=4,
)


def model_view(m: AccessAttempt) -> dict[str, Any]:
    ident = m.identity
    res = m.resource
    return {
        "id": m.id, "event_ms": to_millis(m.event_time), "account_id": m.account_id, "action": m.action,
        "iam_id": ident.iam_id, "type": ident.type, "ident_account": ident.account_id, "name": ident.name,
        "crn": res.crn if res else None, "service_name": res.service_name if res else None,
        "source_ip": m.source_ip, "user_agent": m.user_agent,
    }


def data_view(d: dict[str, Any], event_ms: int) -> dict[str, Any]:
    ident = d["identity"]
    res = d.get("resource") or {}
    return {
        "id": d["id"], "event_ms": event_ms, "account_id": d["account_id"], "action": d["action"],
        "iam_id": ident["iam_id"], "type": ident["type"], "ident_account": ident["account_id"],
        "name": ident.get("name"), "crn": res.get("crn"), "service_name": res.get("service_name"),
        "source_ip": d.get("source_ip"), "user_agent": d.get("user_agent"),
    }


def check_same(raw: bytes) -> None:
    try:
        model: AccessAttempt | None = AccessAttempt.model_validate_json(raw)
        expected_reason = expected_detail = None
    except ValidationError as exc:
        invalid = _classify(exc)
        model, expected_reason, expected_detail = None, invalid.reason, invalid.detail
    try:
        got = parse_attempt(raw, NOW_MS, max_future_ms=10**15)
    except InvalidAttempt as exc:
        if exc.reason == "bad_timestamp" and model is not None:  # range checks come after validation
            return
        if exc.reason == "bad_json" and "is not a JSON number" in exc.detail:
            return  # NaN/Infinity (which the model takes): rejected by the strict-JSON check after validation
        assert model is None, f"dict path rejected ({exc.reason}: {exc.detail}) what the model accepts: {raw!r}"
        assert (exc.reason, exc.detail) == (expected_reason, expected_detail), raw
        return
    assert model is not None, f"dict path accepted what the model rejects ({expected_reason}): {raw!r}"
    assert data_view(got.data, got.event_ms) == model_view(model)  # type: ignore[arg-type]
    assert got.model == model


def patched(path: str, value: Any) -> bytes:
    obj = copy.deepcopy(BASE)
    *parents, last = path.split(".")
    node: Any = obj
    for p in parents:
        node = node[p]
    if value is ...:
        node.pop(last, None)
    else:
        node[last] = value
    return json.dumps(obj).encode()


def test_reference_example_agrees() -> None:
    check_same(json.dumps(BASE).encode())
    for path in FIELDS:
        check_same(patched(path, ...))
        check_same(patched(path, None))


def test_the_fast_path_takes_ordinary_attempts() -> None:
    """The model is not consulted for a well-formed attempt (it is built only on demand)."""
    got = parse_attempt(json.dumps(BASE).encode(), NOW_MS)
    assert got._model is None
    assert got.data["account_id"] == "a3f1c0d2e4b5968778695a4b3c2d1e0f"


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("account_id", "\x1cabc"),  # Python's str.strip() removes \x1c, pydantic-core's does not
        ("account_id", "\u00a0ABC\u2003"),  # non-ASCII white space
        ("identity.account_id", "\u00c4BC"),  # non-ASCII letters lower-case differently across libraries
        ("account_id", " " * 300 + "abc"),
        ("account_id", "a" * 257),
        ("event_time", "2026-11-27T12:00:00.0009995Z"),  # msgspec rounds to .001, pydantic truncates to .000999
        ("event_time", "2026-11-27T23:59:59.9999995+00:00"),
        ("event_time", "2026-11-27T12:00:00+0530"),
        ("event_time", "2026-11-27t12:00:00z"),
        ("event_time", "2026-11-27T12:00:00"),
        ("event_time", "2026-02-29T12:00:00Z"),
        ("identity.type", "USER"),
        ("id", "x" * 1025),
    ],
)
def test_edge_cases_agree(path: str, value: Any) -> None:
    check_same(patched(path, value))


def test_non_json_numbers_are_bad_json_even_where_the_model_takes_them() -> None:
    for token in (b"NaN", b"Infinity", b"-Infinity"):
        raw = json.dumps(BASE).encode().replace(b'"resource": {', b'"resource": {"type": ' + token + b", ", 1)
        AccessAttempt.model_validate_json(raw)  # the model alone would accept it
        check_same(raw)
        with pytest.raises(InvalidAttempt, match="is not a JSON number") as info:
            parse_attempt(raw, NOW_MS)
        assert info.value.reason == "bad_json"


@pytest.mark.parametrize("depth", [1, 150, 197, 198, 199, 200, 201, 300, 990, 1_000, 20_000])  # under 256 KB
@pytest.mark.parametrize("bracket", ["[", '{"a":'])
def test_deep_nesting_in_ignored_fields_agrees(depth: int, bracket: str) -> None:
    """pydantic rejects nesting deeper than 200 levels; msgspec would go on (and raise RecursionError
    past Python's recursion limit): the fast path must neither accept more nor crash."""
    close = "]" if bracket == "[" else "}"
    inner = "1" if bracket != "[" else ""
    raw = json.dumps(BASE)[:-1] + ', "extra": ' + bracket * depth + inner + close * depth + "}"
    check_same(raw.encode())
    check_same(raw)


def test_short_values_without_arrays_cannot_nest_too_deep_for_the_model() -> None:
    """The fast path skips counting brackets in values of at most 1,000 bytes without `[`: the
    deepest objects-only nesting that fits there must be one the model accepts."""
    small = '{"id":"i","event_time":"2026-06-01T00:00:00Z","account_id":"a","identity":{"iam_id":"m",'
    small += '"type":"user","account_id":"b"},"action":"r","z":'
    depth = (1000 - len(small) - 1) // 5
    raw = (small + '{"":' * depth + "{}" + "}" * depth + "}")[:1000]
    assert len(raw) <= 1000 and "[" not in raw
    AccessAttempt.model_validate_json(raw)  # within the model's nesting limit
    check_same(raw.encode())


@pytest.mark.parametrize("digits", [1, 400, 4_299, 4_300, 4_301, 100_000])
def test_huge_numbers_in_ignored_fields_agree(digits: int) -> None:
    """pydantic rejects integers of more than 4,300 digits; msgspec would skip them."""
    raw = json.dumps(BASE)[:-1] + ', "extra": 1' + "0" * (digits - 1) + "}"
    check_same(raw.encode())
    check_same(raw)


@pytest.mark.parametrize("where", ["id", "extra"])
def test_lone_surrogates_in_a_str_input_agree(where: str) -> None:
    """A str (not bytes) holding a lone surrogate cannot be UTF-8-encoded for msgspec."""
    obj = copy.deepcopy(BASE)
    obj[where] = "x\ud800"
    check_same(json.dumps(obj, ensure_ascii=False))


def test_duplicate_keys_last_wins_on_both_paths() -> None:
    raw = json.dumps(BASE).encode()
    check_same(raw.replace(b'"action": ', b'"action": 5, "action": ', 1))
    twice = raw.replace(b'"action": ', b'"action": "first", "action": ', 1)
    check_same(twice)
    assert parse_attempt(twice, NOW_MS).data["action"] == BASE["action"]


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(path=st.sampled_from(FIELDS), value=VALUES | st.just(...))
def test_one_field_changed_agrees(path: str, value: Any) -> None:
    check_same(patched(path, value))


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_agree(raw: bytes) -> None:
    check_same(raw)


@given(st.lists(st.sampled_from(["a", "b", "c", "d", "e", "f", "g", "h", "i", "j"]), max_size=12))
def test_allowlists_behave_as_sets(ids: list[str]) -> None:
    allowed = allowed_ids(ids)
    assert isinstance(allowed, SmallSet if len(set(ids)) <= SMALL_ALLOWLIST else frozenset)
    assert allowed == set(ids) and set(ids) == allowed and allowed == frozenset(ids)
    assert hash(allowed) == hash(frozenset(ids)) and len(allowed) == len(set(ids))
    assert all((x in allowed) == (x in ids) for x in "abcdefghijkz")
    assert Rule("limited", allowed) == Rule("limited", frozenset(ids))
    assert hash(Rule("limited", allowed)) == hash(Rule("limited", frozenset(ids)))
    assert allowed != set(ids) | {"zz"}


def test_identity_types_configured_alike_share_one_rule() -> None:
    same = {"state": "limited", "external_allowed_accounts": ["X1", "x2"]}
    doc = {"account_id": "a", "external_account_identity_interaction": {"identity_types": {
        "user": same, "service_id": dict(same), "service": {"state": "monitor", "external_allowed_accounts": ["x1"]}}}}
    user, service_id, service = rules_of(parse_settings(json.dumps(doc)))
    assert user is service_id and user is not None and user.allowed == {"x1", "x2"}
    assert service is not None and service.state == "monitor" and service.allowed == {"x1"}


def plain_zigzag(n: int) -> bytes:
    n = (n << 1) ^ (n >> 63)
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


@given(st.lists(st.integers(-(2**63), 2**63 - 1), max_size=50), st.integers(0, 2**41), st.integers(1, 300))
def test_zigzag_varint_with_its_cache_is_the_plain_encoding(values: list[int], base: int, run: int) -> None:
    nearby = [base + i for i in range(0, run * 97, 97)]  # timestamps/offsets: shared high bits
    for n in [*values, *nearby, *[-x for x in nearby], 0, -1, 63, 64, -64, -65, 2**63 - 1, -(2**63)]:
        assert avro.zigzag_varint(n) == plain_zigzag(n)


def test_zigzag_varint_cache_is_bounded() -> None:
    for n in range(0, (avro._HIGH_MAX + 10) * 128, 64):
        assert avro.zigzag_varint(n + 2**40) == plain_zigzag(n + 2**40)
    assert len(avro._HIGH) <= avro._HIGH_MAX


TIMESTAMPS = st.one_of(
    st.text(alphabet="0123456789-:Tt _.Z+z", max_size=32),
    st.from_regex(r"\A\d{4}-\d{2}-\d{2}[Tt _]\d{2}:\d{2}(:\d{2})?(\.\d{1,9})?(Z|z|[+-]\d{2}:?\d{2})?\Z"),
    st.from_regex(r"\A[0-9 ]{0,4}[-0-9.]{0,12}\Z"),
    st.integers(-(2**40), 2**40),
    st.floats(allow_nan=False, allow_infinity=False),
)


@settings(max_examples=800, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(TIMESTAMPS)
def test_event_time_fast_check_agrees_with_rfc3339(value: Any) -> None:
    check_same(patched("event_time", value))


MINUTE = "2026-11-27T12:00"


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(alphabet="0123456789:.Zz+- T\u0663", max_size=12))
def test_event_times_of_a_known_minute_agree_with_the_full_parse(suffix: str) -> None:
    """Once a minute was parsed in full, `known_minute_millis` reads its other texts without a datetime:
    every text of that minute must get the model's verdict and value (the whole parse_attempt), and the
    cache gives a value only where the full parse gives the same one."""
    import datetime as dt

    import msgspec

    from processor.core import times

    check_same(patched("event_time", MINUTE + ":00.000Z"))  # remembers the minute
    assert times.known_minute_millis(MINUTE + ":00.000Z") is not None
    check_same(patched("event_time", MINUTE + suffix))
    cached = times.known_minute_millis(MINUTE + suffix)
    if cached is not None:
        assert cached == to_millis(msgspec.convert(MINUTE + suffix, dt.datetime))


@pytest.mark.parametrize("text", [
    "2026-11-27T12:00:60.000Z", "2026-11-27T12:00:5.1234Z", "2026-11-27T12:00:05.12 Z", "2026-11-27T12:00:05.123z",
    "2026-11-27T12:00:+5.123Z", "2026-11-27T12:00:05.+12Z", "2026-11-27T12:00:0\u0663.123Z", "2026-11-27T12:00 05.123Z",
    "2026-11-27T12:00:05.123+00:00", "2026-11-27T12:00:05.1Z",
])
def test_texts_of_a_known_minute_outside_the_two_forms_take_the_full_parse(text: str) -> None:
    from processor.core import times

    times.remember_minute(MINUTE + ":00.000Z", 1_795_780_800_000)
    assert times.known_minute_millis(MINUTE + ":07.250Z") == 1_795_780_807_250
    assert times.known_minute_millis(MINUTE + ":07Z") == 1_795_780_807_000
    assert times.known_minute_millis(text) is None


def test_the_minutes_remembered_are_bounded() -> None:
    from processor.core import times

    for i in range(times.MINUTES_MAX + 10):
        times.remember_minute(f"2026-11-{1 + i // 1440:02d}T{i // 60 % 24:02d}:{i % 60:02d}:00Z", i * 60_000)
        assert len(times._MINUTES) <= times.MINUTES_MAX
    assert times.known_minute_millis("2026-11-01T00:00:00Z") is None  # cleared once full
