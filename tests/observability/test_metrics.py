"""processor.metrics: counters move only on commit, labels stay bounded, librdkafka lag parsing."""

from __future__ import annotations

import json
import random
import string
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from processor import __version__
from processor.metrics import (
    ACCOUNT_LABELS_SETTING,
    IDENTITY_TYPES,
    INVALID_REASONS,
    OUTCOMES,
    SETTINGS_REJECT_REASONS,
    Metrics,
    Tally,
)
from processor.native import core_build

A1 = "a3f1c0d2e4b5968778695a4b3c2d1e0f"
A2 = "0b1c2d3e4f5a69788796a5b4c3d2e1f0"


def value(m: Metrics, name: str, **labels: str) -> float:
    v = m.registry.get_sample_value(name, labels)
    assert v is not None, f"no sample {name}{labels}"
    return v


def series(m: Metrics, name: str) -> list[dict[str, str]]:
    """Label sets of the samples called exactly ``name``."""
    return [s.labels for fam in m.registry.collect() for s in fam.samples if s.name == name]


def counter_snapshot(m: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in m.registry.collect()
        if fam.name.startswith("access_eval_") and fam.type in ("counter", "histogram")
        for s in fam.samples
        if not s.name.endswith("_created")
    }


def test_tally_alone_moves_nothing() -> None:
    m = Metrics()
    before = counter_snapshot(m)
    t = Tally()
    t.add("permit", "user", "monitor", A1)
    t.add("would_be_deny", "service_id", "monitor", A1)
    t.add_invalid("bad_json")
    t.observe_age(1.5)
    assert len(t) == 3
    assert counter_snapshot(m) == before
    m.commit(t)
    assert counter_snapshot(m) != before


def test_aborted_batch_cleared_never_counts() -> None:
    m = Metrics()
    t = Tally()
    t.add("enforced_deny", "user", "limited", A1)
    t.clear()  # transaction aborted: the batch will be replayed and tallied again
    assert len(t) == 0
    m.commit(t)
    assert value(m, "access_eval_attempts_total", outcome="enforced_deny") == 0
    assert value(m, "access_eval_enforced_denies_total", identity_type="user") == 0


def test_all_series_preinitialised() -> None:
    m = Metrics()
    for outcome in OUTCOMES:
        assert value(m, "access_eval_attempts_total", outcome=outcome) == 0
    for it in IDENTITY_TYPES:
        assert value(m, "access_eval_would_be_denies_total", identity_type=it) == 0
        assert value(m, "access_eval_enforced_denies_total", identity_type=it) == 0
        for st in ("monitor", "limited"):
            assert value(m, "access_eval_permits_total", identity_type=it, state=st) == 0
    for reason in INVALID_REASONS:
        assert value(m, "access_eval_invalid_total", reason=reason) == 0
    for reason in SETTINGS_REJECT_REASONS:
        assert value(m, "access_eval_settings_rejected_total", reason=reason) == 0
    for result in ("committed", "aborted"):
        assert value(m, "access_eval_transactions_total", result=result) == 0
    assert value(m, "access_eval_build_info", version=__version__, core=core_build()) == 1
    assert series(m, "access_eval_account_decisions_total") == []


@pytest.mark.parametrize(
    ("outcome", "identity_type", "state", "decision_metric", "decision_labels"),
    [
        ("same_account", "user", "", None, None),
        ("unrestricted", "service", "enabled", None, None),
        ("unrestricted", "service_id", "", None, None),
        (
            "permit",
            "user",
            "monitor",
            "access_eval_permits_total",
            {"identity_type": "user", "state": "monitor"},
        ),
        (
            "permit",
            "service",
            "limited",
            "access_eval_permits_total",
            {"identity_type": "service", "state": "limited"},
        ),
        (
            "would_be_deny",
            "service_id",
            "monitor",
            "access_eval_would_be_denies_total",
            {"identity_type": "service_id"},
        ),
        ("enforced_deny", "user", "limited", "access_eval_enforced_denies_total", {"identity_type": "user"}),
    ],
)
def test_outcome_maps_to_counters(
    outcome: str,
    identity_type: str,
    state: str,
    decision_metric: str | None,
    decision_labels: dict[str, str] | None,
) -> None:
    m = Metrics()
    t = Tally()
    for _ in range(3):
        t.add(outcome, identity_type, state, A1)
    m.commit(t)
    assert value(m, "access_eval_attempts_total", outcome=outcome) == 3
    assert sum(value(m, "access_eval_attempts_total", outcome=o) for o in OUTCOMES) == 3
    decision_metrics = (
        "access_eval_permits_total",
        "access_eval_would_be_denies_total",
        "access_eval_enforced_denies_total",
    )
    for name in decision_metrics:
        for labels in series(m, name):
            expected = 3 if name == decision_metric and labels == decision_labels else 0
            assert value(m, name, **labels) == expected, (name, labels)


