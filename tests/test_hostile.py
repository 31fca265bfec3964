"""The hostile-input corpus (tests/hostile.py) against what an operator reads and pastes.

Assertions are on the rendered screen (pyte, tests/screen_harness.py), not only on bytes: no forged
row, no cleared screen, no window title, every hostile string visible in its escaped form, one record
per row; and on what a pasted command does in a sandboxed shell. docs/threat-model.md states the
promises, docs/guarantees.md records the figures this file prints.
"""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import Any

import pytest
from hostile import ALL, ESCAPED, FORGED_ROW, HOSTILE_IDS, PARTNER
from screen_harness import forbidden, paste, screen, shown

from processor.core.display import shell_command
from processor.tools import tail

TARGET = "a3f1c0d2e4b5968778695a4b3c2d1e0f"
EXT = "9f8e7d6c5b4a39281706f5e4d3c2b1a0"
EVENT_MS = 1_795_000_000_000
#: The streaming table's columns (tail): where IDENTITY and ACTION start.
IDENTITY_AT, ACTION_AT = 126, 156


def hostile_event(n: int, text: str, ext: str = EXT, iam_id: str | None = None) -> dict[str, Any]:
    """An eval event whose every attacker-controlled string is `text` (identity id: uNN-text)."""
    return {
        "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"hostile-{n}")),
        "action": "iam-access-management.account-settings.eval",
        "eventTime": EVENT_MS + n,
        "attemptId": f"{n:02d}-{text}",
        "initiator": {"id": iam_id or f"u{n:02d}-{text}", "typeURI": "user", "name": text, "authnAccountId": ext,
                      "host": {"address": text[:256], "agent": text}},
        "target": {"accountId": TARGET, "id": text, "serviceName": text, "action": text},
        "responseData": {"decision": "Deny", "isEnforced": False, "state": "monitor", "allowlisted": False,
                         "settingsVersion": {"effectiveTime": None, "topic": None, "partition": None,
                                             "offset": None, "exact": True}},
        "outcome": "failure",
        "severity": "normal",
        "reason": {"reasonCode": 403, "reasonType": "external account not on the allowlist"},
        "observer": {"name": "access-eval", "version": "test", "evaluatedAt": EVENT_MS + n},
        "truncated": False,
    }


def check_tail_table(out: str, corpus: dict[str, str]) -> dict[str, int]:
    """The `tail --format table` screen: one row per event, nothing obeyed, each string shown escaped.
    Returns the figures (strings tried, shown escaped)."""
    scr = screen(out)
    assert scr.title == "", f"the window title was set to {scr.title!r}"
    assert scr.literal, "the terminal obeyed part of the output (rows differ from the text)"
    assert scr.lines[0].startswith("EVENT TIME"), "the header is gone (screen cleared or overwritten)"
    rows = scr.lines[1:]
    assert len(rows) == len(corpus), f"{len(rows)} rows for {len(corpus)} events: a forged or swallowed row"
    escaped = 0
    names = list(corpus)
    for row in rows:
        assert not any(forbidden(c) for c in row), row
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", row[:24]), f"not an event row: {row!r}"
        assert row[60:68].strip() == "Deny", f"forged decision: {row!r}"
        n = int(row[IDENTITY_AT + 1:IDENTITY_AT + 3])
        text = corpus[names[n]]
        want = shown(text)
        assert want[:20] in row[ACTION_AT - 30:], f"{names[n]}: {want[:20]!r} not visible in {row!r}"
        escaped += want != text
    assert sorted(int(r[IDENTITY_AT + 1:IDENTITY_AT + 3]) for r in rows) == list(range(len(corpus)))
    assert FORGED_ROW not in scr.lines
    return {"tried": len(corpus), "escaped": escaped}


def test_tail_table_renders_every_hostile_string_escaped_one_row_each() -> None:
    out = tail.table_header() + "\n" + "".join(
        tail.table_row(hostile_event(n, text)) + "\n" for n, text in enumerate(ALL.values())
    )
    figures = check_tail_table(out, ALL)
    assert figures["escaped"] >= len(ESCAPED)
    print(f"tail table: {figures['tried']} hostile strings tried, {figures['escaped']} shown escaped")


# --- pasted commands ------------------------------------------------------------------------------


def test_the_sandbox_would_see_an_injected_command(tmp_path: Path) -> None:
    """The check below means something: an unquoted line does run `touch` in the sandbox."""
    calls, created = paste("access-eval settings put --add-allow $(touch pwned)", tmp_path)
    assert created == ["work/pwned"] and calls == [["settings", "put", "--add-allow"]]


@pytest.mark.parametrize("name", sorted(HOSTILE_IDS) + sorted(n for n, s in ALL.items() if "\x00" not in s))
def test_a_command_printed_for_pasting_passes_each_word_literally(name: str, tmp_path: Path) -> None:
    """No argv word can hold NUL, so the one corpus string with it is left out."""
    text = {**HOSTILE_IDS, **ALL}[name]
    argv = ["settings", "put", "--account", TARGET, "--identity-type", "user", "--add-allow", text, PARTNER]
    calls, created = paste(shell_command(["access-eval", *argv]), tmp_path)
    assert created == [], f"pasting ran something: {created}"
    assert calls == [argv]
