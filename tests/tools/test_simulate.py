"""`access-eval simulate` (SPEC §10): event JSON, bad lines, the command line, and the summary.
Streaming memory and the determinism properties: `test_simulate_properties.py`.

Expected results come from the independent SPEC model in `tests/support/spec_rules.py`.
"""

from __future__ import annotations

import io
import json
import random
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import fastavro
import pytest

from processor import __version__
from processor.codec.avro import EvalCodec
from processor.core.attempts import parse_attempt
from processor.core.evaluator import assess
from processor.core.events import EVENT_ID_NAMESPACE, build_event
from processor.core.settings import SettingsHistory, parse_settings
from tests.support.simulate_runs import AVSC, ROOT, run, write_lines
from tests.support.simulate_runs import render as _render
from tests.support.spec_rules import IDENTITY_TYPES, OUTCOMES, norm, spec_decide
from tests.support.strategies import (
    ACCOUNTS,
    BASE_MS,
    HOUR,
    MINUTE,
    NOW_MS,
    attempt_obj,
    dumps,
    iso,
    settings_obj,
)

ACC, EXT, EXT2 = ACCOUNTS[0], ACCOUNTS[1], ACCOUNTS[2]


# --- event JSON ------------------------------------------------------------------------------------



def _field_order(schema: Any) -> Any:
    """Nested {field: subtree} of the record fields in schema order."""
    if isinstance(schema, list):
        return next((x for x in (_field_order(b) for b in schema) if x is not None), None)
    if isinstance(schema, dict):
        if schema.get("type") == "record":
            return {f["name"]: _field_order(f["type"]) for f in schema["fields"]}
        if isinstance(schema.get("type"), dict | list):
            return _field_order(schema["type"])
    return None


def _assert_same_order(obj: dict[str, Any], order: dict[str, Any]) -> None:
    assert list(obj) == list(order)
    for k, sub in order.items():
        if sub is not None and obj[k] is not None:
            _assert_same_order(obj[k], sub)


def _decoded_avro_event(settings_line: dict[str, Any], obj: dict[str, Any]) -> Any:
    """The eval event of `obj` under `settings_line` (the settings line number 1) as Avro bytes, decoded
    by fastavro from the schema file: what a downstream consumer reads."""
    history = SettingsHistory()
    history.apply_document(parse_settings(dumps(settings_line)), BASE_MS - HOUR, offset=1)
    attempt = parse_attempt(dumps(obj), NOW_MS)
    verdict, version, exact = assess(history, attempt)
    body = EvalCodec().encode(build_event(attempt, verdict, version, exact, NOW_MS))[10:]
    schema = fastavro.parse_schema(json.loads(AVSC.read_text()))
    return fastavro.schemaless_reader(io.BytesIO(body), schema)


def test_event_json_is_the_avro_record_rendered(tmp_path: Path) -> None:
    settings_line = settings_obj(ACC.upper(), {"user": {"state": "monitor", "external_allowed_accounts": [EXT2]}},
                                 iso(BASE_MS - HOUR))
    obj = attempt_obj(f" {ACC.upper()} ", EXT.upper(), "user", BASE_MS + 123, attempt_id="att-shape",
                      iam_id="IBMid-1", action="cloud-object-storage.object.read",
                      resource={"crn": "crn:v1:bluemix:public:cos:global:a/x:bucket:b1", "service_name": "cos"},
                      source_ip="203.0.113.7", user_agent="ibmcloud-cli/2.30")
    obj["identity"]["name"] = "Jane ☃"
    events, err, _ = run(tmp_path, [settings_line], [obj])
    assert err == []
    assert len(events) == 1
    ev = events[0]

    expected = {
        "id": str(uuid.uuid5(EVENT_ID_NAMESPACE, f"9:att-shape{len(ACC)}:{ACC}4:user7:IBMid-1{len(EXT)}:{EXT}"
                                                 f"32:cloud-object-storage.object.read{BASE_MS + 123}")),
        "action": "iam-access-management.account-settings.eval",
        "eventTime": "2026-06-01T00:00:00.123Z",
        "attemptId": "att-shape",
        "initiator": {
            "id": "IBMid-1",
            "typeURI": "user",
            "name": "Jane ☃",
            "authnAccountId": EXT,
            "host": {"address": "203.0.113.7", "agent": "ibmcloud-cli/2.30"},
        },
        "target": {
            "accountId": ACC,
            "id": "crn:v1:bluemix:public:cos:global:a/x:bucket:b1",
            "serviceName": "cos",
            "action": "cloud-object-storage.object.read",
        },
        "responseData": {
            "decision": "Deny",
            "isEnforced": False,
            "state": "monitor",
            "allowlisted": False,
            "settingsVersion": {
                "effectiveTime": "2026-05-31T23:00:00.000Z",
                "topic": None,
                "partition": None,
                "offset": 1,  # line number of the settings line
                "exact": True,
            },
        },
        "outcome": "failure",
        "severity": "normal",
        "reason": {"reasonCode": 403, "reasonType": ev["reason"]["reasonType"]},
        "observer": {"name": "access-eval", "version": __version__, "evaluatedAt": iso(NOW_MS)},
        "truncated": False,
    }
    assert isinstance(ev["reason"]["reasonType"], str) and ev["reason"]["reasonType"]
    assert ev == expected

    # ... and it is exactly the Avro record a downstream consumer decodes, rendered as JSON
    assert _render(_decoded_avro_event(settings_line, obj)) == ev  # type: ignore[arg-type]
    _assert_same_order(ev, _field_order(json.loads(AVSC.read_text())))