def test_invalid_counts_outcome_and_reason() -> None:
    m = Metrics()
    t = Tally()
    t.add_invalid("oversize")
    t.add_invalid("bad_timestamp")
    t.add_invalid("bad_timestamp")
    t.add_invalid("something new")  # unknown reasons fold into invalid_field
    m.commit(t)
    assert value(m, "access_eval_attempts_total", outcome="invalid") == 4
    assert value(m, "access_eval_invalid_total", reason="oversize") == 1
    assert value(m, "access_eval_invalid_total", reason="bad_timestamp") == 2
    assert value(m, "access_eval_invalid_total", reason="invalid_field") == 1
    assert {s["reason"] for s in series(m, "access_eval_invalid_total")} == set(INVALID_REASONS)


def test_unknown_outcome_rejected_at_add() -> None:
    t = Tally()
    with pytest.raises(ValueError, match="unknown outcome"):
        t.add("invalid", "user", "", A1)  # invalid goes through add_invalid
    with pytest.raises(ValueError):
        t.add("deny", "user", "limited", A1)
    assert len(t) == 0


def test_merge_and_repeated_commits_accumulate() -> None:
    m = Metrics()
    a, b = Tally(), Tally()
    a.add("permit", "user", "monitor", A1)
    b.add("permit", "user", "monitor", A1)
    b.add_invalid("bad_json")
    b.observe_age(2.0)
    a.merge(b)
    assert len(a) == 3 and len(b) == 2
    m.commit(a)
    m.commit(b)
    assert value(m, "access_eval_permits_total", identity_type="user", state="monitor") == 3
    assert value(m, "access_eval_attempts_total", outcome="invalid") == 2
    assert value(m, "access_eval_event_age_seconds_count") == 2
    assert value(m, "access_eval_event_age_seconds_sum") == 4.0


def test_event_age_observed_only_on_commit() -> None:
    m = Metrics()
    t = Tally()
    for age in (0.2, 30.0, 7200.0):
        t.observe_age(age)
    assert value(m, "access_eval_event_age_seconds_count") == 0
    m.commit(t)
    assert value(m, "access_eval_event_age_seconds_count") == 3
    assert value(m, "access_eval_event_age_seconds_bucket", le="0.25") == 1
    assert value(m, "access_eval_event_age_seconds_bucket", le="86400.0") == 3


def _random_label(rng: random.Random) -> str:
    return "".join(rng.choice(string.printable) for _ in range(rng.randint(0, 12)))


