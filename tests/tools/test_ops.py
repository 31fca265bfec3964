"""Operator tools end to end on the real broker: `settings put|get|delete|list`, `tail`, `report`,
their error paths and help texts. The tools run as `python -m processor ...` subprocesses, as an
operator would run them (real exit codes, real stderr)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer

from processor.cli.main import build_parser
from processor.codec.avro import EvalCodec
from processor.core.settings import SettingsHistory, parse_settings
from processor.core.times import rfc3339_millis
from tests.support.kafka_harness import Topics, free_port
from tests.support.processor_harness import (
    answer_on_a_terminal,
    end_offsets,
    produce,
    read_topic,
    start_processor,
    wait_all_committed,
)

REPO = Path(__file__).resolve().parents[2]
HOUR = 3_600_000
DAY = 24 * HOUR


# --- helpers --------------------------------------------------------------------------------------


def ae(*args: str, stdin: Any = subprocess.DEVNULL, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    """Run `access-eval ARGS` (the installed module, as an operator would) and capture everything."""
    return subprocess.run(
        [sys.executable, "-m", "processor", *args],
        cwd=REPO,
        stdin=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={k: v for k, v in os.environ.items() if not k.startswith("ACCESS_EVAL_")},
    )


def ok(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout: {proc.stdout}\nstderr: {proc.stderr}"
    return proc.stdout


def one_line_error(proc: subprocess.CompletedProcess[str], code: int, *needles: str) -> str:
    """The failure contract: the exit code, one line on stderr naming the problem, no traceback."""
    assert proc.returncode == code, f"exit {proc.returncode} != {code}\nstdout: {proc.stdout}\nstderr: {proc.stderr}"
    err = proc.stderr.strip()
    assert "Traceback" not in proc.stderr
    assert len(err.splitlines()) == 1, f"expected one line on stderr, got:\n{proc.stderr}"
    for needle in needles:
        assert needle in err, f"{needle!r} not in {err!r}"
    return err


def sget(topics: Topics, account: str) -> dict[str, Any]:
    out = ok(ae("settings", "get", "--bootstrap-servers", topics.bootstrap, "--settings-topic", topics.settings,
                "--account", account, "--format", "json"))
    result: dict[str, Any] = json.loads(out)
    return result


def sput(topics: Topics, account: str, *args: str) -> subprocess.CompletedProcess[str]:
    return ae("settings", "put", "--bootstrap-servers", topics.bootstrap, "--settings-topic", topics.settings,
              "--account", account, *args)


def states(view: dict[str, Any]) -> dict[str, tuple[str, list[str]]]:
    return {t: (v["state"], v["external_allowed_accounts"]) for t, v in view["identity_types"].items()}


def unreachable() -> str:
    return f"127.0.0.1:{free_port()}"


def make_event(
    n: int,
    target: str,
    ext: str,
    itype: str,
    iam_id: str,
    state: str,
    decision: str,
    event_ms: int,
    action: str = "cloud-object-storage.object.read",
) -> dict[str, Any]:
    """An eval event record shaped like schemas/eval_event.avsc, written out by hand."""
    enforced = state == "limited"
    return {
        "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"evt-{n}")),
        "action": "iam-access-management.account-settings.eval",
        "eventTime": event_ms,
        "attemptId": f"att-{n}",
        "initiator": {"id": iam_id, "typeURI": itype, "name": f"{iam_id}@example.com", "authnAccountId": ext,
                      "host": {"address": "203.0.113.7", "agent": "test"}},
        "target": {"accountId": target, "id": None, "serviceName": None, "action": action},
        "responseData": {
            "decision": decision,
            "isEnforced": enforced,
            "state": state,
            "allowlisted": decision == "Permit",
            "settingsVersion": {"effectiveTime": None, "topic": None, "partition": None, "offset": None,
                                "exact": True},
        },
        "outcome": "success" if decision == "Permit" else "failure",
        "severity": "warning" if enforced and decision == "Deny" else "normal",
        "reason": {"reasonCode": 200 if decision == "Permit" else 403, "reasonType": "test"},
        "observer": {"name": "access-eval", "version": "test", "evaluatedAt": event_ms + 5},
        "truncated": False,
    }


def produce_events(bootstrap: str, topic: str, events: list[dict[str, Any]], codec: EvalCodec | None = None,
                   timestamp_ms: int | None = None) -> None:
    codec = codec or EvalCodec()
    p = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    for e in events:
        kwargs: dict[str, Any] = {"headers": codec.headers}
        if timestamp_ms is not None:
            kwargs["timestamp"] = timestamp_ms
        p.produce(topic, codec.encode(e), e["target"]["accountId"].encode(), **kwargs)
    assert p.flush(30) == 0


def tail_ids(topics: Topics, *args: str) -> list[str]:
    out = ok(ae("tail", "--bootstrap-servers", topics.bootstrap, "--eval-topic", topics.evals, *args))
    return [json.loads(line)["attemptId"] for line in out.splitlines()]


# --- help texts -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [["settings"], ["settings", "put"], ["settings", "get"], ["settings", "delete"], ["settings", "list"],
     ["tail"], ["report"]],
    ids=lambda p: "-".join(p),
)
def test_help_texts_show_examples(path: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args([*path, "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "examples:" in text
    assert f"access-eval {path[0]} " in text.split("examples:", 1)[1]
    assert "exit status" in text


def test_tail_help_documents_where_it_starts_and_stops(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["tail", "--help"])
    text = capsys.readouterr().out
    for flag in ("--from-beginning", "--since", "--follow", "--limit", "read_committed", "--schema-registry-url"):
        assert flag in text


def test_help_via_the_installed_command() -> None:
    out = ok(ae("report", "--help"))
    assert "access-eval report --bootstrap-servers" in out and "--since" in out


# --- error paths without a broker: validated before anything is sent -------------------------------


def test_invalid_input_is_rejected_before_any_kafka_contact(tmp_path: Path) -> None:
    """With an unreachable broker, invalid input still fails with exit 2 and a message naming the
    input problem: validation happens before the tool tries to reach Kafka."""
    b = unreachable()
    put = ("settings", "put", "--bootstrap-servers", b, "--timeout", "2")
    one_line_error(ae(*put, "--account", "a b", "--identity-type", "user", "--state", "monitor"), 2,
                   "--account", "invalid account id")
    one_line_error(ae(*put, "--account", "   ", "--identity-type", "user", "--state", "monitor"), 2, "empty")
    one_line_error(ae(*put, "--account", "acct1", "--identity-type", "user", "--state", "strict"), 2,
                   "unknown state 'strict'", "enabled, monitor, limited")
    one_line_error(ae(*put, "--account", "acct1", "--identity-type", "user", "--state", "monitor",
                      "--allow", "ok1", "bad id"), 2, "--allow")
    one_line_error(ae(*put, "--account", "acct1"), 2, "--file", "--identity-type")
    one_line_error(ae(*put, "--account", "acct1", "--identity-type", "user"), 2, "--state")

    bad_state = tmp_path / "bad-state.json"
    bad_state.write_text(json.dumps({"account_id": "acct1", "external_account_identity_interaction": {
        "identity_types": {"user": {"state": "bogus"}}}}))
    one_line_error(ae(*put, "--account", "acct1", "--file", str(bad_state)), 2, "invalid settings document", "state")
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"account_id": "acct2", "external_account_identity_interaction": None}))
    one_line_error(ae(*put, "--account", "acct1", "--file", str(other)), 2, "differs from --account")
    typo = tmp_path / "typo.json"
    typo.write_text(json.dumps({"account_id": "acct1", "external_account_identity_interaction": {
        "identity_types": {"servce": {"state": "limited"}}}}))
    one_line_error(ae(*put, "--account", "acct1", "--file", str(typo)), 2, "near miss", "'servce'", "'service'")
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    one_line_error(ae(*put, "--account", "acct1", "--file", str(broken)), 2, "malformed JSON")
    one_line_error(ae(*put, "--account", "acct1", "--file", str(tmp_path / "missing.json")), 2, "cannot read")

    one_line_error(ae("settings", "get", "--bootstrap-servers", b, "--account", "x,y"), 2, "invalid account id")
    one_line_error(ae("tail", "--bootstrap-servers", b, "--since", "yesterday"), 2, "--since", "invalid duration")
    one_line_error(ae("tail", "--bootstrap-servers", b, "--limit", "0"), 2, "--limit")
    one_line_error(ae("report", "--bootstrap-servers", b, "--account", "acct1", "--since", "5 parsecs"), 2, "--since")
    one_line_error(ae("report", "--bootstrap-servers", b, "--account", ""), 2, "--account")
    # delete without confirmation and without a terminal: refused before connecting
    one_line_error(ae("settings", "delete", "--bootstrap-servers", b, "--account", "acct1"), 2,
                   "without confirmation", "--yes")


def test_dry_run_prints_the_validated_document_without_kafka(tmp_path: Path) -> None:
    f = tmp_path / "s.json"
    f.write_text(json.dumps({"account_id": " ACCT1 ", "external_account_identity_interaction": {
        "identity_types": {"user": {"state": "monitor", "external_allowed_accounts": ["B1"]}}}}))
    out = ok(ae("settings", "put", "--bootstrap-servers", unreachable(), "--account", "Acct1", "--file", str(f),
                "--dry-run"))
    assert json.loads(out)["account_id"] == "acct1"


@pytest.mark.parametrize(
    "args",
    [
        ["settings", "get", "--account", "acct1"],
        ["settings", "list"],
        ["settings", "put", "--account", "acct1", "--identity-type", "user", "--state", "monitor"],
        ["settings", "delete", "--account", "acct1", "--yes"],
        ["tail", "--from-beginning"],
        ["report", "--account", "acct1"],
    ],
    ids=lambda a: "-".join(a[:2]),
)
def test_unreachable_broker_is_one_line_and_exit_1(args: list[str]) -> None:
    b = unreachable()
    proc = ae(*args, "--bootstrap-servers", b, "--timeout", "2")
    one_line_error(proc, 1, "cannot reach Kafka", b)


def test_missing_bootstrap_servers_is_a_usage_error() -> None:
    one_line_error(ae("settings", "list"), 2, "--bootstrap-servers")


# --- settings -------------------------------------------------------------------------------------


def assert_the_processor_reads_what_put_wrote(topics: Topics, norm: str) -> None:
    """What is on the topic is what the processor reads: its own acceptance rules agree with the four
    records `settings put` wrote for account `norm` (user limited b1, b3, b4; service monitor, none)."""
    records = read_topic(topics.bootstrap, topics.settings)
    assert len(records) == 4
    history = SettingsHistory()
    for m in records:
        assert m.key() == norm.encode()
        parse_settings(m.value())
        assert history.apply_record(m.key(), m.value(), m.timestamp()[1], topics.settings, m.partition(),
                                    m.offset()) is None
    latest = history.latest(norm)
    assert latest is not None and latest.offset == 3
    user, _service_id, service = latest.rules
    assert user is not None and user.state == "limited" and user.allowed == {"b1", "b3", "b4"}
    assert service is not None and service.state == "monitor" and service.allowed == frozenset()


def listed_accounts(topics: Topics) -> list[str]:
    """The account ids `settings list --format json` shows, in its order."""
    listed = json.loads(ok(ae("settings", "list", "--bootstrap-servers", topics.bootstrap, "--settings-topic",
                              topics.settings, "--format", "json")))
    return [v["account_id"] for v in listed]


def test_settings_put_merges_get_list_delete(topics: Topics) -> None:
    topics.create(only=[topics.settings])
    acct = "A3F1C0D2E4B5968778695A4B3C2D1E0F"
    norm = acct.lower()

    # nothing yet: defaults
    view = sget(topics, acct)
    assert view["exists"] is False and view["source"] is None
    assert {s for s, _ in states(view).values()} == {"enabled"}

    ok(sput(topics, acct, "--identity-type", "user", "--state", "monitor", "--allow", "B1", "b2,b3"))
    ok(sput(topics, acct, "--identity-type", "service", "--state", "limited", "--allow", "c1"))
    view = sget(topics, norm)
    assert states(view) == {
        "user": ("monitor", ["b1", "b2", "b3"]),
        "service_id": ("enabled", []),
        "service": ("limited", ["c1"]),
    }, "setting service must not wipe user"

    # switching state keeps the allowlist; add/remove edit it
    ok(sput(topics, acct, "--identity-type", "user", "--state", "limited", "--add-allow", "b4", "--remove-allow", "b2"))
    view = sget(topics, acct)
    assert states(view)["user"] == ("limited", ["b1", "b3", "b4"])
    assert states(view)["service"] == ("limited", ["c1"])
    ok(sput(topics, acct, "--identity-type", "service", "--state", "monitor", "--clear-allow"))
    assert states(sget(topics, acct))["service"] == ("monitor", [])

    assert_the_processor_reads_what_put_wrote(topics, norm)

    # list: table and json
    other = "0b1c2d3e4f5a69788796a5b4c3d2e1f0"
    ok(sput(topics, other, "--identity-type", "service_id", "--state", "monitor"))
    assert listed_accounts(topics) == sorted([norm, other])
    table = ok(ae("settings", "list", "--bootstrap-servers", topics.bootstrap, "--settings-topic", topics.settings))
    assert norm in table and "limited (3 allowed)" in table

    table = ok(ae("settings", "get", "--bootstrap-servers", topics.bootstrap, "--settings-topic", topics.settings,
                  "--account", acct))
    assert "3: b1, b3, b4" in table and f"{topics.settings} [0] @ 3" in table

    # delete: a tombstone; get shows defaults, list no longer shows the account
    out = ok(ae("settings", "delete", "--bootstrap-servers", topics.bootstrap, "--settings-topic", topics.settings,
                "--account", acct, "--yes"))
    assert "tombstone" in out
    last = read_topic(topics.bootstrap, topics.settings)[-1]
    assert last.key() == norm.encode() and last.value() is None
    view = sget(topics, acct)
    assert view["exists"] is False and view["deleted"] is True
    assert {s for s, _ in states(view).values()} == {"enabled"}
    assert listed_accounts(topics) == [other]

    # put after delete starts from defaults
    ok(sput(topics, acct, "--identity-type", "user", "--state", "monitor"))
    assert states(sget(topics, acct)) == {"user": ("monitor", []), "service_id": ("enabled", []),
                                          "service": ("enabled", [])}


def test_settings_put_from_file_and_updated_at(topics: Topics, tmp_path: Path) -> None:
    topics.create(only=[topics.settings])
    doc = {"external_account_identity_interaction": {"identity_types": {
        "user": {"state": "monitor", "external_allowed_accounts": ["0B1C"]},
        "service_id": {"state": "limited"}}}}
    f = tmp_path / "s.json"
    f.write_text(json.dumps(doc))  # no account_id: taken from --account
    ok(sput(topics, "Acct-F", "--file", str(f)))
    view = sget(topics, "acct-f")
    assert states(view) == {"user": ("monitor", ["0b1c"]), "service_id": ("limited", []),
                            "service": ("enabled", [])}
    assert view["document"]["account_id"] == "acct-f"

    # a version scheduled in the future is not in force yet, and `get` says so
    future = rfc3339_millis(int(time.time() * 1000) + DAY)
    ok(sput(topics, "acct-f", "--identity-type", "user", "--state", "limited", "--updated-at", future))
    view = sget(topics, "acct-f")
    assert states(view)["user"] == ("monitor", ["0b1c"])
    assert [s["effective_time"] for s in view["scheduled"]] == [future]


def test_invalid_put_sends_nothing(topics: Topics, tmp_path: Path) -> None:
    topics.create(only=[topics.settings])
    ok(sput(topics, "acct1", "--identity-type", "user", "--state", "monitor"))
    before = end_offsets(topics.bootstrap, topics.settings)
    one_line_error(sput(topics, "acct1", "--identity-type", "user", "--state", "off"), 2, "unknown state")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"account_id": "acct1", "external_account_identity_interaction": {
        "identity_types": {"user": {"state": "limited", "external_allowed_accounts": "not-a-list"}}}}))
    one_line_error(sput(topics, "acct1", "--file", str(bad)), 2, "external_allowed_accounts")
    assert end_offsets(topics.bootstrap, topics.settings) == before


def test_put_to_a_missing_topic_is_refused(topics: Topics) -> None:
    """No auto-created (non-compacted) settings topic: the tool checks the topic exists first."""
    one_line_error(sput(topics, "acct1", "--identity-type", "user", "--state", "monitor"), 1, "does not exist")
    assert topics.settings not in topics.admin().list_topics(timeout=10).topics


def test_get_reports_a_rejected_newer_record_and_put_merges_into_the_version_in_force(topics: Topics) -> None:
    topics.create(only=[topics.settings])
    ok(sput(topics, "acct1", "--identity-type", "user", "--state", "limited", "--allow", "b1"))
    produce(topics.bootstrap, topics.settings, [(b"acct1", json.dumps({
        "account_id": "acct1", "external_account_identity_interaction": {
            "identity_types": {"user": {"state": "strict"}}}}).encode())])
    view = sget(topics, "acct1")
    assert states(view)["user"] == ("limited", ["b1"]), "a rejected record never downgrades enforcement"
    assert view["source"]["offset"] == 0
    assert [r["offset"] for r in view["rejected_newer_records"]] == [1]
    table = ok(ae("settings", "get", "--bootstrap-servers", topics.bootstrap, "--settings-topic", topics.settings,
                  "--account", "acct1"))
    assert "rejected" in table

    proc = sput(topics, "acct1", "--identity-type", "service", "--state", "monitor")
    ok(proc)
    assert "rejected" in proc.stderr
    view = sget(topics, "acct1")
    assert states(view)["user"] == ("limited", ["b1"]) and states(view)["service"] == ("monitor", [])


def _delete_on_a_terminal(topics: Topics, answer: str) -> tuple[int, str]:
    """Run `settings delete` with a pseudo-terminal as stdin and type `answer` at the prompt."""
    code, prompt, rest = answer_on_a_terminal(
        ["settings", "delete", "--bootstrap-servers", topics.bootstrap, "--settings-topic", topics.settings,
         "--account", "acct1"], answer)
    return code, prompt + rest


def test_delete_asks_for_confirmation_on_a_terminal(topics: Topics) -> None:
    topics.create(only=[topics.settings])
    ok(sput(topics, "acct1", "--identity-type", "user", "--state", "limited"))
    before = end_offsets(topics.bootstrap, topics.settings)

    one_line_error(ae("settings", "delete", "--bootstrap-servers", topics.bootstrap, "--settings-topic",
                      topics.settings, "--account", "acct1"), 2, "--yes")
    code, text = _delete_on_a_terminal(topics, "n")
    assert code == 1 and "not deleted" in text and "limited" in text
    assert end_offsets(topics.bootstrap, topics.settings) == before

    code, text = _delete_on_a_terminal(topics, "y")
    assert code == 0 and "tombstone" in text
    assert sget(topics, "acct1")["deleted"] is True

    out = ok(ae("settings", "delete", "--bootstrap-servers", topics.bootstrap, "--settings-topic", topics.settings,
                "--account", "acct1", "--yes"))
    assert "nothing to delete" in out


# --- tail -----------------------------------------------------------------------------------------


def tail_workload(now: int) -> list[dict[str, Any]]:
    rows = [
        ("t1", "e1", "user", "u1", "monitor", "Deny"),
        ("t1", "e1", "user", "u2", "monitor", "Permit"),
        ("t1", "e2", "service", "s1", "limited", "Deny"),
        ("t2", "e1", "service_id", "sid1", "monitor", "Deny"),
        ("t2", "e3", "user", "u3", "limited", "Deny"),
        ("t2", "e3", "user", "u3", "monitor", "Permit"),
        ("t3", "e2", "service_id", "sid2", "limited", "Deny"),
        ("t1", "e1", "user", "u1", "monitor", "Deny"),
    ]
    return [make_event(i, *row, event_ms=now - i * 60_000) for i, row in enumerate(rows)]


def test_tail_filters_limit_and_formats(topics: Topics) -> None:
    topics.create(partitions=3, only=[topics.evals])
    now = int(time.time() * 1000)
    events = tail_workload(now)
    produce_events(topics.bootstrap, topics.evals, events)

    def expect(pred: Any) -> list[str]:
        return sorted(e["attemptId"] for e in events if pred(e))

    assert sorted(tail_ids(topics, "--from-beginning")) == expect(lambda e: True)
    assert sorted(tail_ids(topics, "--from-beginning", "--account", "T1")) == expect(
        lambda e: e["target"]["accountId"] == "t1")
    assert sorted(tail_ids(topics, "--from-beginning", "--decision", "Permit")) == expect(
        lambda e: e["responseData"]["decision"] == "Permit")
    assert sorted(tail_ids(topics, "--from-beginning", "--enforced")) == expect(
        lambda e: e["responseData"]["isEnforced"])
    assert sorted(tail_ids(topics, "--from-beginning", "--report-only", "--decision", "Deny")) == expect(
        lambda e: not e["responseData"]["isEnforced"] and e["responseData"]["decision"] == "Deny")
    assert sorted(tail_ids(topics, "--from-beginning", "--identity-type", "service_id")) == expect(
        lambda e: e["initiator"]["typeURI"] == "service_id")
    assert sorted(tail_ids(topics, "--from-beginning", "--external-account", "e1", "--account", "t2")) == expect(
        lambda e: e["initiator"]["authnAccountId"] == "e1" and e["target"]["accountId"] == "t2")
    assert sorted(tail_ids(topics, "--since", "1h")) == expect(lambda e: True)

    limited = tail_ids(topics, "--from-beginning", "--limit", "3")
    assert len(limited) == 3 and set(limited) <= set(expect(lambda e: True))
    assert len(tail_ids(topics, "--from-beginning", "--decision", "Deny", "--limit", "100")) == len(
        expect(lambda e: e["responseData"]["decision"] == "Deny"))

    # JSON lines are the to_json_obj rendering
    line = json.loads(ok(ae("tail", "--bootstrap-servers", topics.bootstrap, "--eval-topic", topics.evals,
                            "--from-beginning", "--account", "t3")).strip())
    assert line["eventTime"] == rfc3339_millis(now - 6 * 60_000)
    assert line["responseData"] == {**events[6]["responseData"]}
    assert line["initiator"]["authnAccountId"] == "e2"

    table = ok(ae("tail", "--bootstrap-servers", topics.bootstrap, "--eval-topic", topics.evals, "--from-beginning",
                  "--format", "table", "--enforced"))
    lines = table.splitlines()
    assert lines[0].startswith("EVENT TIME")
    assert len(lines) == 1 + len(expect(lambda e: e["responseData"]["isEnforced"]))
    assert all("enforced" in ln and "Deny" in ln for ln in lines[1:])


def test_tail_since_uses_record_time_and_default_follows_from_the_end(topics: Topics) -> None:
    topics.create(partitions=2, only=[topics.evals])
    now = int(time.time() * 1000)
    old = [make_event(100 + i, "t1", "e1", "user", f"u{i}", "monitor", "Deny", now - 3 * DAY) for i in range(3)]
    produce_events(topics.bootstrap, topics.evals, old, timestamp_ms=now - 3 * DAY)
    recent = [make_event(200 + i, "t1", "e1", "user", f"u{i}", "monitor", "Deny", now) for i in range(2)]
    produce_events(topics.bootstrap, topics.evals, recent)

    assert sorted(tail_ids(topics, "--since", "1d")) == ["att-200", "att-201"]
    assert len(tail_ids(topics, "--since", "4d")) == 5
    assert len(tail_ids(topics, "--since", rfc3339_millis(now - 4 * DAY))) == 5

    # default: start at the end and follow; what was there before is not shown
    proc = subprocess.Popen(
        [sys.executable, "-m", "processor", "tail", "--bootstrap-servers", topics.bootstrap, "--eval-topic",
         topics.evals, "--limit", "2", "--account", "t9"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stderr is not None
        first = proc.stderr.readline()
        assert "following" in first, first
        produce_events(topics.bootstrap, topics.evals, [
            make_event(300, "t9", "e1", "user", "x", "monitor", "Deny", now),
            make_event(301, "t1", "e1", "user", "x", "monitor", "Deny", now),  # filtered out
            make_event(302, "t9", "e5", "service", "y", "limited", "Deny", now),
        ])
        out, _err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0
    assert sorted(json.loads(line)["attemptId"] for line in out.splitlines()) == ["att-300", "att-302"]


def test_tail_detects_framing_per_message_and_skips_garbage(topics: Topics) -> None:
    topics.create(partitions=1, only=[topics.evals])
    now = int(time.time() * 1000)
    produce_events(topics.bootstrap, topics.evals, [make_event(1, "t1", "e1", "user", "u", "monitor", "Deny", now)])
    produce(topics.bootstrap, topics.evals, [(b"t1", b"not avro at all")])
    produce_events(topics.bootstrap, topics.evals, [make_event(2, "t1", "e1", "user", "u", "limited", "Deny", now)],
                   codec=EvalCodec(schema_id=42))
    proc = ae("tail", "--bootstrap-servers", topics.bootstrap, "--eval-topic", topics.evals, "--from-beginning")
    out = ok(proc)
    # Confluent-framed without --schema-registry-url: refused (a guessed schema could misread it).
    assert [json.loads(line)["attemptId"] for line in out.splitlines()] == ["att-1"]
    assert "skipping undecodable event" in proc.stderr and "@ 1" in proc.stderr
    assert "@ 2 (schema id 42): pass --schema-registry-url" in proc.stderr


def test_tail_on_a_missing_topic_is_one_line(topics: Topics) -> None:
    one_line_error(ae("tail", "--bootstrap-servers", topics.bootstrap, "--eval-topic", topics.evals,
                      "--from-beginning"), 1, "does not exist", "--eval-topic")


# --- report ---------------------------------------------------------------------------------------


def expected_report(rows: list[tuple[str, str, str, str, str, str, int]], account: str, since_ms: int
                    ) -> dict[str, Any]:
    """The report computed straight from the workload rows, independently of report.py."""
    per_ext: dict[str, dict[str, Any]] = defaultdict(lambda: {"attempts": 0, "ids": set()})
    additions: dict[str, set[str]] = defaultdict(set)
    total, ids = 0, set()
    for target, ext, itype, iam, state, decision, t in rows:
        if target == account and state == "monitor" and decision == "Deny" and t >= since_ms:
            per_ext[ext]["attempts"] += 1
            per_ext[ext]["ids"].add(iam)
            additions[itype].add(ext)
            total += 1
            ids.add(iam)
    return {
        "would_be_denies": total,
        "identities": len(ids),
        "external_accounts": sorted(
            ({"account_id": e, "attempts": v["attempts"], "identities": len(v["ids"])} for e, v in per_ext.items()),
            key=lambda x: (-x["attempts"], x["account_id"]),
        ),
        "allowlist_additions": {t: sorted(v) for t, v in additions.items()},
    }


def report_rows(now: int) -> list[tuple[str, str, str, str, str, str, int]]:
    acct = "a3f1c0d2e4b5968778695a4b3c2d1e0f"
    rows = []
    # would-be denies of acct: 3 external accounts, several identities, repeated attempts
    for i in range(5):
        rows.append((acct, "ext-a", "user", f"user-{i % 3}", "monitor", "Deny", now - i * HOUR))
    for i in range(3):
        rows.append((acct, "ext-b", "service_id", "sid-1", "monitor", "Deny", now - i * DAY))
    rows.append((acct, "ext-b", "user", "user-b", "monitor", "Deny", now - 2 * HOUR))
    rows.append((acct, "ext-c", "service", "svc-1", "monitor", "Deny", now - 10 * DAY))
    # outside the 7-day window by event time (a replay writes old events now)
    rows.append((acct, "ext-d", "user", "user-old", "monitor", "Deny", now - 40 * DAY))
    rows.append((acct, "ext-c", "service", "svc-1", "monitor", "Deny", now - 8 * DAY))
    # not would-be denies of acct: permits, enforced denies, other accounts
    rows.append((acct, "ext-e", "user", "user-e", "monitor", "Permit", now - HOUR))
    rows.append((acct, "ext-f", "user", "user-f", "limited", "Deny", now - HOUR))
    rows.append(("other-account", "ext-a", "user", "user-0", "monitor", "Deny", now - HOUR))
    return rows


def test_report_matches_an_independently_computed_summary(topics: Topics) -> None:
    # Retention above the 30-day window (the broker's default of 7 days would make the report warn).
    topics.create(partitions=3, only=[topics.evals, topics.settings], config={"retention.ms": str(35 * DAY)})
    now = int(time.time() * 1000)
    rows = report_rows(now)
    acct = rows[0][0]
    produce_events(topics.bootstrap, topics.evals, [make_event(i, *r[:6], event_ms=r[6]) for i, r in enumerate(rows)])
    base = ("report", "--bootstrap-servers", topics.bootstrap, "--eval-topic", topics.evals,
            "--settings-topic", topics.settings, "--account", acct.upper())

    for since, since_ms in (("30d", now - 30 * DAY), ("7d", now - 7 * DAY)):
        got = json.loads(ok(ae(*base, "--since", since, "--format", "json")))
        want = expected_report(rows, acct, since_ms)
        assert got["account_id"] == acct
        assert got["would_be_denies"] == want["would_be_denies"]
        assert got["identities"] == want["identities"]
        assert [{k: x[k] for k in ("account_id", "attempts", "identities")} for x in got["external_accounts"]] == (
            want["external_accounts"])
        assert got["allowlist_additions"] == want["allowlist_additions"]
        n, m, k = want["would_be_denies"], want["identities"], len(want["external_accounts"])
        days = since[:-1]
        assert got["verdict"] == (
            f"switching to limited now would have denied {n} attempts by {m} identities from {k} external "
            f"accounts in the last {days} days"
        )
        assert got["report_only_permits"] == 1 and got["enforced_denies"] == 1

    got = json.loads(ok(ae(*base, "--format", "json")))  # default window: 30 days
    assert got["would_be_denies"] == expected_report(rows, acct, now - 30 * DAY)["would_be_denies"]
    ident = {(r["iam_id"], r["external_account_id"]): r for r in got["by_identity"]}
    assert ident[("sid-1", "ext-b")]["attempts"] == 3 and ident[("sid-1", "ext-b")]["identity_type"] == "service_id"
    assert ident[("user-0", "ext-a")]["attempts"] == 2
    assert ident[("user-0", "ext-a")]["first_seen"] == rfc3339_millis(now - 3 * HOUR)
    assert ident[("user-0", "ext-a")]["last_seen"] == rfc3339_millis(now)

    # with the current settings: ext-a already allowlisted for users
    ok(sput(topics, acct, "--identity-type", "user", "--state", "monitor", "--allow", "ext-a"))
    got = json.loads(ok(ae(*base, "--since", "30d", "--format", "json")))
    assert got["already_allowlisted"] == {"user": ["ext-a"]}
    assert got["allowlist_additions"] == {"service": ["ext-c"], "service_id": ["ext-b"], "user": ["ext-b"]}
    assert got["denies_with_current_allowlist"] == got["would_be_denies"] - 5
    assert "with the current allowlist it would deny" in got["verdict"]

    table = ok(ae(*base, "--since", "30d"))
    assert "verdict: switching to limited now would have denied" in table
    assert "--identity-type service_id --state monitor --add-allow ext-b" in table
    for ext in ("ext-a", "ext-b", "ext-c"):
        assert ext in table


def test_report_without_monitor_evidence_says_so(topics: Topics) -> None:
    topics.create(partitions=1, only=[topics.evals])
    now = int(time.time() * 1000)
    produce_events(topics.bootstrap, topics.evals, [make_event(1, "quiet", "e1", "user", "u", "limited", "Deny", now)])
    got = json.loads(ok(ae("report", "--bootstrap-servers", topics.bootstrap, "--eval-topic", topics.evals,
                           "--account", "quiet", "--format", "json")))
    assert got["would_be_denies"] == 0 and got["external_accounts"] == []
    assert got["current_settings"] is None  # no settings topic: reported without it
    assert "no report-only (monitor) evaluations" in got["verdict"]


# --- through the real processor -------------------------------------------------------------------


def test_tail_and_report_on_events_of_the_real_processor(topics: Topics, tmp_path: Path) -> None:
    """Settings via `settings put`, attempts through `access-eval run`, then `tail` and `report`."""
    topics.create(partitions=2, config={"retention.ms": str(35 * DAY)})
    acct, other = "target-acct", "limited-acct"
    ok(sput(topics, acct, "--identity-type", "user", "--state", "monitor", "--allow", "friend"))
    ok(sput(topics, acct, "--identity-type", "service", "--state", "monitor"))
    ok(sput(topics, other, "--identity-type", "user", "--state", "limited"))

    now = int(time.time() * 1000)  # after the puts: every attempt is governed by the final settings
    plan = [  # (target, identity account, type, iam id)
        (acct, "friend", "user", "iam-friend"),      # monitor Permit
        (acct, "stranger", "user", "iam-s1"),        # would-be deny
        (acct, "stranger", "user", "iam-s2"),        # would-be deny
        (acct, "stranger", "user", "iam-s1"),        # would-be deny
        (acct, "partner", "service", "iam-p"),       # would-be deny
        (acct, acct, "user", "iam-self"),            # same account: no event
        (acct, "stranger", "service_id", "iam-x"),   # service_id enabled: no event
        (other, "stranger", "user", "iam-s1"),       # enforced deny
    ]
    attempts = []
    for i, (target, ext, itype, iam) in enumerate(plan):
        body = {"id": f"att-{i}", "event_time": rfc3339_millis(now + i), "account_id": target,
                "identity": {"iam_id": iam, "type": itype, "account_id": ext}, "action": f"svc.action{i}"}
        attempts.append((target.encode(), json.dumps(body).encode()))
    proc = start_processor(topics, tmp_path)
    try:
        proc.wait_ready()
        produce(topics.bootstrap, topics.attempts, attempts)
        wait_all_committed(topics.bootstrap, topics.group, topics.attempts)
    finally:
        assert proc.terminate() == 0, proc.log()

    lines = [json.loads(x) for x in ok(ae("tail", "--bootstrap-servers", topics.bootstrap, "--eval-topic",
                                          topics.evals, "--from-beginning")).splitlines()]
    assert sorted(e["attemptId"] for e in lines) == ["att-0", "att-1", "att-2", "att-3", "att-4", "att-7"]
    denies = tail_ids(topics, "--from-beginning", "--account", acct, "--decision", "Deny")
    assert sorted(denies) == ["att-1", "att-2", "att-3", "att-4"]
    assert tail_ids(topics, "--from-beginning", "--enforced") == ["att-7"]

    got = json.loads(ok(ae("report", "--bootstrap-servers", topics.bootstrap, "--eval-topic", topics.evals,
                           "--settings-topic", topics.settings, "--account", acct, "--format", "json")))
    assert got["would_be_denies"] == 4 and got["identities"] == 3
    assert [{k: x[k] for k in ("account_id", "attempts", "identities")} for x in got["external_accounts"]] == [
        {"account_id": "stranger", "attempts": 3, "identities": 2},
        {"account_id": "partner", "attempts": 1, "identities": 1},
    ]
    assert got["allowlist_additions"] == {"service": ["partner"], "user": ["stranger"]}
    assert got["report_only_permits"] == 1
    assert got["verdict"] == ("switching to limited now would have denied 4 attempts by 3 identities from 2 "
                              "external accounts in the last 30 days")
