"""The stream processor end to end on the real broker (SPEC §2, §5 time, §7, §8)."""

from __future__ import annotations

import io
import json
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pytest

from processor.core.events import to_json_obj
from processor.core.times import rfc3339_millis
from processor.local.workload import Mix, Workload
from processor.tools.simulate import simulate
from tests.support.kafka_harness import Topics, wait_until
from tests.support.processor_harness import (
    committed_offsets,
    comparable,
    end_offsets,
    process_all,
    produce,
    read_evals,
    read_topic,
    settings_record,
    start_processor,
    wait_all_committed,
)

pytestmark = pytest.mark.kafka

T0 = 1_795_000_000_000  # 2026-11-18, a fixed past instant: settings updated_at and attempt times derive from it


def doc(
    account: str, state: str, allow: list[str], updated_ms: int | None = None, itype: str = "user"
) -> dict[str, Any]:
    d: dict[str, Any] = {
        "account_id": account,
        "external_account_identity_interaction": {
            "identity_types": {itype: {"state": state, "external_allowed_accounts": allow}}
        },
    }
    if updated_ms is not None:
        d["updated_at"] = rfc3339_millis(updated_ms)
    return d


def attempt(i: int | str, target: str, ext: str, t_ms: int, itype: str = "user") -> tuple[bytes, bytes]:
    body = {
        "id": f"att-{i}",
        "event_time": rfc3339_millis(t_ms),
        "account_id": target,
        "identity": {"iam_id": f"iam-{ext}", "type": itype, "account_id": ext},
        "action": "cloud-object-storage.object.read",
    }
    return target.encode(), json.dumps(body).encode()


def simulate_events(tmp: Path, settings: list[dict[str, Any]], attempts: list[bytes]) -> list[dict[str, Any]]:
    s, a = tmp / "settings.jsonl", tmp / "attempts.jsonl"
    s.write_text("".join(json.dumps(d) + "\n" for d in settings))
    a.write_bytes(b"".join(v.replace(b"\n", b" ") + b"\n" for v in attempts))
    out, err = io.StringIO(), io.StringIO()
    simulate(s, a, out, err)
    return [json.loads(line) for line in out.getvalue().splitlines()]