def test_labels_bounded_under_garbage() -> None:
    m = Metrics(account_labels=[A1])
    rng = random.Random(42)
    t = Tally()
    outcomes = ("same_account", "unrestricted", "permit", "would_be_deny", "enforced_deny")
    for _ in range(2000):
        t.add(
            rng.choice(outcomes),
            rng.choice([*IDENTITY_TYPES, _random_label(rng)]),
            rng.choice(["", "enabled", "monitor", "limited", _random_label(rng)]),
            rng.choice([A1, A2, _random_label(rng)]),
        )
        t.add_invalid(rng.choice([*INVALID_REASONS, _random_label(rng)]))
        m.settings_rejected(rng.choice([*SETTINGS_REJECT_REASONS, _random_label(rng)]))
    m.commit(t)
    its = {*IDENTITY_TYPES, "other"}
    assert {s["identity_type"] for s in series(m, "access_eval_would_be_denies_total")} <= its
    assert {s["identity_type"] for s in series(m, "access_eval_enforced_denies_total")} <= its
    permits = series(m, "access_eval_permits_total")
    assert {s["identity_type"] for s in permits} <= its
    assert {s["state"] for s in permits} <= {"monitor", "limited", "other"}
    assert len(permits) <= len(its) * 3
    assert {s["outcome"] for s in series(m, "access_eval_attempts_total")} == set(OUTCOMES)
    assert {s["reason"] for s in series(m, "access_eval_invalid_total")} == set(INVALID_REASONS)
    assert {s["reason"] for s in series(m, "access_eval_settings_rejected_total")} == set(SETTINGS_REJECT_REASONS)
    accounts = series(m, "access_eval_account_decisions_total")
    assert {s["account_id"] for s in accounts} == {A1}
    assert len(accounts) == 5  # the five decision outcomes (invalid attempts have no trusted account)
    # every attempt is in exactly one outcome
    total = sum(value(m, "access_eval_attempts_total", outcome=o) for o in OUTCOMES)
    assert total == 4000


def test_account_labels_normalised_and_counted() -> None:
    m = Metrics(account_labels=[f"  {A1.upper()} ", A1, ""])
    assert m.account_labels == frozenset({A1})
    t = Tally()
    t.add("would_be_deny", "user", "monitor", A1.upper())
    t.add("would_be_deny", "user", "monitor", f" {A1}")
    t.add("permit", "user", "monitor", A1)
    t.add("would_be_deny", "user", "monitor", A2)  # not configured: no per-account series
    m.commit(t)
    assert value(m, "access_eval_account_decisions_total", account_id=A1, outcome="would_be_deny") == 2
    assert value(m, "access_eval_account_decisions_total", account_id=A1, outcome="permit") == 1
    assert value(m, "access_eval_account_decisions_total", account_id=A1, outcome="enforced_deny") == 0
    assert all(s["account_id"] == A1 for s in series(m, "access_eval_account_decisions_total"))


def test_account_label_cap() -> None:
    accounts = [f"{i:032x}" for i in range(11)]
    Metrics(account_labels=accounts[:10], max_account_labels=10)
    with pytest.raises(ValueError, match=ACCOUNT_LABELS_SETTING):
        Metrics(account_labels=accounts, max_account_labels=10)
    with pytest.raises(ValueError, match=ACCOUNT_LABELS_SETTING):
        Metrics(account_labels=[f"{i:032x}" for i in range(101)])


def test_settings_batch_and_transaction_metrics() -> None:
    m = Metrics()
    m.set_settings_size(accounts=12, versions=30)
    m.settings_applied()
    m.settings_applied(3)  # the table counts a bootstrap batch at once
    m.settings_rejected("key_mismatch")
    m.settings_unknown_identity_types(2)
    m.set_bootstrap_complete(True)
    m.observe_batch(0.004, 250)
    m.observe_commit(0.02)
    m.transaction("committed")
    m.transaction("aborted")
    assert value(m, "access_eval_settings_accounts") == 12
    assert value(m, "access_eval_settings_versions") == 30
    assert value(m, "access_eval_settings_records_total") == 4
    assert value(m, "access_eval_settings_rejected_total", reason="key_mismatch") == 1
    assert value(m, "access_eval_settings_unknown_identity_types_total") == 2
    assert value(m, "access_eval_settings_bootstrap_complete") == 1
    assert value(m, "access_eval_batch_processing_seconds_bucket", le="0.005") == 1
    assert value(m, "access_eval_batch_processing_seconds_bucket", le="0.0025") == 0
    assert value(m, "access_eval_batch_size_sum") == 250
    assert value(m, "access_eval_commit_seconds_bucket", le="0.025") == 1
    assert value(m, "access_eval_commit_seconds_bucket", le="0.01") == 0
    assert value(m, "access_eval_transactions_total", result="committed") == 1
    assert value(m, "access_eval_transactions_total", result="aborted") == 1
    assert value(m, "access_eval_last_commit_timestamp_seconds") > 1e9
    with pytest.raises(ValueError):
        m.transaction("maybe")
    m.set_bootstrap_complete(False)
    assert value(m, "access_eval_settings_bootstrap_complete") == 0


