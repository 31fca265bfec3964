"""`tail` and `report` end to end on the real broker: filters, limits and formats, where `tail`
starts and stops, framing per message, the report against an independently computed summary, and both
on the events of the real processor. The tools run as `python -m processor ...` subprocesses."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from processor.codec.avro import EvalCodec
from processor.core.times import rfc3339_millis
from tests.support.kafka_harness import Topics
from tests.support.processor_harness import (
    process_all,
    produce,
)
from tests.support.tool_harness import (
    DAY,
    HOUR,
    REPO,
    ae,
    make_event,
    ok,
    one_line_error,
    produce_events,
    sput,
    tail_ids,
)

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
    process_all(topics, tmp_path, records=attempts)

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
