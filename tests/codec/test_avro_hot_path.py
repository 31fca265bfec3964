"""SPEC §6 Avro eval events on the hot path: `encode_evaluation` writes the bytes of
`encode(build_event(...))` for every verdict that has an event, follows the schema's field order, and
its event sources match the schema's fields (a mismatch fails at construction)."""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

import fastavro
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from processor.codec.avro import (
    EvalCodec,
    SourceMismatch,
    compile_encoder,
    compile_source_encoder,
    load_schema_json,
)
from processor.core import policy
from processor.core.attempts import MIN_EVENT_TIME_MS, Attempt, parse_attempt
from processor.core.evaluator import assess
from processor.core.events import EVENT_SOURCES, build_event
from processor.core.policy import Verdict
from processor.core.settings import BEGINNING_OF_TIME, DEFAULT_RULES, SettingsHistory, SettingsVersion
from tests.support.avro_events import CONFLUENT, SINGLE, produced_event
from tests.support.avro_events import normalise as _normalise
from tests.support.strategies import (
    ACCOUNTS,
    BASE_MS,
    INTS,
    LONGS,
    NOW_MS,
    SPEC_EXAMPLE,
    TIMESTAMPS,
    attempt_obj,
    dumps,
    iso,
    settings_obj,
)

# --- the hot path: encode_evaluation == encode(build_event(...)) ----------------------------------

ALL_VERDICTS = [v for v in vars(policy).values() if isinstance(v, Verdict)]
#: The verdicts build_event describes: the other two (same account, unrestricted) evaluate nothing.
EVENT_VERDICTS = [v for v in ALL_VERDICTS if v.decision is not None]
#: A clock late enough that no event time up to the year 9999 is "in the future".
LATE_MS = 253_402_300_799_999


def _text(min_size: int = 0, max_size: int = 1024) -> st.SearchStrategy[str]:
    """Unicode text, short or long (>= 64 UTF-8 bytes: more than one byte of Avro length), often empty."""
    some = st.text(min_size=min_size, max_size=12) | st.text(min_size=64, max_size=min(max_size, 300))
    return some if min_size else st.just("") | some


def _optional(key: str, values: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    """`key` absent, null, or with a value: the three ways an attempt leaves out an optional field."""
    return st.just({}) | st.just({key: None}) | values.map(lambda v: {key: v})


#: Valid account ids of every form the contract allows (§3.2), not only 32 hex digits.
_ACCOUNT_IDS = st.sampled_from(ACCOUNTS) | st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._:@/-]{0,79}", fullmatch=True)
_RESOURCES = st.builds(lambda crn, svc: crn | svc, _optional("crn", _text(max_size=4096)),
                       _optional("service_name", _text()))
VERSIONS = st.none() | st.builds(
    SettingsVersion,
    st.just(BEGINNING_OF_TIME) | TIMESTAMPS | LONGS,
    st.just(DEFAULT_RULES),
    st.none() | _text(),
    st.none() | INTS,
    st.none() | LONGS | st.integers(2**40, 2**63 - 1),
)


@st.composite
def attempts(draw: st.DrawFn) -> Attempt:
    """Valid attempts (through parse_attempt) with every optional field absent, null, set, too long
    (truncated) or of the wrong type (dropped)."""
    obj = attempt_obj(
        draw(_ACCOUNT_IDS),
        draw(_ACCOUNT_IDS),
        draw(st.sampled_from(("user", "service_id", "service"))),
        draw(st.integers(MIN_EVENT_TIME_MS, LATE_MS)),
        attempt_id=draw(_text(1)),
        iam_id=draw(_text(1)),
        action=draw(_text(1)),
        **draw(_optional("resource", _RESOURCES)),
        **draw(_optional("source_ip", _text(max_size=256) | st.integers() | st.just("1" * 257))),
        **draw(_optional("user_agent", _text(max_size=4096) | st.just(["x"]) | st.just("\u00e9" * 4097))),
    )
    obj["identity"].update(draw(_optional("name", _text() | st.booleans())))
    return parse_attempt(dumps(obj), LATE_MS)


def test_the_verdicts_are_the_six_of_policy() -> None:
    assert len(ALL_VERDICTS) == 6 and len(EVENT_VERDICTS) == 4
    assert {v for v in ALL_VERDICTS if v.emit} <= set(EVENT_VERDICTS)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(attempts(), st.sampled_from(EVENT_VERDICTS), VERSIONS, st.booleans(), LONGS)
def test_encode_evaluation_equals_encode_of_build_event(
    attempt: Attempt, verdict: Verdict, version: SettingsVersion | None, exact: bool, evaluated_at_ms: int
) -> None:
    event = build_event(attempt, verdict, version, exact, evaluated_at_ms)
    for codec in (SINGLE, CONFLUENT):
        fast = codec.encode_evaluation(attempt, verdict, version, exact, evaluated_at_ms)
        assert fast == codec.encode(event)
    assert SINGLE.encode_evaluation(attempt, verdict, version, exact, evaluated_at_ms) == SINGLE.reference_encode(event)


