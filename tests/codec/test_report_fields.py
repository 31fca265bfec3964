"""The report's direct field decoder (codec/eval_fields.py) against the full Avro decoder: for any
valid eval event it returns exactly the full decode's values of the fields it reads; an event of
another schema, or corrupt bytes, it leaves to the full decoder."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from hypothesis import given

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
