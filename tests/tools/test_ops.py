"""Operator tools end to end: `settings put|get|delete|list` on the real broker, the error paths of
every tool (validated before Kafka is reached, one line and an exit code) and their help texts. The
tools run as `python -m processor ...` subprocesses, as an operator would run them. `tail` and
`report` on a real broker: `test_tail_report.py`."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from processor.cli.main import build_parser
from processor.core.settings import SettingsHistory, parse_settings
from processor.core.times import rfc3339_millis
from tests.support.kafka_harness import Topics
from tests.support.processor_harness import (
    answer_on_a_terminal,
    end_offsets,
    produce,
    read_topic,
)
from tests.support.tool_harness import (
    DAY,
    ae,
    ok,
    one_line_error,
    sget,
    sput,
    states,
    unreachable,
)

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