def test_no_events_for_same_account_unrestricted_and_limited_permit(tmp_path: Path) -> None:
    s = settings_obj(ACC, {"user": {"state": "limited", "external_allowed_accounts": [EXT]}}, iso(BASE_MS - HOUR))
    attempts = [
        attempt_obj(ACC, ACC, "user", BASE_MS),  # same account
        attempt_obj(ACC, EXT, "service", BASE_MS),  # unrestricted type
        attempt_obj(ACC, EXT, "user", BASE_MS),  # limited permit: counted only
        attempt_obj(EXT, ACC, "user", BASE_MS),  # account without settings
        attempt_obj(ACC, EXT2, "user", BASE_MS, attempt_id="deny"),  # enforced deny: emitted
    ]
    events, err, agg = run(tmp_path, [s], attempts)
    assert err == []
    assert [e["attemptId"] for e in events] == ["deny"]
    assert events[0]["severity"] == "warning"
    assert agg.outcomes == {"same_account": 1, "unrestricted": 2, "permit": 1, "would_be_deny": 0,
                            "enforced_deny": 1, "invalid": 0}


def test_inexact_version_is_flagged_in_output(tmp_path: Path) -> None:
    s = settings_obj(ACC, {"service_id": {"state": "monitor"}}, iso(BASE_MS))
    events, _, _ = run(tmp_path, [s], [attempt_obj(ACC, EXT, "service_id", BASE_MS - 1),
                                       attempt_obj(ACC, EXT, "service_id", BASE_MS)])
    assert [e["responseData"]["settingsVersion"]["exact"] for e in events] == [False, True]
    assert {e["responseData"]["settingsVersion"]["effectiveTime"] for e in events} == {iso(BASE_MS)}


def test_settings_lines_without_updated_at_apply_from_the_beginning_later_line_wins(tmp_path: Path) -> None:
    lines = [settings_obj(ACC, {"user": {"state": "monitor"}}), settings_obj(ACC, {"user": {"state": "limited"}})]
    events, _, agg = run(tmp_path, lines, [attempt_obj(ACC, EXT, "user", BASE_MS)])
    assert agg.outcomes["enforced_deny"] == 1
    sv = events[0]["responseData"]["settingsVersion"]
    assert (sv["effectiveTime"], sv["offset"], sv["exact"]) == (None, 2, True)


