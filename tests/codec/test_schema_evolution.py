"""Schema evolution guard (SPEC §6): the current eval event schema stays backward and forward
compatible with every released version in schemas/history/, checked with fastavro's Avro schema
resolution on generated records, both ways:

- backward: a reader on the current schema reads data written with an old schema;
- forward: a reader still on an old schema reads data written with the current one.

Negative controls show the check catches the usual mistakes.
"""

from __future__ import annotations

import copy
import io
import json
from pathlib import Path
from typing import Any

import fastavro
import pytest
from fastavro.read import SchemaResolutionError

from processor.codec.avro import EvalCodec, load_schema_json, schema_dir

HISTORY = sorted((schema_dir() / "history").glob("eval_event.v*.avsc"), key=lambda p: int(p.stem.split(".v")[-1]))


def _load(path: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(path.read_text())
    return loaded


# --- a deterministic record generator that covers every enum symbol and both union branches -------


def _value(schema: Any, i: int, named: dict[str, Any]) -> Any:
    if isinstance(schema, list):  # union: alternate branches, so null and non-null both appear
        branch = schema[i % len(schema)]
        return _value(branch, i // len(schema), named)
    if isinstance(schema, str):
        if schema in named:
            return _value(named[schema], i, named)
        return {
            "null": None,
            "string": f"s{i}",
            "long": 1_700_000_000_000 + i,
            "int": i,
            "boolean": i % 2 == 1,
            "double": i / 3,
            "float": i / 2,
            "bytes": bytes([i % 256]),
        }[schema]
    t = schema["type"]
    if isinstance(t, dict | list):
        return _value(t, i, named)
    if t == "record":
        named[schema["name"]] = schema
        if "namespace" in schema:
            named[f"{schema['namespace']}.{schema['name']}"] = schema
        # a different index per field, so fields vary independently
        return {f["name"]: _value(f["type"], i + n, named) for n, f in enumerate(schema["fields"])}
    if t == "enum":
        named[schema["name"]] = schema
        return schema["symbols"][i % len(schema["symbols"])]
    if t == "array":
        return [_value(schema["items"], i + k, named) for k in range(i % 3)]
    if t == "map":
        return {f"k{k}": _value(schema["values"], i + k, named) for k in range(i % 3)}
    return _value(t, i, named)


def generate(schema: dict[str, Any], count: int = 24) -> list[dict[str, Any]]:
    return [_value(schema, i, {}) for i in range(count)]


def resolution_failures(writer: dict[str, Any], reader: dict[str, Any]) -> list[str]:
    """Write generated records with `writer`, read them with `reader`: the problems, if any."""
    w, r = fastavro.parse_schema(copy.deepcopy(writer)), fastavro.parse_schema(copy.deepcopy(reader))
    problems = []
    for rec in generate(writer):
        buf = io.BytesIO()
        fastavro.schemaless_writer(buf, w, rec)
        buf.seek(0)
        try:
            fastavro.schemaless_reader(buf, w, r)
        except (SchemaResolutionError, ValueError, KeyError) as exc:
            problems.append(f"{type(exc).__name__}: {exc}")
    return sorted(set(problems))


# --- the guard ------------------------------------------------------------------------------------


def test_history_holds_the_first_released_version() -> None:
    names = [p.name for p in HISTORY]
    assert names and names[0] == "eval_event.v1.avsc", names
    for path in HISTORY:
        fastavro.parse_schema(_load(path))  # every released version is a valid schema


def test_generator_covers_every_enum_symbol_and_null_branch() -> None:
    records = generate(load_schema_json())
    decisions = {r["responseData"]["decision"] for r in records}
    assert decisions == {"Permit", "Deny", "Unknown"}
    assert {r["initiator"]["name"] is None for r in records} == {True, False}


@pytest.mark.parametrize("old", HISTORY, ids=lambda p: p.stem)
def test_backward_compatible_current_reader_reads_old_data(old: Path) -> None:
    assert resolution_failures(writer=_load(old), reader=load_schema_json()) == []


@pytest.mark.parametrize("old", HISTORY, ids=lambda p: p.stem)
def test_forward_compatible_old_reader_reads_current_data(old: Path) -> None:
    assert resolution_failures(writer=load_schema_json(), reader=_load(old)) == []


@pytest.mark.parametrize("old", HISTORY, ids=lambda p: p.stem)
def test_codec_decodes_single_object_messages_of_old_writers(old: Path) -> None:
    """A producer still on an old version writes single-object frames with its own fingerprint."""
    old_codec = EvalCodec(schema=_load(old))
    current = EvalCodec()
    for rec in generate(_load(old), 8):
        decoded = current.decode(old_codec.reference_encode(rec))
        assert decoded["id"] == rec["id"]
        assert decoded["responseData"]["isEnforced"] == rec["responseData"]["isEnforced"]


# --- negative controls: the check must catch incompatible changes ---------------------------------


def _field(schema: dict[str, Any], *path: str) -> dict[str, Any]:
    node: dict[str, Any] = schema
    for name in path:
        fields = node["type"]["fields"] if "fields" not in node else node["fields"]
        node = next(f for f in fields if f["name"] == name)
    return node


def test_negative_new_field_without_default_breaks_backward() -> None:
    """A new required field: a current reader cannot read data written before it existed."""
    variant = load_schema_json()
    variant["fields"].append({"name": "tenant", "type": "string", "doc": "no default: incompatible"})
    assert resolution_failures(writer=load_schema_json(), reader=variant) != []
    # ...while the same field with a default is fine both ways
    ok = load_schema_json()
    ok["fields"].append({"name": "tenant", "type": ["null", "string"], "default": None, "doc": "with default"})
    assert resolution_failures(writer=load_schema_json(), reader=ok) == []
    assert resolution_failures(writer=ok, reader=load_schema_json()) == []


def test_negative_new_enum_symbol_without_reader_default_breaks_forward() -> None:
    """A symbol added to an enum whose (old) reader declares no default: old readers fail on it."""
    old_reader = load_schema_json()
    decision = _field(old_reader, "responseData", "decision")["type"]
    del decision["default"]
    decision["symbols"] = ["Permit", "Deny"]
    writer = load_schema_json()
    _field(writer, "responseData", "decision")["type"]["symbols"].append("Indeterminate")
    assert resolution_failures(writer=writer, reader=old_reader) != []
    # With the reader default the SPEC requires, the same addition resolves to it.
    assert resolution_failures(writer=writer, reader=load_schema_json()) == []


def test_negative_type_change_breaks_both_ways() -> None:
    variant = load_schema_json()
    _field(variant, "reason", "reasonCode")["type"] = "string"
    assert resolution_failures(writer=load_schema_json(), reader=variant) != []
    assert resolution_failures(writer=variant, reader=load_schema_json()) != []


def test_negative_removed_field_without_default_breaks_forward() -> None:
    """Dropping a field old readers need (no default there): old readers cannot read new data."""
    variant = load_schema_json()
    variant["fields"] = [f for f in variant["fields"] if f["name"] != "attemptId"]
    assert resolution_failures(writer=variant, reader=load_schema_json()) != []