@pytest.mark.parametrize("state,allowed", [("monitor", True), ("monitor", False), ("limited", False)])
def test_encode_evaluation_of_a_processed_attempt_decodes_to_its_event(state: str, allowed: bool) -> None:
    h = SettingsHistory()
    doc = settings_obj(SPEC_EXAMPLE["account_id"], {"user": {
        "state": state, "external_allowed_accounts": [SPEC_EXAMPLE["identity"]["account_id"]] if allowed else []}})
    assert h.apply_record(SPEC_EXAMPLE["account_id"].encode(), dumps(doc), BASE_MS, "iam.account-settings", 0,
                          2**40) is None
    attempt = parse_attempt(dumps(SPEC_EXAMPLE), LATE_MS)
    verdict, version, exact = assess(h, attempt)
    assert verdict.emit and version is not None
    for codec in (SINGLE, CONFLUENT):
        data = codec.encode_evaluation(attempt, verdict, version, exact, NOW_MS)
        assert _normalise(codec.decode(data)) == build_event(attempt, verdict, version, exact, NOW_MS)
    assert data[:5] == b"\x00\x00\x00\x10\x92"


@pytest.mark.parametrize("verdict", [v for v in ALL_VERDICTS if v.decision is None], ids=repr)
def test_verdicts_without_an_event_raise_as_build_event_does(verdict: Verdict) -> None:
    attempt = parse_attempt(dumps(SPEC_EXAMPLE), LATE_MS)
    with pytest.raises(Exception) as built:
        build_event(attempt, verdict, None, True, NOW_MS)
    with pytest.raises(built.type):
        SINGLE.encode_evaluation(attempt, verdict, None, True, NOW_MS)


def _spec_example_args() -> list[tuple[Attempt, Verdict, SettingsVersion | None, bool, int]]:
    attempt = parse_attempt(dumps(SPEC_EXAMPLE | {"event_time": iso(BASE_MS)}), NOW_MS)
    version = SettingsVersion(BASE_MS - 1, DEFAULT_RULES, "iam.account-settings", 3, 12345)
    return [(attempt, v, version, exact, NOW_MS) for v in EVENT_VERDICTS for exact in (True, False)]


def _reverse_fields(schema: Any) -> Any:
    """The same records with every record's fields in reverse order."""
    if isinstance(schema, list):
        return [_reverse_fields(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _reverse_fields(v) if k == "type" else v for k, v in schema.items()}
    if schema.get("type") == "record":
        out["fields"] = [f | {"type": _reverse_fields(f["type"])} for f in reversed(schema["fields"])]
    return out


def test_encode_evaluation_follows_the_schema_field_order() -> None:
    parsed = fastavro.parse_schema(_reverse_fields(load_schema_json()))
    fast, via_dict = compile_source_encoder(parsed, EVENT_SOURCES), compile_encoder(parsed)
    for args in _spec_example_args():
        assert fast(*args) == via_dict(build_event(*args))
        assert fast(*args) != SINGLE.encode_evaluation(*args)[10:]  # the order did change the bytes


def _with_region() -> dict[str, Any]:
    schema = load_schema_json()
    schema["fields"].append({"name": "region", "type": ["null", "string"], "default": None, "doc": "new in v2"})
    return schema


def test_a_schema_field_without_a_source_is_a_source_mismatch() -> None:
    with pytest.raises(SourceMismatch, match="'region' has no source"):
        compile_source_encoder(fastavro.parse_schema(_with_region()), EVENT_SOURCES)
    codec = EvalCodec(schema=_with_region())  # another schema version: still a codec, without the fast path
    assert codec.decode(codec.reference_encode(produced_event() | {"region": None}))["region"] is None
    with pytest.raises(SourceMismatch, match="region"):
        codec.encode_evaluation(*_spec_example_args()[0])


def test_a_source_without_a_schema_field_is_a_source_mismatch() -> None:
    schema = load_schema_json()
    schema["fields"] = [f for f in schema["fields"] if f["name"] != "severity"]
    with pytest.raises(SourceMismatch, match="severity"):
        compile_source_encoder(fastavro.parse_schema(schema), EVENT_SOURCES)


def test_a_shipped_schema_the_sources_do_not_match_fails_at_construction(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "eval_event.avsc").write_text(json.dumps(_with_region()))
    monkeypatch.setenv("ACCESS_EVAL_SCHEMA_DIR", str(tmp_path))
    with pytest.raises(SourceMismatch, match="region"):
        EvalCodec()
    with pytest.raises(SourceMismatch, match="region"):  # as registry.codec_for_topic builds it
        EvalCodec(schema_id=7, schema=load_schema_json())


def test_event_sources_take_the_parameters_of_build_event() -> None:
    assert EVENT_SOURCES.params == tuple(inspect.signature(build_event).parameters)
