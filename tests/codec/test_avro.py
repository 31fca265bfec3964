"""SPEC §6 Avro eval events: compiled encoder == fastavro, the hot path's encode_evaluation == encode(build_event),
both framings, schema hygiene, downstream decoding."""

from __future__ import annotations

import copy
import inspect
import io
import json
import struct
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import fastavro
import pytest
from fastavro.schema import to_parsing_canonical_form
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from processor.codec.avro import (
    DecodeError,
    EvalCodec,
    SourceMismatch,
    compile_encoder,
    compile_source_encoder,
    load_schema_json,
    zigzag_varint,
)
from processor.core import policy
from processor.core.attempts import MIN_EVENT_TIME_MS, Attempt, parse_attempt
from processor.core.evaluator import assess
from processor.core.events import EVENT_SOURCES, build_event
from processor.core.policy import Verdict
from processor.core.settings import BEGINNING_OF_TIME, DEFAULT_RULES, SettingsHistory, SettingsVersion
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
    eval_events,
    iso,
    settings_obj,
)

AVSC = Path(__file__).resolve().parents[2] / "schemas" / "eval_event.avsc"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

SINGLE = EvalCodec()
CONFLUENT = EvalCodec(schema_id=4242)


# --- an independent CRC-64-AVRO (Avro specification, "Schema Fingerprints") ----------------------

_EMPTY64 = 0xC15D213AA4D7A795
_FP_TABLE = []
for _i in range(256):
    _fp = _i
    for _ in range(8):
        _fp = (_fp >> 1) ^ (_EMPTY64 & -(_fp & 1))
    _FP_TABLE.append(_fp)


def crc64_avro(data: bytes) -> int:
    fp = _EMPTY64
    for b in data:
        fp = (fp >> 8) ^ _FP_TABLE[(fp ^ b) & 0xFF]
    return fp


def test_crc64_avro_reference_vector() -> None:
    # From the Avro spec: the fingerprint of the canonical form of "int" is 0x7275d51a3f395c8f.
    assert crc64_avro(b'"int"') == 0x7275D51A3F395C8F


# --- a realistic produced event ---------------------------------------------------------------------


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


# --- compiled encoder vs fastavro ------------------------------------------------------------------


@FAST
@given(eval_events())
def test_compiled_encoder_matches_fastavro(event: dict[str, Any]) -> None:
    assert SINGLE.encode(event) == SINGLE.reference_encode(event)
    assert CONFLUENT.encode(event) == CONFLUENT.reference_encode(event)


def test_compiled_encoder_matches_fastavro_on_produced_events() -> None:
    for state in ("monitor", "limited"):
        for allowed in (True, False):
            if state == "limited" and allowed:
                continue  # not emitted
            ev = produced_event(state, allowed)
            assert SINGLE.encode(ev) == SINGLE.reference_encode(ev)


@pytest.mark.parametrize("n", [0, 1, -1, 63, -64, 64, 2**31 - 1, -(2**31), 2**63 - 1, -(2**63), 123456789012])
def test_zigzag_varint_matches_fastavro(n: int) -> None:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, fastavro.parse_schema("long"), n)
    assert zigzag_varint(n) == buf.getvalue()


def test_compile_encoder_rejects_unsupported_shapes() -> None:
    with pytest.raises(NotImplementedError):
        compile_encoder({"type": "record", "name": "R", "fields": [{"name": "m", "type": {"type": "map",
                                                                                          "values": "int"}}]})
    with pytest.raises(NotImplementedError):
        compile_encoder({"type": "record", "name": "R", "fields": [{"name": "u", "type": ["int", "string"]}]})


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


# --- framings and round trips -----------------------------------------------------------------------


def _expected_fingerprint() -> bytes:
    canonical = to_parsing_canonical_form(fastavro.parse_schema(json.loads(AVSC.read_text())))
    return crc64_avro(canonical.encode()).to_bytes(8, "little")


def test_single_object_framing_header() -> None:
    data = SINGLE.encode(produced_event())
    assert data[:2] == b"\xc3\x01"
    assert data[2:10] == _expected_fingerprint()
    assert SINGLE.header == b"\xc3\x01" + _expected_fingerprint()


def test_confluent_framing_header() -> None:
    data = CONFLUENT.encode(produced_event())
    assert data[:1] == b"\x00"
    assert data[1:5] == struct.pack(">I", 4242) == b"\x00\x00\x10\x92"
    assert data[5:] == SINGLE.encode(produced_event())[10:]  # same body


def _ms(value: Any) -> Any:
    return (value - _EPOCH) // timedelta(milliseconds=1) if isinstance(value, datetime) else value


def _normalise(record: dict[str, Any]) -> dict[str, Any]:
    """Decoded timestamp-millis come back as datetimes: compare as epoch ms."""
    out = copy.deepcopy(record)
    out["eventTime"] = _ms(out["eventTime"])
    out["observer"]["evaluatedAt"] = _ms(out["observer"]["evaluatedAt"])
    sv = out["responseData"]["settingsVersion"]
    sv["effectiveTime"] = _ms(sv["effectiveTime"])
    return out


