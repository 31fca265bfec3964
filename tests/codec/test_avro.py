"""SPEC §6 Avro eval events: compiled encoder == fastavro, both framings, schema hygiene, downstream
decoding. The hot path's encode_evaluation == encode(build_event): `test_avro_hot_path.py`."""

from __future__ import annotations

import io
import json
import struct
from datetime import UTC, datetime
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
    compile_encoder,
    zigzag_varint,
)
from tests.support.avro_events import CONFLUENT, SINGLE, produced_event
from tests.support.avro_events import normalise as _normalise
from tests.support.strategies import (
    ACCOUNTS,
    TIMESTAMPS,
    eval_events,
)

AVSC = Path(__file__).resolve().parents[2] / "schemas" / "eval_event.avsc"


FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


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
