"""The tools' command bodies take typed parameters (`SettingsTopic`, `PutRequest`, `TailOptions`), so
they run and are tested as plain calls, without argparse; `processor.cli` turns flags into them. The
CLI tests (test_ops, test_settings_cli) drive the same bodies through the parsers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from processor.errors import EXIT_OK, EXIT_USAGE, OpsError
from processor.tools.report import ReportOptions, cmd_report
from processor.tools.settings import PutRequest, SettingsTopic, cmd_delete, cmd_get, cmd_list, cmd_put
from processor.tools.tail import Filter, TailOptions, cmd_tail
from tests.support.kafka_harness import Topics

A = "0123456789abcdef0123456789abcdef"
B = "fedcba9876543210fedcba9876543210"
NOWHERE = SettingsTopic("iam.account-settings")  # no --bootstrap-servers: any Kafka contact is a usage error


@pytest.fixture(autouse=True)
def no_kafka_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("ACCESS_EVAL_BOOTSTRAP_SERVERS", "ACCESS_EVAL_KAFKA_CONFIG"):
        monkeypatch.delenv(name, raising=False)


def test_put_dry_run_is_a_plain_call_that_needs_no_broker(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "s.json"
    f.write_text(json.dumps({"external_account_identity_interaction": {"identity_types": {
        "user": {"state": "monitor", "external_allowed_accounts": [B.upper()]}}}}))
    assert cmd_put(NOWHERE, PutRequest(account=f"  {A.upper()} ", file=str(f), dry_run=True)) == EXIT_OK
    printed = json.loads(capsys.readouterr().out)
    assert printed["account_id"] == A  # normalised from the raw value
    assert printed["external_account_identity_interaction"]["identity_types"]["user"]["state"] == "monitor"


@pytest.mark.parametrize("request_, needle", [
    (PutRequest(account=A, identity_type="user", state="bogus"), "--state: unknown state"),
    (PutRequest(account=A, identity_type="user"), "give --file F, or --identity-type T and --state S"),
    (PutRequest(account=A, file="x.json", state="monitor"), "--file cannot be combined"),
    (PutRequest(account=A, identity_type="user", state="monitor", add_allow=("not an id",)), "--add-allow"),
    (PutRequest(account="", identity_type="user", state="monitor"), "--account: account id is empty"),
])
def test_put_refuses_a_bad_request_before_any_kafka_contact(request_: PutRequest, needle: str) -> None:
    with pytest.raises(OpsError) as caught:
        cmd_put(NOWHERE, request_)
    assert caught.value.exit_code == EXIT_USAGE and needle in str(caught.value)


def test_tail_refuses_a_zero_limit_before_any_kafka_contact() -> None:
    with pytest.raises(OpsError, match="--limit must be at least 1"):
        cmd_tail(TailOptions("iam.access-evaluations", limit=0))


def event(account: str, external: str, decision: str, enforced: bool, type_uri: str) -> dict[str, Any]:
    return {"target": {"accountId": account}, "initiator": {"authnAccountId": external, "typeURI": type_uri},
            "responseData": {"decision": decision, "isEnforced": enforced}}


def test_tail_filters_from_typed_options() -> None:
    match = Filter(TailOptions("t", account=f" {A.upper()}", decision="Deny", report_only=True, identity_type="user"))
    assert match(event(A, B, "Deny", False, "user"))
    assert not match(event(A, B, "Deny", True, "user"))  # enforced, not report-only
    assert not match(event(A, B, "Permit", False, "user"))
    assert not match(event(B, B, "Deny", False, "user"))
    assert not match(event(A, B, "Deny", False, "service"))
    assert Filter(TailOptions("t", external_account=B, enforced=True)).enforced is True


def test_settings_commands_as_plain_calls_on_a_real_broker(topics: Topics, capsys: pytest.CaptureFixture[str]) -> None:
    """put (merge), get, list and delete through their typed parameters: what the parsers call."""
    topics.create(only=[topics.settings])
    topic = SettingsTopic(topics.settings, topics.bootstrap, timeout_s=15.0)
    assert cmd_put(topic, PutRequest(account=A, identity_type="user", state="monitor", allow=(B,))) == EXIT_OK
    assert cmd_put(topic, PutRequest(account=A, identity_type="service", state="limited")) == EXIT_OK
    capsys.readouterr()
    assert cmd_get(topic, A.upper(), fmt="json") == EXIT_OK
    got = json.loads(capsys.readouterr().out)
    assert got["identity_types"]["user"] == {"state": "monitor", "external_allowed_accounts": [B]}
    assert got["identity_types"]["service"]["state"] == "limited"  # merged: user kept
    assert cmd_list(topic, fmt="json") == EXIT_OK
    assert [c["account_id"] for c in json.loads(capsys.readouterr().out)] == [A]
    assert cmd_delete(topic, A, yes=True) == EXIT_OK
    capsys.readouterr()
    assert cmd_list(topic, fmt="json") == EXIT_OK
    assert json.loads(capsys.readouterr().out) == []


@pytest.mark.parametrize(("fields", "needle"), [
    ({"top": -1}, "--top"),
    ({"max_additions": -1}, "--max-additions"),
    ({"cover_share": 0.0}, "--cover"),
    ({"cover_share": 1.5}, "--cover"),
    ({"readers": -2}, "--readers"),
    ({"fmt": "html"}, "--format html needs --output"),
])
def test_report_options_refuse_bad_values_as_the_command_line_does(fields: dict[str, Any], needle: str) -> None:
    with pytest.raises(OpsError, match=needle) as caught:
        ReportOptions(account=None, **fields)
    assert caught.value.exit_code == EXIT_USAGE


def test_report_is_a_plain_call_that_names_a_missing_broker(monkeypatch: pytest.MonkeyPatch) -> None:
    """`cmd_report` takes typed options and the Kafka flags, no argparse (issue 26); without a bootstrap
    address it fails with the one line the command line gives."""
    monkeypatch.delenv("ACCESS_EVAL_BOOTSTRAP_SERVERS", raising=False)

    class Flags:
        bootstrap_servers: str | None = None
        kafka_config: str | None = None

    with pytest.raises(OpsError, match="bootstrap") as caught:
        cmd_report(ReportOptions(account="acct-a"), Flags())
    assert caught.value.exit_code == EXIT_USAGE