@FAST
@given(eval_events(longs=TIMESTAMPS), st.sampled_from(["single", "confluent"]))
def test_round_trip_both_framings(event: dict[str, Any], framing: str) -> None:
    writer = SINGLE if framing == "single" else CONFLUENT
    data = writer.encode(event)
    # any codec decodes either framing; a Confluent id other than the codec's own needs a resolver
    schema = json.loads(AVSC.read_text())
    assert _normalise(SINGLE.decode(data, resolve_id=lambda _sid: schema)) == event
    assert _normalise(CONFLUENT.decode(data)) == event
    if framing == "confluent":
        with pytest.raises(DecodeError, match="schema id"):
            SINGLE.decode(data)


def test_confluent_unknown_id_uses_resolver() -> None:
    calls: list[int] = []
    schema = json.loads(AVSC.read_text())

    def resolve(sid: int) -> dict[str, Any]:
        calls.append(sid)
        return schema

    data = EvalCodec(schema_id=9).encode(produced_event())
    assert _normalise(CONFLUENT.decode(data, resolve_id=resolve)) == produced_event()
    assert calls == [9]
    assert _normalise(CONFLUENT.decode(CONFLUENT.encode(produced_event()), resolve_id=resolve)) == produced_event()
    assert calls == [9]  # its own id needs no lookup


# --- downstream consumer: fastavro + the .avsc file only ----------------------------------------


def _downstream_decode(message: bytes) -> dict[str, Any]:
    """What a consumer in another team writes: no processor imports, just fastavro and the schema file."""
    with open(AVSC) as fh:
        schema = fastavro.parse_schema(json.load(fh))
    assert message[:2] == b"\xc3\x01", "not Avro single-object encoding"
    canonical = to_parsing_canonical_form(schema).encode()
    assert message[2:10] == crc64_avro(canonical).to_bytes(8, "little"), "fingerprint of another schema"
    record: dict[str, Any] = fastavro.schemaless_reader(io.BytesIO(message[10:]), schema)  # type: ignore[assignment]
    return record


def test_downstream_consumer_decodes_a_produced_message() -> None:
    event = produced_event("limited", allowed=False)
    decoded = _downstream_decode(SINGLE.encode(event))
    assert decoded["action"] == "iam-access-management.account-settings.eval"
    assert decoded["attemptId"] == "att-ü-1"
    assert decoded["eventTime"] == datetime(2026, 6, 1, 0, 0, 0, 123_000, tzinfo=UTC)
    assert decoded["initiator"]["typeURI"] == "user"
    assert decoded["initiator"]["authnAccountId"] == ACCOUNTS[1]
    assert decoded["initiator"]["host"] == {"address": None, "agent": "curl/8 ☃"}
    assert decoded["target"] == {"accountId": ACCOUNTS[0], "id": "crn:v1:x", "serviceName": "cos",
                                 "action": "cloud-object-storage.object.read"}
    rd = decoded["responseData"]
    assert (rd["decision"], rd["isEnforced"], rd["state"], rd["allowlisted"]) == ("Deny", True, "limited", False)
    assert rd["settingsVersion"] == {
        "effectiveTime": datetime(2026, 5, 31, 23, 59, 59, 995_000, tzinfo=UTC),
        "topic": "iam.account-settings", "partition": 2, "offset": 77, "exact": True,
    }
    assert (decoded["outcome"], decoded["severity"], decoded["reason"]["reasonCode"]) == ("failure", "warning", 403)
    assert decoded["observer"]["name"] == "access-eval"
    assert _normalise(decoded) == event


def test_reader_survives_enum_symbols_added_later() -> None:
    """A future writer adds a Decision symbol; today's reader maps it to the declared default."""
    future = json.loads(AVSC.read_text())
    rd = next(f for f in future["fields"] if f["name"] == "responseData")
    decision = next(f for f in rd["type"]["fields"] if f["name"] == "decision")
    decision["type"]["symbols"] = [*decision["type"]["symbols"], "Challenge"]
    future["fields"].append({"name": "newField", "type": "string", "default": "", "doc": "added later"})
    event = produced_event()
    event["responseData"]["decision"] = "Challenge"
    event["newField"] = "x"
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, fastavro.parse_schema(future), event)
    reader = fastavro.parse_schema(json.loads(AVSC.read_text()))
    buf.seek(0)
    old = fastavro.schemaless_reader(buf, fastavro.parse_schema(future), reader)
    assert old["responseData"]["decision"] == "Unknown"  # type: ignore[index,call-overload]
    assert "newField" not in old  # type: ignore[operator]


# --- schema hygiene -------------------------------------------------------------------------------