def test_tombstone_lines_reset_from_their_time_and_null_documents_are_rejected(tmp_path: Path) -> None:
    """SPEC §10: `{"account_id": A, "tombstone": true}` stands for a null record value; a null
    interaction is a rejected document, never a reset."""
    lines: list[Any] = [
        settings_obj(ACC, {"user": {"state": "limited"}}),
        {"account_id": ACC.upper(), "tombstone": True, "updated_at": iso(BASE_MS + 2 * HOUR)},
        settings_obj(ACC, None, iso(BASE_MS + HOUR)),
        {"account_id": EXT, "tombstone": True},
    ]
    attempts = [attempt_obj(ACC, EXT, "user", BASE_MS + t, attempt_id=str(t)) for t in (0, 90 * MINUTE, 3 * HOUR)]
    attempts.append(attempt_obj(EXT, ACC, "user", BASE_MS, attempt_id="ext"))
    events, errors, agg = run(tmp_path, lines, attempts)
    assert [(e["attemptId"], e["responseData"]["settingsVersion"]["offset"]) for e in events] == [
        ("0", 1), (str(90 * MINUTE), 1)]
    assert agg.outcomes["enforced_deny"] == 2 and agg.outcomes["unrestricted"] == 2
    assert len(errors) == 1
    assert errors[0].startswith(f"{tmp_path / 'settings.jsonl'}:3: settings rejected: invalid_value")


def test_settings_replay_follows_event_time(tmp_path: Path) -> None:
    lines = [
        settings_obj(ACC, {"user": {"state": "monitor"}}, iso(BASE_MS)),
        settings_obj(ACC, {"user": {"state": "limited"}}, iso(BASE_MS + 2 * HOUR)),
    ]
    attempts = [attempt_obj(ACC, EXT, "user", BASE_MS + t, attempt_id=str(t)) for t in (HOUR, 3 * HOUR, 30 * MINUTE)]
    events, _, _ = run(tmp_path, lines, attempts)
    assert [(e["attemptId"], e["responseData"]["state"], e["responseData"]["settingsVersion"]["offset"])
            for e in events] == [(str(HOUR), "monitor", 1), (str(3 * HOUR), "limited", 2),
                                 (str(30 * MINUTE), "monitor", 1)]
    # Published the other way round, the earlier-dated line supersedes the later-dated one (§3).
    events, _, _ = run(tmp_path, lines[::-1], attempts)
    assert {e["responseData"]["state"] for e in events} == {"monitor"}


def test_a_line_without_updated_at_replaces_every_earlier_line_of_its_account(tmp_path: Path) -> None:
    """It is in force from the beginning, so it supersedes every earlier-dated line (contract §3.3)."""
    lines = [
        settings_obj(ACC, {"user": {"state": "limited"}}, iso(BASE_MS + 2 * HOUR)),
        settings_obj(ACC, {"user": {"state": "monitor"}}),
    ]
    attempts = [attempt_obj(ACC, EXT, "user", BASE_MS + t, attempt_id=str(t)) for t in (HOUR, 3 * HOUR)]
    events, _, _ = run(tmp_path, lines, attempts)
    assert [(e["responseData"]["state"], e["responseData"]["settingsVersion"]["offset"]) for e in events] == [
        ("monitor", 2), ("monitor", 2)]


# --- bad lines ---------------------------------------------------------------------------------------


def test_invalid_attempt_lines_are_reported_counted_and_skipped(tmp_path: Path) -> None:
    s = settings_obj(ACC, {"user": {"state": "monitor"}}, iso(BASE_MS - HOUR))
    good = attempt_obj(ACC, EXT, "user", BASE_MS, attempt_id="good-1")
    lines: list[Any] = [
        good,
        b"{not json",
        b"",  # blank lines are skipped, but still numbered
        attempt_obj(ACC, EXT, "robot", BASE_MS),
        {k: v for k, v in good.items() if k != "action"},
        attempt_obj(ACC, EXT, "user", NOW_MS + 2 * HOUR),
        b"[1, 2]",
        attempt_obj(ACC, EXT, "user", BASE_MS, attempt_id="good-2"),
    ]
    events, err, agg = run(tmp_path, [s], lines, summary=False)
    assert [e["attemptId"] for e in events] == ["good-1", "good-2"]
    expected = {2: "bad_json", 4: "unknown_identity_type", 5: "missing_field", 6: "bad_timestamp", 7: "wrong_type"}
    assert len(err) == len(expected)
    for line, (n, reason) in zip(err, expected.items(), strict=True):
        assert f"attempts.jsonl:{n}:" in line
        assert reason in line
    assert "identity.type: must be one of user, service_id, service" in err[1]
    assert "action" in err[2]
    assert agg.outcomes["invalid"] == 5
    assert agg.outcomes["would_be_deny"] == 2


