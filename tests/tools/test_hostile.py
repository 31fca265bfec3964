"""The hostile-input corpus (tests/support/hostile.py) against what an operator reads and pastes.

Assertions are on the rendered screen (pyte, tests/support/screen_harness.py), not only on bytes: no forged
row, no cleared screen, no window title, every hostile string visible in its escaped form, one record
per row; and on what a pasted command does in a sandboxed shell. docs/threat-model.md states the
promises, docs/guarantees.md records the figures this file prints.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from processor.core.display import shell_command
from processor.tools import tail
from tests.support.hostile import ALL, ESCAPED, FORGED_ROW, HOSTILE_IDS, MARKUP, PARTNER
from tests.support.kafka_harness import Topics
from tests.support.processor_harness import produce, read_topic, start_processor, wait_all_committed
from tests.support.screen_harness import forbidden, paste, screen, shown
from tests.support.tool_harness import ae, ok, produce_events

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


# --- end to end on a real broker: run, tail, report, settings -------------------------------------


def attempt(n: int, text: str, now_ms: int, target: str = TARGET, ident_account: str = EXT,
            attempt_id: str | None = None, iam_id: str | None = None) -> bytes:
    event_time = datetime.fromtimestamp((now_ms - 600_000 + n) / 1000, UTC).isoformat()
    return json.dumps({
        "id": attempt_id or f"{n:02d}-{text}", "event_time": event_time, "account_id": target,
        "identity": {"iam_id": iam_id or f"u{n:02d}-{text}", "type": "user", "account_id": ident_account,
                     "name": text},
        "action": text, "resource": {"crn": text, "service_name": text}, "source_ip": text[:256],
        "user_agent": text,
    }).encode()


def settings_value(account: str, types: dict[str, Any]) -> bytes:
    return json.dumps({"account_id": account,
                       "external_account_identity_interaction": {"identity_types": types}}).encode()


#: Settings records: the target; an accepted document with hostile unknown identity-type keys; a valid
#: version then a rejected one; a look-alike in an allowlist; a hostile key.
UNKNOWN_TYPES = {"\x1b]0;pwned-title\x07\x1b[2J": {"state": "monitor"}, "\u202eresu": {"state": "limited"}}


def settings_records() -> list[tuple[bytes, bytes | None]]:
    return [
        (TARGET.encode(), settings_value(TARGET, {"user": {"state": "monitor",
                                                           "external_allowed_accounts": [PARTNER]}})),
        (b"k-unknown-types", settings_value("k-unknown-types", {"user": {"state": "monitor"}, **UNKNOWN_TYPES})),
        (b"k-rejected", settings_value("k-rejected", {"user": {"state": "limited"}})),
        (b"k-rejected", settings_value("k-rejected", {"user": {"state": "\x1b[2J\x1b]0;pwned-title\x07"}})),
        (b"k-lookalike", settings_value("k-lookalike", {"user": {"state": "limited",
                                                                  "external_allowed_accounts": [PARTNER + "\u200b"]}})),
        (b"\x1b[2Jevil", settings_value("\x1b[2Jevil", {})),
    ]


def check_literal(out: str, what: str) -> list[str]:
    """Output rendered exactly as written (nothing obeyed, no title), no forbidden character: its lines."""
    scr = screen(out)
    assert scr.title == "", f"{what}: the window title was set to {scr.title!r}"
    assert scr.literal, f"{what}: the terminal obeyed part of the output"
    for line in scr.lines:
        assert not any(forbidden(c) for c in line), f"{what}: {line!r}"
    return scr.lines


def check_json(out: str, what: str) -> Any:
    assert out.isascii() and not any(forbidden(c) for c in out.replace("\n", "")), f"{what}: raw characters"
    return json.loads(out)


def strings_in(obj: Any) -> set[str]:
    if isinstance(obj, dict):
        return set().union(*(strings_in(v) for v in obj.values())) if obj else set()
    if isinstance(obj, list):
        return set().union(*(strings_in(v) for v in obj)) if obj else set()
    return {obj} if isinstance(obj, str) else set()


def test_hostile_corpus_end_to_end(topics: Topics, tmp_path: Path) -> None:
    topics.create()
    now = int(time.time() * 1000)
    b = topics.bootstrap
    produce(b, topics.settings, settings_records())
    good = [(None, attempt(n, text, now)) for n, text in enumerate(ALL.values())]
    # colliding attempt ids: one id, two identities and actions; each is its own record and row
    collide = [(None, attempt(len(ALL) + i, f"collide-{i}", now, attempt_id="same-attempt-id")) for i in range(2)]
    dead = [(None, attempt(90, "bad-target", now, target=bad)) for bad in HOSTILE_IDS.values()]
    dead += [(None, attempt(91, "bad-identity", now, ident_account=bad)) for bad in HOSTILE_IDS.values()]
    produce(b, topics.attempts, good + collide + dead)
    proc = start_processor(topics, tmp_path)
    try:
        proc.wait_ready()
        wait_all_committed(b, topics.group, topics.attempts)
    finally:
        proc.terminate()

    # run: its log lines are JSON, ASCII-only (what they echo of the input is escaped by the encoder)
    log_lines = proc.log_path.read_text().splitlines()
    assert log_lines and all(check_json(line, "processor log") is not None for line in log_lines)
    # run: every hostile account id was dead-lettered with a reason naming the field
    dlq = read_topic(b, topics.dlq)
    assert len(dlq) == len(dead)
    for m in dlq:
        h = dict(m.headers())
        assert h["error.reason"] == b"invalid_field" and b"account id" in h["error.detail"], h
    corpus = {**ALL, **{f"collide-{i}": f"collide-{i}" for i in range(2)}}

    # tail, table and JSON
    table = ok(ae("tail", "--bootstrap-servers", b, "--eval-topic", topics.evals, "--from-beginning",
                  "--format", "table"))
    figures = check_tail_table(table, corpus)
    lines = ok(ae("tail", "--bootstrap-servers", b, "--eval-topic", topics.evals, "--from-beginning")).splitlines()
    events = [check_json(line, "tail json") for line in lines]
    want_ids = sorted(f"u{n:02d}-{t}" for n, t in enumerate(corpus.values()))
    assert sorted(e["initiator"]["id"] for e in events) == want_ids

    # report: events of ids written before the rule (or by another producer) are shown, never proposed
    produce_events(b, topics.evals, [hostile_event(60 + i, "x", ext=bad, iam_id=f"h{i}")
                                     for i, bad in enumerate(HOSTILE_IDS.values())])
    check_report(topics, corpus, tmp_path)

    check_settings_views(topics)
    print(f"hostile corpus end to end: {len(ALL)} hostile strings tried, each in the 8 string fields of an "
          f"attempt; {figures['escaped']} shown escaped in the tail table (the others, shell metacharacters, markup "
          f"and wide text, are printable and shown as they are); {len(dead)} attempts with "
          f"{len(HOSTILE_IDS)} hostile account ids dead-lettered")


def check_settings_views(topics: Topics) -> None:
    """settings list / list --invalid / get, as text and as JSON, over the hostile settings records."""
    base = ("--bootstrap-servers", topics.bootstrap, "--settings-topic", topics.settings)
    listed = check_literal(ok(ae("settings", "list", *base)), "settings list")
    assert sum(TARGET in ln for ln in listed) == 1 and sum("k-unknown-types" in ln for ln in listed) == 1
    invalid = check_literal(ok(ae("settings", "list", "--invalid", *base)), "settings list --invalid")
    assert sum(ln.startswith("k-rejected") for ln in invalid) == 1
    assert sum(ln.startswith("k-lookalike") for ln in invalid) == 1
    got = check_literal(ok(ae("settings", "get", "--account", "k-unknown-types", *base)), "settings get")
    for key in UNKNOWN_TYPES:
        assert any(shown(key) in ln for ln in got), f"{shown(key)!r} not shown: {got}"
    got = check_literal(ok(ae("settings", "get", "--account", "k-rejected", *base)), "settings get")
    assert any("rejected" in ln for ln in got)
    for cmd in (["get", "--account", "k-rejected"], ["list"], ["list", "--invalid"]):
        check_json(ok(ae("settings", *cmd, *base, "--format", "json")), f"settings {cmd} json")


def check_report(topics: Topics, corpus: dict[str, str], tmp_path: Path) -> None:
    args = ("report", "--bootstrap-servers", topics.bootstrap, "--eval-topic", topics.evals,
            "--settings-topic", topics.settings, "--account", TARGET)
    text = check_literal(ok(ae(*args, "--top", "0")), "report")
    # The two colliding attempts share an event id until event ids cover the attempt's content (another
    # change): the report counts at least one of them.
    for n in range(len(ALL)):
        assert any(f"u{n:02d}-" in ln for ln in text), f"identity u{n:02d} missing from the report"
    for bad in HOSTILE_IDS.values():
        assert any(shown(bad) in ln for ln in text), f"{shown(bad)!r} not shown in the report"
    pasted = [ln.strip() for ln in text if "access-eval settings" in ln]
    assert pasted, "the report proposes no command"
    for line in pasted:
        calls, created = paste(line[line.index("access-eval"):], tmp_path / "sandbox")
        assert created == [], f"pasting {line!r} ran something: {created}"
        assert len(calls) == 1 and calls[0][:4] == ["settings", "put", "--account", TARGET], calls
        words = calls[0]
        assert EXT in words and not set(HOSTILE_IDS.values()) & set(words), f"proposed: {words}"
        assert all(w.isascii() and w.isprintable() for w in words)
    print(f"report: {len(pasted)} pasted line(s) run in the sandbox, {len(HOSTILE_IDS)} hostile ids shown escaped, "
          "none proposed")
    report = check_json(ok(ae(*args, "--format", "json")), "report json")
    assert report["would_be_denies"] >= len(corpus) - 1
    assert {f"u{n:02d}-{t}" for n, t in enumerate(ALL.values())} <= strings_in(report)
    page = tmp_path / "report.html"
    ok(ae(*args, "--format", "html", "--output", str(page)))
    html = page.read_text(encoding="utf-8")
    for markup in MARKUP.values():
        assert markup not in html, f"{markup!r} written raw into the page"
    assert not any(forbidden(c) for c in html.replace("\n", ""))


# --- settings put refuses what the contract rejects (before any Kafka contact) --------------------

#: The ids of the issue and the corpus; not `--clear-allow`: on a command line argparse reads it as the option.
PUT_REFUSED = {**{k: v for k, v in HOSTILE_IDS.items() if not v.startswith("-")}, "c1_csi": "ab\x9bcd",
               "bidi": "ab\u202ecd", "zero_width": "ab\u200bcd", "a_id_b": "a$(id)b", "a_semicolon_b": "a;b"}


@pytest.mark.parametrize("name", sorted(PUT_REFUSED))
def test_settings_put_refuses_ids_the_contract_rejects(name: str, tmp_path: Path) -> None:
    bad = PUT_REFUSED[name]
    doc = {"account_id": TARGET, "external_account_identity_interaction": {
        "identity_types": {"user": {"state": "limited", "external_allowed_accounts": [EXT, bad]}}}}
    (tmp_path / "doc.json").write_text(json.dumps(doc))
    for args in (["--identity-type", "user", "--state", "limited", "--allow", bad],
                 ["--identity-type", "user", "--state", "limited", "--add-allow", EXT, bad],
                 ["--file", str(tmp_path / "doc.json"), "--dry-run"]):
        proc = ae("settings", "put", "--bootstrap-servers", "127.0.0.1:1", "--account", TARGET, *args)
        assert proc.returncode == 2 and proc.stdout == "", (args, proc.stdout, proc.stderr)
        err = proc.stderr.rstrip("\n")
        assert "\n" not in err and err.isprintable() and "account id" in err, err
    proc = ae("settings", "put", "--bootstrap-servers", "127.0.0.1:1", "--account", bad, "--file",
              str(tmp_path / "doc.json"), "--dry-run")
    assert proc.returncode == 2 and "invalid account id" in proc.stderr and proc.stderr.rstrip("\n").isprintable()


# --- error lines that echo a flag's value ---------------------------------------------------------


@pytest.mark.parametrize("name", sorted(ESCAPED))
def test_error_lines_echo_flag_values_escaped(name: str) -> None:
    from processor.errors import OpsError
    from processor.tools.accounts import account_id
    from processor.tools.durations import parse_duration_ms, parse_since

    text = ESCAPED[name]
    for call in (lambda: account_id(f"a{text}b"), lambda: parse_duration_ms(f"3{text}d"),
                 lambda: parse_since(f"2026-11-01T{text}", 0)):
        with pytest.raises(OpsError) as info:
            call()
        msg = str(info.value)
        assert not any(forbidden(c) for c in msg), msg


def test_simulate_summary_and_rejection_lines_render_literally(tmp_path: Path) -> None:
    now = int(time.time() * 1000)
    settings = tmp_path / "settings.jsonl"
    settings.write_text("\n".join(v.decode() for _k, v in settings_records() if v is not None) + "\n")
    attempts = tmp_path / "attempts.jsonl"
    lines = [attempt(n, text, now) for n, text in enumerate(ALL.values())]
    lines += [attempt(90, "bad", now, ident_account=bad) for bad in HOSTILE_IDS.values()]
    attempts.write_bytes(b"\n".join(lines) + b"\n")
    proc = ae("simulate", "--settings", str(settings), "--attempts", str(attempts), "--summary")
    assert proc.returncode == 0, proc.stderr
    summary = check_literal(proc.stdout, "simulate --summary")
    assert any(EXT in ln for ln in summary)
    rejected = check_literal(proc.stderr, "simulate stderr")
    assert sum("attempt rejected: invalid_field" in ln for ln in rejected) == len(HOSTILE_IDS)
    assert sum("settings rejected" in ln for ln in rejected) >= 3  # k-rejected, k-lookalike, the hostile key
