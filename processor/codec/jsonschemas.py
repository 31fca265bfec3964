"""Producer-facing JSON Schemas of the two inputs, generated from the boundary models.

`python -m processor.codec.jsonschemas [DIR]` (re)writes `schemas/access_attempt.schema.json` and
`schemas/settings_record.schema.json`; a test fails when the committed files are stale.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from processor.codec.avro import schema_dir
from processor.core.attempts import AccessAttempt
from processor.core.settings import SettingsDocument

DIALECT = "https://json-schema.org/draft/2020-12/schema"

#: file name -> (model, $id, title, description)
SCHEMAS: dict[str, tuple[type[BaseModel], str, str, str]] = {
    "access_attempt.schema.json": (
        AccessAttempt,
        "urn:access-eval:schema:access-attempt:v1",
        "Access attempt",
        "Value of a record on the access-attempts topic (iam.access-attempts): one access attempt, UTF-8 JSON. "
        "event_time is RFC 3339 with an offset; account ids are compared trimmed and lower-cased; unknown "
        "fields are ignored. Invalid attempts go to the dead-letter topic.",
    ),
    "settings_record.schema.json": (
        SettingsDocument,
        "urn:access-eval:schema:settings-record:v1",
        "Account settings record",
        "Value of a record on the compacted settings topic (iam.account-settings), keyed by account_id. "
        "A missing identity type is 'enabled'; null is a wrong type wherever an object, list or string is "
        "required (such a record is rejected): only a null record value (tombstone) reverts the account to "
        "defaults; updated_at (RFC 3339 with an offset) is when the "
        "version takes effect, else the record timestamp. Invalid records are rejected and the previous "
        "version stays in force.",
    ),
}


def generate(name: str) -> dict[str, Any]:
    model, schema_id, title, description = SCHEMAS[name]
    body = model.model_json_schema()
    body.pop("title", None)
    body.pop("description", None)
    return {"$schema": DIALECT, "$id": schema_id, "title": title, "description": description, **body}


def render(name: str) -> str:
    return json.dumps(generate(name), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    folder = Path(args[0]) if args else schema_dir()
    for name in SCHEMAS:
        (folder / name).write_text(render(name), encoding="utf-8")
        print(f"wrote {folder / name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