def test_invalid_settings_line_keeps_previous_version(tmp_path: Path) -> None:
    lines: list[Any] = [
        settings_obj(ACC, {"user": {"state": "limited"}}, iso(BASE_MS - HOUR)),
        settings_obj(ACC, {"user": {"state": "disabled"}}, iso(BASE_MS - 30 * MINUTE)),  # unknown state
        b'{"account_id": "' + ACC.encode() + b'", "external_account_identity_interaction": ',  # malformed
        settings_obj(ACC, {"user": {"state": "enabled", "external_allowed_accounts": "nope"}}, iso(BASE_MS - MINUTE)),
        settings_obj(EXT, {"user": {"state": "monitor"}}, iso(BASE_MS - HOUR)),
    ]
    events, err, agg = run(tmp_path, lines, [attempt_obj(ACC, EXT, "user", BASE_MS),
                                             attempt_obj(EXT, ACC, "user", BASE_MS)])
    assert len(err) == 3
    for line, n, reason, field in zip(err, (2, 3, 4), ("invalid_value", "bad_json", "invalid_value"),
                                      ("state", "JSON", "external_allowed_accounts"), strict=True):
        assert f"settings.jsonl:{n}:" in line and reason in line and field in line
    assert agg.outcomes["enforced_deny"] == 1  # the limited version is still in force
    assert agg.outcomes["would_be_deny"] == 1  # later valid lines still apply
    assert events[0]["responseData"]["settingsVersion"]["offset"] == 1


def _cli(*args: str | Path, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "processor", "simulate", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=60)


def test_cli_events_and_bad_line(tmp_path: Path) -> None:
    now = int(time.time() * 1000)
    s = write_lines(tmp_path / "s.jsonl", [settings_obj(ACC, {"service": {"state": "limited"}}, iso(now - 2 * HOUR))])
    a = write_lines(tmp_path / "a.jsonl", [
        attempt_obj(ACC, EXT, "service", now - HOUR, attempt_id="x1"),
        b"garbage",
        attempt_obj(ACC, EXT, "service", now + 3 * HOUR, attempt_id="future"),
        attempt_obj(ACC, ACC, "service", now - HOUR, attempt_id="same"),
    ])
    proc = _cli("--settings", s, "--attempts", a)
    assert proc.returncode == 0, proc.stderr
    events = [json.loads(x) for x in proc.stdout.splitlines()]
    assert [e["attemptId"] for e in events] == ["x1"]
    assert events[0]["responseData"]["decision"] == "Deny" and events[0]["responseData"]["isEnforced"] is True
    assert events[0]["eventTime"] == iso(now - HOUR)
    err = proc.stderr.splitlines()
    assert len(err) == 2
    assert ":2:" in err[0] and "bad_json" in err[0]
    assert ":3:" in err[1] and "bad_timestamp" in err[1]


@pytest.mark.parametrize("which", ["settings", "attempts"])
@pytest.mark.parametrize("kind", ["missing", "directory"])
def test_cli_unreadable_file_exits_2(tmp_path: Path, which: str, kind: str) -> None:
    good_s = write_lines(tmp_path / "s.jsonl", [settings_obj(ACC, {})])
    good_a = write_lines(tmp_path / "a.jsonl", [attempt_obj(ACC, EXT)])
    bad = tmp_path / "nope.jsonl"
    if kind == "directory":
        bad.mkdir()
    args = ("--settings", bad, "--attempts", good_a) if which == "settings" else ("--settings", good_s, "--attempts",
                                                                                  bad)
    proc = _cli(*args)
    assert proc.returncode == 2
    assert str(bad) in proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stdout == ""


# --- summary -------------------------------------------------------------------------------------------


