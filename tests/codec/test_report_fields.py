"""The report's direct field decoder (codec/eval_fields.py) against the full Avro decoder: for any
valid eval event it returns exactly the full decode's values of the fields it reads; an event of
another schema, or corrupt bytes, it leaves to the full decoder."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from processor.codec.avro import EvalCodec
from processor.codec.eval_fields import ReportCodec, ReportFields
from processor.core.times import to_millis
from tests.support.strategies import TIMESTAMPS, eval_events

CODEC = EvalCodec()
FIELDS = ReportFields(CODEC)


def projection(e: dict[str, Any]) -> dict[str, Any]:
    t = e["eventTime"]
    ini, tgt, rd = e["initiator"], e["target"], e["responseData"]
    return {
        "id": e["id"], "eventTime": to_millis(t) if isinstance(t, datetime) else t,
        "initiator": {"id": ini["id"], "typeURI": ini["typeURI"], "name": ini["name"],
                      "authnAccountId": ini["authnAccountId"], "host": {"agent": ini["host"]["agent"]}},
        "target": {"accountId": tgt["accountId"], "action": tgt["action"]},
        "responseData": {"decision": rd["decision"], "state": rd["state"]},
    }


@given(eval_events(TIMESTAMPS))
def test_the_report_fields_equal_the_full_decode(event: dict[str, Any]) -> None:
    data = CODEC.encode(event)
    assert FIELDS.enabled
    assert FIELDS.decode(data) == projection(CODEC.decode(data))


@given(eval_events(TIMESTAMPS))
def test_corrupt_or_foreign_bytes_go_to_the_full_decoder(event: dict[str, Any]) -> None:
    data = CODEC.encode(event)
    assert FIELDS.decode(data[:12]) is None  # cut short
    assert FIELDS.decode(b"\xc3\x01" + b"\x00" * 8 + data[10:]) is None  # another schema's fingerprint
    assert ReportCodec(CODEC).decode(data) == projection(CODEC.decode(data))


def test_a_schema_with_another_layout_disables_the_fast_path() -> None:
    schema = dict(CODEC.schema_json)
    schema["fields"] = [f for f in schema["fields"] if f["name"] != "attemptId"]
    assert not ReportFields(EvalCodec(schema=schema)).enabled


def _outcome(decode: Any, data: bytes) -> Any:
    try:
        return decode(data, 10)
    except (IndexError, ValueError):
        return "corrupt"


LENGTHEN = (("id",), ("action",), ("attemptId",), ("initiator", "id"), ("initiator", "authnAccountId"),
            ("target", "accountId"), ("target", "action"), None)


@given(eval_events(TIMESTAMPS), st.sampled_from(LENGTHEN), st.integers(60, 70))
def test_the_inlined_common_path_equals_the_general_one_on_every_prefix(
        event: dict[str, Any], lengthen: tuple[str, ...] | None, size: int) -> None:
    """`_short` (every length and enum index one byte, inlined) against `_flat` (any length): the same
    fields, or both refuse, for the record cut at every byte; with one string made 60-70 bytes long
    (a two-byte length from 64 on), so `_short`'s hand-over to `_flat` is taken too."""
    if lengthen is not None:
        *outer, last = lengthen
        holder = event
        for k in outer:
            inner = dict(holder[k])
            holder[k] = inner
            holder = inner
        holder[last] = "x" * size
    data = CODEC.encode(event)
    if lengthen is not None:
        assert b"x" * size in data
    assert _outcome(FIELDS._short, data) == _outcome(FIELDS._flat, data) != "corrupt"
    for k in range(10, len(data)):
        assert _outcome(FIELDS._short, data[:k]) == _outcome(FIELDS._flat, data[:k]), k