def test_process_metrics_and_independent_registries() -> None:
    m1, m2 = Metrics(), Metrics(registry=CollectorRegistry())
    text = generate_latest(m1.registry).decode()
    assert "process_cpu_seconds_total" in text  # ProcessCollector (Linux /proc)
    assert "python_info" in text
    t = Tally()
    t.add("permit", "user", "monitor", A1)
    m1.commit(t)
    assert value(m2, "access_eval_attempts_total", outcome="permit") == 0


# --- librdkafka statistics --------------------------------------------------------------------


def _partition(
    p: int, fetch_state: str, *, app: int = -1001, hi: int = 150, lag: int = -1, lag_stored: int = -1
) -> dict[str, Any]:
    """A partition object shaped like librdkafka's STATISTICS.md (only the fields we read vary).

    Defaults are what librdkafka 2.x reports for our consumer configuration
    (enable.auto.offset.store=false, offsets committed through the producer's transaction):
    stored/committed offsets unknown (-1001), so both lag fields are -1.
    """
    return {
        "partition": p,
        "broker": 1,
        "leader": 1,
        "desired": fetch_state != "none",
        "unknown": False,
        "msgq_cnt": 0,
        "fetchq_cnt": 0,
        "fetch_state": fetch_state,
        "query_offset": -1001,
        "next_offset": max(app, 0),
        "app_offset": app,
        "stored_offset": -1001 if lag_stored < 0 else hi - lag_stored,
        "committed_offset": -1001 if lag < 0 else hi - lag,
        "eof_offset": -1001,
        "lo_offset": 0,
        "hi_offset": hi,
        "ls_offset": hi,
        "consumer_lag": lag,
        "consumer_lag_stored": lag_stored,
        "txmsgs": 0,
        "rxmsgs": max(app, 0),
        "msgs": max(app, 0),
    }


def _stats(parts: dict[str, list[dict[str, Any]]], name: str = "rdkafka#consumer-1") -> str:
    topics = {
        t: {
            "topic": t,
            "age": 1000,
            "metadata_age": 500,
            "batchsize": {"min": 0, "max": 0, "avg": 0, "cnt": 0},
            "partitions": {str(p["partition"]): p for p in ps},
        }
        for t, ps in parts.items()
    }
    return json.dumps(
        {
            "name": name,
            "client_id": "access-eval",
            "type": "consumer",
            "ts": 123456789,
            "time": 1764244800,
            "replyq": 0,
            "brokers": {"localhost:9092/1": {"name": "localhost:9092/1", "nodeid": 1, "state": "UP"}},
            "topics": topics,
            "cgrp": {"state": "up", "join_state": "steady", "assignment_size": 3},
            "tx": 10,
            "rx": 10,
        }
    )


def lag(m: Metrics, topic: str, partition: int) -> float | None:
    return m.registry.get_sample_value("access_eval_consumer_lag", {"topic": topic, "partition": str(partition)})


def test_update_from_stats_sets_and_removes_lag() -> None:
    m = Metrics()
    T = "iam.access-attempts"
    m.update_from_stats(
        _stats(
            {
                T: [
                    _partition(0, "active", app=100, lag=50, lag_stored=30),  # stored lag preferred
                    _partition(1, "active", app=143),  # transactional commits: end - app_offset
                    _partition(5, "active", lag=12),  # nothing consumed yet: committed lag
                    _partition(2, "offset-query"),  # assigned, lag unknown yet
                    _partition(3, "none", app=1, lag=99, lag_stored=99),  # not assigned to us
                    _partition(-1, "none"),  # internal UA partition
                ]
            }
        )
    )
    assert lag(m, T, 0) == 30
    assert lag(m, T, 1) == 7
    assert lag(m, T, 5) == 12
    assert lag(m, T, 2) is None
    assert lag(m, T, 3) is None
    assert lag(m, T, -1) is None

    # rebalance: partitions 0 and 5 revoked, 2 now known, 4 newly assigned
    m.update_from_stats(
        _stats(
            {
                T: [
                    _partition(0, "stopped", app=100, lag_stored=30),
                    _partition(1, "active", app=145),
                    _partition(2, "active", app=147),
                    _partition(4, "active", app=150),
                ]
            }
        )
    )
    assert lag(m, T, 0) is None and lag(m, T, 5) is None
    assert (lag(m, T, 1), lag(m, T, 2), lag(m, T, 4)) == (5, 3, 0)
    # lag unknown for an assigned partition keeps the last value
    m.update_from_stats(_stats({T: [_partition(1, "active"), _partition(2, "active", app=148)]}))
    assert lag(m, T, 1) == 5 and lag(m, T, 2) == 2 and lag(m, T, 4) is None
    # topic gone entirely
    m.update_from_stats(_stats({}))
    assert series(m, "access_eval_consumer_lag") == []