def _random_workload(seed: int, n: int) -> tuple[list[dict[str, Any]], list[bytes]]:
    rng = random.Random(seed)
    accounts = ACCOUNTS[:6]
    settings_lines = []
    for acct in accounts[:5]:
        types = {t: {"state": rng.choice(["enabled", "monitor", "monitor", "limited"]),
                     "external_allowed_accounts": rng.sample(accounts + ACCOUNTS[6:9], rng.randint(0, 3))}
                 for t in IDENTITY_TYPES if rng.random() < 0.8}
        settings_lines.append(settings_obj(acct, types))
    attempts: list[bytes] = []
    for i in range(n):
        if rng.random() < 0.03:
            attempts.append(b'{"id": "broken"')
            continue
        target = rng.choice(accounts)
        ident = rng.choice(accounts + ACCOUNTS[6:9])
        obj = attempt_obj(target.upper() if rng.random() < 0.2 else target, ident, rng.choice(IDENTITY_TYPES),
                          BASE_MS + rng.randint(0, 5 * HOUR), attempt_id=f"a{i}", iam_id=f"iam-{rng.randint(0, 6)}")
        attempts.append(dumps(obj))
    return settings_lines, attempts


def _expected_summary(settings_lines: list[dict[str, Any]], attempts: list[bytes]
                      ) -> tuple[Counter[str], dict[tuple[str, str, str], tuple[int, int]]]:
    docs = {norm(d["account_id"]): d for d in settings_lines}  # no updated_at: later line wins
    outcomes: Counter[str] = Counter()
    groups: dict[tuple[str, str, str], tuple[int, set[str]]] = {}
    for raw in attempts:
        try:
            obj = json.loads(raw)
        except ValueError:
            outcomes["invalid"] += 1
            continue
        ident = obj["identity"]
        d = spec_decide(docs.get(norm(obj["account_id"])), obj["account_id"], ident["account_id"], ident["type"])
        outcomes[d.outcome] += 1
        if d.outcome == "would_be_deny":
            key = (norm(obj["account_id"]), ident["type"], norm(ident["account_id"]))
            count, ids = groups.get(key, (0, set()))
            groups[key] = (count + 1, ids | {ident["iam_id"]})
    return outcomes, {k: (c, len(ids)) for k, (c, ids) in groups.items()}


def test_summary_counts_match_independent_count(tmp_path: Path) -> None:
    settings_lines, attempts = _random_workload(7, 1500)
    exp_outcomes, exp_groups = _expected_summary(settings_lines, attempts)
    assert exp_outcomes["would_be_deny"] > 20 and exp_outcomes["invalid"] > 0  # the workload exercises the groups
    events, _, agg = run(tmp_path, settings_lines, attempts, summary=True)
    assert events == []  # --summary prints no events
    assert agg.outcomes == {o: exp_outcomes[o] for o in OUTCOMES}
    got = {(r["account_id"], r["identity_type"], r["external_account_id"]): (r["attempts"], r["identities"])
           for r in agg.summary()["would_be_denies"]}
    assert got == exp_groups


def test_cli_summary_json_and_table(tmp_path: Path) -> None:
    settings_lines, attempts = _random_workload(11, 600)
    exp_outcomes, exp_groups = _expected_summary(settings_lines, attempts)
    # the CLI rejects attempts in the future of the real clock: BASE_MS is in the past of any test run
    assert time.time() * 1000 > BASE_MS + 6 * HOUR
    s = write_lines(tmp_path / "s.jsonl", settings_lines)
    a = write_lines(tmp_path / "a.jsonl", attempts)
    proc = _cli("--settings", s, "--attempts", a, "--summary", "--format", "json")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["outcomes"] == {o: exp_outcomes[o] for o in OUTCOMES}
    assert sum(summary["outcomes"].values()) == len(attempts)
    got = {(r["account_id"], r["identity_type"], r["external_account_id"]): (r["attempts"], r["identities"])
           for r in summary["would_be_denies"]}
    assert got == exp_groups
    counts = [r["attempts"] for r in summary["would_be_denies"]]
    assert counts == sorted(counts, reverse=True)
    assert len(proc.stderr.splitlines()) == exp_outcomes["invalid"]

    table = _cli("--settings", s, "--attempts", a, "--summary")
    assert table.returncode == 0
    for outcome in OUTCOMES:
        assert any(line.split() == [outcome, str(exp_outcomes[outcome])] for line in table.stdout.splitlines())
    for (acct, itype, ext), (n, ids) in exp_groups.items():
        assert any(line.split()[:5] == [acct, itype, ext, str(n), str(ids)] for line in table.stdout.splitlines())