def by_account(events: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    grouped: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for e in events:
        grouped[e["target"]["accountId"]].append(comparable(e))
    return dict(grouped)


def test_end_to_end_equals_simulate(topics: Topics, tmp_path: Path) -> None:
    """Decoded eval events equal `simulate` on the same inputs: same fields, same order per account."""
    topics.create(partitions=3)
    w = Workload(seed=11, accounts=60, allowlist_max=5, mix=Mix(invalid=0.02))
    settings = [{**d, "updated_at": rfc3339_millis(T0)} for d in w.settings()]
    attempts = list(w.attempts(3000, start_ms=T0 + 1000, step_ms=10))
    produce(topics.bootstrap, topics.settings, [settings_record(d) for d in settings])
    produce(topics.bootstrap, topics.attempts, [(k, v) for k, v, _ in attempts])
    p = start_processor(topics, tmp_path, "--create-topics")
    try:
        p.wait_ready()
        wait_all_committed(topics.bootstrap, topics.group, topics.attempts)
        expected_outcomes = Counter(o for _, _, o in attempts)
        for outcome, n in expected_outcomes.items():
            wait_until(lambda o=outcome, n=n: p.metric("access_eval_attempts_total", outcome=o) == n, 10,
                       f"{outcome} counter to reach {n}")
    finally:
        assert p.terminate() == 0, p.log()
    got = read_evals(topics.bootstrap, topics.evals)
    assert all(k == e["target"]["accountId"].encode() for k, e in got), "key must be the target account id"
    expected = simulate_events(tmp_path, settings, [v for _, v, _ in attempts])
    assert len(got) == len(expected) == expected_outcomes["permit"] - _limited_permits(attempts, w) + \
        expected_outcomes["would_be_deny"] + expected_outcomes["enforced_deny"]
    assert by_account([to_json_obj(e) for _, e in got]) == by_account(expected)
    dlq = read_topic(topics.bootstrap, topics.dlq)
    assert len(dlq) == expected_outcomes["invalid"]


def _limited_permits(attempts: list[tuple[bytes, bytes, str]], w: Workload) -> int:
    limited = set(w.limited_ids)
    return sum(1 for k, _, o in attempts if o == "permit" and k.decode() in limited)


def test_bootstrap_settings_govern_the_very_first_attempts(topics: Topics, tmp_path: Path) -> None:
    topics.create(partitions=1)
    # Many settings records, the governing one last: an instance serving before bootstrap would miss it.
    filler = [doc(f"filler-{i:05d}", "monitor", []) for i in range(5000)]
    produce(topics.bootstrap, topics.settings, [settings_record(d) for d in [*filler, doc("acct-a", "limited", [])]])
    produce(topics.bootstrap, topics.attempts, [attempt(1, "acct-a", "ext-1", T0)])
    process_all(topics, tmp_path)
    (_key, event), = read_evals(topics.bootstrap, topics.evals)
    assert event["responseData"]["decision"] == "Deny" and event["responseData"]["isEnforced"] is True


def test_settings_change_tombstone_and_invalid_record_mid_stream(topics: Topics, tmp_path: Path) -> None:
    topics.create(partitions=2)
    produce(topics.bootstrap, topics.settings, [settings_record(doc("acct-a", "monitor", ["ok"]))])
    p = start_processor(topics, tmp_path, "--staleness-ms", "200")
    try:
        p.wait_ready()

        def phase(n: int, label: str) -> dict[str, Any]:
            now = int(time.time() * 1000)
            produce(topics.bootstrap, topics.attempts, [attempt(f"{label}", "acct-a", "bad-ext", now)])
            wait_all_committed(topics.bootstrap, topics.group, topics.attempts, timeout=30)
            events = [e for _, e in read_evals(topics.bootstrap, topics.evals) if e["attemptId"] == f"att-{label}"]
            assert len(events) <= 1
            return events[0] if events else {}

        first = phase(1, "monitor")
        assert first["responseData"]["state"] == "monitor" and first["responseData"]["decision"] == "Deny"
        produce(topics.bootstrap, topics.settings, [settings_record(doc("acct-a", "limited", ["ok"]))])
        wait_until(lambda: p.metric("access_eval_settings_records_total") >= 2, 10, "second settings version applied")
        second = phase(2, "limited")
        assert second["responseData"]["isEnforced"] is True
        # An invalid record (unknown state) is rejected: limited stays in force.
        produce(topics.bootstrap, topics.settings, [(b"acct-a", b'{"account_id":"acct-a","external_account_'
                                                     b'identity_interaction":{"identity_types":{"user":'
                                                     b'{"state":"off"}}}}')])
        wait_until(lambda: p.metric("access_eval_settings_rejected_total") >= 1, 10, "rejection counted")
        third = phase(3, "after-invalid")
        assert third["responseData"]["isEnforced"] is True
        # A tombstone resets to defaults: nothing is evaluated, no event.
        produce(topics.bootstrap, topics.settings, [(b"acct-a", None)])
        wait_until(lambda: p.metric("access_eval_settings_records_total") >= 3, 10, "tombstone applied")
        assert phase(4, "after-tombstone") == {}
        assert p.metric("access_eval_attempts_total", outcome="unrestricted") == 1
    finally:
        assert p.terminate() == 0, p.log()


def test_replay_uses_the_version_in_force_at_event_time(topics: Topics, tmp_path: Path) -> None:
    """Stopped processor; a backlog spanning a settings change; restart: each attempt gets its version."""
    topics.create(partitions=3)
    change = T0 + 5_000
    produce(topics.bootstrap, topics.settings, [settings_record(doc("acct-a", "monitor", [], T0))])
    early = [attempt(f"e{i}", "acct-a", f"ext-{i}", T0 + 1000 + i) for i in range(20)]
    late = [attempt(f"l{i}", "acct-a", f"ext-{i}", change + 1000 + i) for i in range(20)]
    at_change = [attempt("exact", "acct-a", "ext-x", change)]
    produce(topics.bootstrap, topics.attempts, early)
    produce(topics.bootstrap, topics.settings, [settings_record(doc("acct-a", "limited", [], change))])
    produce(topics.bootstrap, topics.attempts, late + at_change)
    process_all(topics, tmp_path)
    events = {e["attemptId"]: e["responseData"] for _, e in read_evals(topics.bootstrap, topics.evals)}
    assert len(events) == 41
    for i in range(20):
        assert events[f"att-e{i}"]["state"] == "monitor" and events[f"att-e{i}"]["isEnforced"] is False
        assert events[f"att-l{i}"]["state"] == "limited" and events[f"att-l{i}"]["isEnforced"] is True
    assert events["att-exact"]["state"] == "limited"
    assert all(r["settingsVersion"]["exact"] for r in events.values())


def test_two_instances_one_stopped_mid_stream_exactly_once(topics: Topics, tmp_path: Path) -> None:
    topics.create(partitions=6)
    w = Workload(seed=5, accounts=30, allowlist_max=3)
    settings = [{**d, "updated_at": rfc3339_millis(T0)} for d in w.settings()]
    produce(topics.bootstrap, topics.settings, [settings_record(d) for d in settings])
    attempts = list(w.attempts(20_000, start_ms=T0 + 1000, step_ms=1))
    a = start_processor(topics, tmp_path, "--batch-size", "500", instance="a")
    b = start_processor(topics, tmp_path, "--batch-size", "500", instance="b")
    try:
        a.wait_ready()
        b.wait_ready()
        produce(topics.bootstrap, topics.attempts, [(k, v) for k, v, _ in attempts[:10_000]])
        wait_until(lambda: b.metric("access_eval_attempts_total") > 0, 30, "instance b to commit some work")
        assert b.terminate() == 0, b.log()
        produce(topics.bootstrap, topics.attempts, [(k, v) for k, v, _ in attempts[10_000:]])
        wait_all_committed(topics.bootstrap, topics.group, topics.attempts)
    finally:
        assert a.terminate() == 0, a.log()
        b.kill()
    emitted = {json.loads(v)["id"] for k, v, o in attempts
               if o in ("would_be_deny", "enforced_deny") or (o == "permit" and k.decode() in set(w.monitor_ids))}
    ids = Counter(e["attemptId"] for _, e in read_evals(topics.bootstrap, topics.evals))
    assert set(ids) == emitted, f"missing {len(emitted - set(ids))}, unexpected {len(set(ids) - emitted)}"
    assert max(ids.values()) == 1, f"duplicated: {[k for k, n in ids.items() if n > 1][:5]}"


INVALID = {
    "bad_json": b"{not json",
    "missing_field": b'{"id":"x","event_time":"2026-11-27T12:00:00Z","account_id":"a","action":"r"}',
    "wrong_type": b'{"id":"x","event_time":"2026-11-27T12:00:00Z","account_id":"a","identity":"me","action":"r"}',
    "unknown_identity_type": b'{"id":"x","event_time":"2026-11-27T12:00:00Z","account_id":"a","identity":'
                             b'{"iam_id":"i","type":"robot","account_id":"b"},"action":"r"}',
    "bad_timestamp": b'{"id":"x","event_time":"1999-12-31T23:59:59Z","account_id":"a","identity":'
                     b'{"iam_id":"i","type":"user","account_id":"b"},"action":"r"}',
    "oversize": b'{"id":"' + b"x" * 300_000 + b'"}',
}


def test_invalid_attempts_go_to_the_dlq_with_reason_headers(topics: Topics, tmp_path: Path) -> None:
    topics.create(partitions=1, config={"max.message.bytes": "2000000"})
    produce(topics.bootstrap, topics.settings, [settings_record(doc("a", "monitor", []))])
    records = [(f"key-{r}".encode(), v) for r, v in INVALID.items()]
    produce(topics.bootstrap, topics.attempts, [*records, attempt("good", "a", "b", int(time.time() * 1000))],
            headers=[("trace", b"t-1")])
    p = start_processor(topics, tmp_path)
    try:
        p.wait_ready()
        wait_all_committed(topics.bootstrap, topics.group, topics.attempts)
        assert p.proc.poll() is None, "bad input must not crash the processor"
    finally:
        assert p.terminate() == 0, p.log()
    dlq = read_topic(topics.bootstrap, topics.dlq)
    assert len(dlq) == len(INVALID)
    for offset, m in enumerate(dlq):
        h = dict(m.headers())
        reason = h["error.reason"].decode()
        assert m.key() == f"key-{reason}".encode() and m.value() == INVALID[reason]
        assert h["source.topic"].decode() == topics.attempts
        assert h["source.partition"] == b"0" and int(h["source.offset"]) == offset
        assert h["error.detail"] and h["trace"] == b"t-1"
    assert [e["attemptId"] for _, e in read_evals(topics.bootstrap, topics.evals)] == ["att-good"]


def test_sigterm_exits_zero_with_offsets_committed(topics: Topics, tmp_path: Path) -> None:
    topics.create(partitions=2)
    produce(topics.bootstrap, topics.settings, [settings_record(doc("a", "monitor", []))])
    now = int(time.time() * 1000)
    produce(topics.bootstrap, topics.attempts, [attempt(i, "a", "b", now) for i in range(2000)])
    p = start_processor(topics, tmp_path, "--shutdown-timeout-s", "10")
    p.wait_ready()
    wait_until(lambda: p.metric("access_eval_attempts_total") > 0, 30, "some work committed")
    commits = p.metric("access_eval_commit_seconds_count")
    assert commits >= 1 and p.metric("access_eval_transactions_total", result="committed") >= commits
    assert 0 < p.metric("access_eval_commit_seconds_sum") < 20 * commits  # seconds, each under the txn-call limit
    started = time.monotonic()
    rc = p.terminate(timeout=15)
    assert rc == 0, p.log()
    assert time.monotonic() - started < 12
    committed = committed_offsets(topics.bootstrap, topics.group, topics.attempts)
    evals = read_evals(topics.bootstrap, topics.evals)
    # Whatever was committed is exactly what was emitted: one event per consumed attempt, no more.
    assert sum(max(o, 0) for o in committed.values()) == len(evals)
    assert end_offsets(topics.bootstrap, topics.attempts)
