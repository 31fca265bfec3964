"""Producer JSON Schemas (schemas/*.schema.json): committed files are fresh, and they describe SPEC §3/§4."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from processor.codec import jsonschemas
from processor.core.attempts import parse_attempt
from processor.core.settings import parse_settings
from tests.support.strategies import SPEC_EXAMPLE, SPEC_EXAMPLE_EVENT_MS

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"
ATTEMPT = "access_attempt.schema.json"
SETTINGS = "settings_record.schema.json"

SPEC_SETTINGS_EXAMPLE = {
    "account_id": "a3f1c0d2e4b5968778695a4b3c2d1e0f",
    "external_account_identity_interaction": {
        "identity_types": {
            "user": {"state": "monitor", "external_allowed_accounts": ["0b1c2d3e4f5a69788796a5b4c3d2e1f0"]},
            "service_id": {"state": "enabled", "external_allowed_accounts": []},
            "service": {"state": "limited", "external_allowed_accounts": ["9f8e7d6c5b4a39281706f5e4d3c2b1a0"]},
        }
    },
}


def load(name: str) -> dict[str, Any]:
    return json.loads((SCHEMAS / name).read_text(encoding="utf-8"))  # type: ignore[no-any-return]


@pytest.mark.parametrize("name", [ATTEMPT, SETTINGS])
def test_committed_schema_is_fresh(name: str) -> None:
    path = SCHEMAS / name
    assert path.is_file(), f"{path} is missing: run `python -m processor.codec.jsonschemas`"
    assert path.read_text(encoding="utf-8") == jsonschemas.render(name), (
        f"{path} differs from the pydantic models: run `python -m processor.codec.jsonschemas` and commit the result"
    )


def test_generator_writes_both_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert jsonschemas.main([str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([ATTEMPT, SETTINGS])
    for name in (ATTEMPT, SETTINGS):
        assert (tmp_path / name).read_text(encoding="utf-8") == (SCHEMAS / name).read_text(encoding="utf-8")
    assert str(tmp_path / ATTEMPT) in capsys.readouterr().out


@pytest.mark.parametrize("name", [ATTEMPT, SETTINGS])
def test_schema_metadata(name: str) -> None:
    s = load(name)
    assert s["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert s["$id"] and s["title"] and len(s["description"]) > 40
    assert s["type"] == "object"
    ids = {load(n)["$id"] for n in (ATTEMPT, SETTINGS)}
    assert len(ids) == 2


# --- structural checks (no validator needed) --------------------------------------------------------


def _resolve(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    """Follow a local $ref and unwrap `anyOf: [X, null]`."""
    if "$ref" in node:
        name = node["$ref"].removeprefix("#/$defs/")
        return _resolve(schema, schema["$defs"][name])
    if "anyOf" in node:
        non_null = [b for b in node["anyOf"] if b.get("type") != "null"]
        assert len(non_null) == 1
        return _resolve(schema, non_null[0])
    return node


def test_attempt_schema_structure_matches_spec_4() -> None:
    s = load(ATTEMPT)
    assert set(s["required"]) == {"id", "event_time", "account_id", "identity", "action"}
    props = s["properties"]
    assert set(props) >= {"id", "event_time", "account_id", "identity", "action", "resource", "source_ip",
                          "user_agent"}
    assert props["event_time"]["type"] == "string" and props["event_time"]["format"] == "date-time"
    identity = _resolve(s, props["identity"])
    assert set(identity["required"]) == {"iam_id", "type", "account_id"}
    assert "name" in identity["properties"]
    assert identity["properties"]["type"]["enum"] == ["user", "service_id", "service"]
    resource = _resolve(s, props["resource"])
    assert set(resource["properties"]) == {"crn", "service_name"}
    assert not resource.get("required")
    # unknown extra fields are ignored (SPEC §4), so the schema must not forbid them
    assert s.get("additionalProperties", True) is not False
    assert identity.get("additionalProperties", True) is not False


def test_settings_schema_structure_matches_spec_3() -> None:
    s = load(SETTINGS)
    assert "account_id" in s["required"]
    props = s["properties"]
    assert "updated_at" not in s["required"]
    assert _resolve(s, props["updated_at"])["format"] == "date-time"
    interaction = props["external_account_identity_interaction"]
    assert "external_account_identity_interaction" in s["required"]
    assert "anyOf" not in interaction  # null is a wrong type: only a tombstone resets an account
    types = _resolve(s, _resolve(s, interaction)["properties"]["identity_types"])
    assert set(types["properties"]) == {"user", "service_id", "service"}
    assert types.get("additionalProperties", True) is not False  # unknown identity types: ignored
    assert not types.get("required")  # a missing identity type is `enabled`
    for t in ("user", "service_id", "service"):
        assert "anyOf" not in types["properties"][t]  # an identity type is an object or absent, never null
        cfg = _resolve(s, types["properties"][t])
        assert cfg["required"] == ["state"]
        assert cfg["properties"]["state"]["enum"] == ["enabled", "monitor", "limited"]
        allow = cfg["properties"]["external_allowed_accounts"]
        assert allow["type"] == "array" and allow["items"]["type"] == "string"


def _check_structurally(schema: dict[str, Any], node: dict[str, Any], value: Any, path: str = "") -> None:
    """A tiny validator for the subset these schemas use: required, properties, enum, type, anyOf, $ref."""
    if "$ref" in node:
        _check_structurally(schema, _resolve(schema, node), value, path)
        return
    if "anyOf" in node:
        errors = []
        for branch in node["anyOf"]:
            try:
                _check_structurally(schema, branch, value, path)
                return
            except AssertionError as exc:
                errors.append(str(exc))
        raise AssertionError(f"{path}: no anyOf branch matches: {errors}")
    kinds = {"object": dict, "array": list, "string": str, "null": type(None)}
    if "type" in node:
        assert isinstance(value, kinds[node["type"]]), f"{path}: not {node['type']}"
    if "enum" in node:
        assert value in node["enum"], f"{path}: {value!r} not in {node['enum']}"
    if isinstance(value, dict):
        for key in node.get("required", []):
            assert key in value, f"{path}.{key}: required"
        for key, sub in node.get("properties", {}).items():
            if key in value:
                _check_structurally(schema, sub, value[key], f"{path}.{key}")
    if isinstance(value, list) and "items" in node:
        for i, item in enumerate(value):
            _check_structurally(schema, node["items"], item, f"{path}[{i}]")


def _bad_variants(example: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    out = []
    if kind == ATTEMPT:
        for key in ("id", "event_time", "account_id", "identity", "action"):
            out.append({k: v for k, v in example.items() if k != key})
        bad = copy.deepcopy(example)
        bad["identity"]["type"] = "robot"
        out.append(bad)
        bad = copy.deepcopy(example)
        del bad["identity"]["iam_id"]
        out.append(bad)
    else:
        out.append({k: v for k, v in example.items() if k != "account_id"})
        bad = copy.deepcopy(example)
        bad["external_account_identity_interaction"]["identity_types"]["user"]["state"] = "off"
        out.append(bad)
        bad = copy.deepcopy(example)
        bad["external_account_identity_interaction"]["identity_types"]["service"]["external_allowed_accounts"] = "x"
        out.append(bad)
    return out


CASES = [(ATTEMPT, SPEC_EXAMPLE), (SETTINGS, SPEC_SETTINGS_EXAMPLE)]


@pytest.mark.parametrize(("name", "example"), CASES, ids=["attempt", "settings"])
def test_spec_examples_structurally_valid_and_bad_variants_not(name: str, example: dict[str, Any]) -> None:
    schema = load(name)
    _check_structurally(schema, schema, example)
    for bad in _bad_variants(example, name):
        with pytest.raises(AssertionError):
            _check_structurally(schema, schema, bad)


@pytest.mark.parametrize(("name", "example"), CASES, ids=["attempt", "settings"])
def test_spec_examples_validate_with_jsonschema(name: str, example: dict[str, Any]) -> None:
    schema = load(name)
    validator_cls = jsonschema.validators.validator_for(schema)
    validator_cls.check_schema(schema)
    validator = validator_cls(schema)
    validator.validate(example)
    for bad in _bad_variants(example, name):
        assert not validator.is_valid(bad), bad


def test_spec_examples_are_accepted_by_the_models() -> None:
    """What the schemas promise, the processor accepts."""
    parse_attempt(json.dumps(SPEC_EXAMPLE), SPEC_EXAMPLE_EVENT_MS + 1000)
    doc = parse_settings(json.dumps(SPEC_SETTINGS_EXAMPLE))
    assert doc.account_id == SPEC_SETTINGS_EXAMPLE["account_id"]