def _walk(schema: Any, path: str, named: list[tuple[str, dict[str, Any]]], fields: list[tuple[str, dict[str, Any]]]
          ) -> None:
    if isinstance(schema, list):
        for branch in schema:
            _walk(branch, path, named, fields)
        return
    if not isinstance(schema, dict):
        return
    t = schema.get("type")
    if t in ("record", "enum", "fixed", "error"):
        named.append((f"{path}:{schema['name']}", schema))
    if t in ("record", "error"):
        for f in schema["fields"]:
            fields.append((f"{path}.{f['name']}", f))
            _walk(f["type"], f"{path}.{f['name']}", named, fields)
    elif t == "array":
        _walk(schema["items"], path + "[]", named, fields)
    elif t == "map":
        _walk(schema["values"], path + "{}", named, fields)
    elif isinstance(t, dict | list):
        _walk(t, path, named, fields)


def _schema_parts() -> tuple[list[tuple[str, dict[str, Any]]], list[tuple[str, dict[str, Any]]]]:
    named: list[tuple[str, dict[str, Any]]] = []
    fields: list[tuple[str, dict[str, Any]]] = []
    _walk(json.loads(AVSC.read_text()), "", named, fields)
    return named, fields


def test_schema_walk_finds_everything() -> None:
    named, fields = _schema_parts()
    assert {n.split(":")[-1] for n, _ in named} >= {"EvalEvent", "Initiator", "Host", "Target", "ResponseData",
                                                    "SettingsVersionRef", "Reason", "Observer", "Decision",
                                                    "IdentityType", "State", "Outcome", "Severity"}
    assert len(fields) >= 30


def test_every_field_and_named_type_has_doc() -> None:
    named, fields = _schema_parts()
    missing = [n for n, s in named + fields if not str(s.get("doc", "")).strip()]
    assert not missing, f"no doc: {missing}"


def test_every_enum_declares_a_default_symbol() -> None:
    named, _ = _schema_parts()
    enums = [(n, s) for n, s in named if s["type"] == "enum"]
    assert enums
    bad = [n for n, s in enums if s.get("default") not in s["symbols"]]
    assert not bad, f"enum without a valid default: {bad}"


def test_every_optional_field_has_a_default() -> None:
    _, fields = _schema_parts()
    optional = [(n, f) for n, f in fields if isinstance(f["type"], list) and "null" in f["type"]]
    assert optional
    for n, f in optional:
        assert "default" in f, n
        # Avro: a union default must match the first branch
        assert f["type"][0] == "null" and f["default"] is None, n


def test_is_enforced_is_a_required_boolean() -> None:
    _, fields = _schema_parts()
    f = dict(fields)[".responseData.isEnforced"]
    assert f["type"] == "boolean" and "default" not in f


def test_spec_required_fields_exist() -> None:
    _, fields = _schema_parts()
    names = {n for n, _ in fields}
    for path in (".id", ".action", ".eventTime", ".attemptId", ".initiator.id", ".initiator.typeURI",
                 ".initiator.name", ".initiator.authnAccountId", ".initiator.host.address", ".initiator.host.agent",
                 ".target.accountId", ".target.id", ".target.serviceName", ".target.action",
                 ".responseData.decision", ".responseData.isEnforced", ".responseData.state",
                 ".responseData.allowlisted", ".responseData.settingsVersion.effectiveTime",
                 ".responseData.settingsVersion.topic", ".responseData.settingsVersion.partition",
                 ".responseData.settingsVersion.offset", ".responseData.settingsVersion.exact", ".outcome",
                 ".severity", ".reason.reasonCode", ".observer.name", ".observer.version", ".observer.evaluatedAt"):
        assert path in names, path


# --- decode errors --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"garbage",
        b"{\"json\": true}",
        b"\xc3",
        b"\xc3\x01\x00",  # header too short
        b"\xc3\x01" + b"\x00" * 8 + b"\x02",  # unknown fingerprint
        b"\x01\x00\x00\x00\x01",  # neither magic
    ],
    ids=["empty", "garbage", "json", "half-magic", "short-header", "unknown-fingerprint", "bad-magic"],
)
def test_decode_garbage_raises_decode_error(data: bytes) -> None:
    with pytest.raises(DecodeError):
        SINGLE.decode(data)


def test_decode_truncated_body_raises_decode_error() -> None:
    data = SINGLE.encode(produced_event())
    for cut in (11, 20, len(data) // 2, len(data) - 1):
        with pytest.raises(DecodeError):
            SINGLE.decode(data[:cut])
    with pytest.raises(DecodeError):
        CONFLUENT.decode(CONFLUENT.encode(produced_event())[:30])


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=80))
def test_decode_random_bytes_only_raises_decode_error(data: bytes) -> None:
    try:
        record = SINGLE.decode(data)
    except DecodeError:
        return
    assert isinstance(record, dict)  # the rare random bytes that do decode give a record