def test_update_from_stats_per_client_and_robust() -> None:
    m = Metrics()
    m.update_from_stats(_stats({"a": [_partition(0, "active", lag_stored=4)]}, name="rdkafka#consumer-1"))
    m.update_from_stats(_stats({"s": [_partition(0, "active", lag_stored=1)]}, name="rdkafka#consumer-2"))
    # another client's stats do not remove the first client's series
    assert lag(m, "a", 0) == 4 and lag(m, "s", 0) == 1
    # producer stats are ignored (their partitions are never "assigned")
    m.update_from_stats(json.dumps({"name": "rdkafka#producer-3", "type": "producer", "topics": {}}))
    assert lag(m, "a", 0) == 4
    for garbage in ("", "not json", "[]", '{"topics": []}', '{"topics": {"a": {"partitions": [1]}}}', "null"):
        m.update_from_stats(garbage)
    m.update_from_stats(_stats({"a": [_partition(0, "active", lag_stored=9)]}, name="rdkafka#consumer-1"))
    assert lag(m, "a", 0) == 9
    m.reset_consumer_lag()
    assert series(m, "access_eval_consumer_lag") == []


def test_bind_health_gauges() -> None:
    m = Metrics()
    state = {"ready": False, "assigned": 0}
    m.bind_health(lambda: bool(state["ready"]), lambda: int(state["assigned"]))
    assert value(m, "access_eval_ready") == 0
    state.update(ready=True, assigned=3)
    assert value(m, "access_eval_ready") == 1
    assert value(m, "access_eval_assigned_partitions") == 3


def test_event_age_of_future_dated_attempts_is_clamped_at_zero() -> None:
    """An attempt dated ahead of the evaluating clock (allowed up to --max-future-ms) is 0 s old, never negative."""
    m = Metrics()
    t = Tally()
    for age in (-3600.0, -0.5, 2.0):
        t.observe_age(age)
    m.commit(t)
    assert value(m, "access_eval_event_age_seconds_count") == 3
    assert value(m, "access_eval_event_age_seconds_sum") == 2.0
    assert value(m, "access_eval_event_age_seconds_bucket", le="0.25") == 2


def test_settings_gauges_of_accounts_with_an_invalid_latest_record() -> None:
    from processor.core.settings import SettingsHistory

    m = Metrics()
    h = SettingsHistory()
    m.bind_settings(h)
    doc = {"account_id": A1, "external_account_identity_interaction": {"identity_types": {}}}
    assert h.apply_record(A1.encode(), json.dumps(doc).encode(), 0) is None
    assert h.apply_record(A1.encode(), b"{", 1) is not None
    assert h.apply_record(A2.encode(), b"[]", 1) is not None
    assert value(m, "access_eval_settings_accounts_invalid_latest") == 2
    assert value(m, "access_eval_settings_accounts_without_valid_version") == 1


@pytest.mark.parametrize(("content", "limit"), [
    ("536870912\n", 536870912), ("max\n", 0), ("9223372036854771712\n", 0), ("garbage", 0), (None, 0),
])
def test_memory_limit_is_read_from_the_cgroup(tmp_path: Path, content: str | None, limit: int) -> None:
    from processor.metrics.cgroup import memory_limit_bytes

    path = tmp_path / "memory.max"
    if content is not None:
        path.write_text(content)
    assert memory_limit_bytes([path]) == limit
    assert Metrics().registry.get_sample_value("access_eval_memory_limit_bytes") == memory_limit_bytes()
