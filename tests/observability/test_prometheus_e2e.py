"""A real Prometheus scrapes a real access-eval /metrics endpoint; the dashboard and rules run on it.

Two endpoints: ``processor.health.serve`` with a ``Metrics`` fed a known ``Tally`` (exact values,
no broker), and the real ``access-eval run`` on the real broker processing a generated workload
(what operators will actually see).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from processor import __version__
from processor.core.times import rfc3339_millis
from processor.health import Health, HttpServer, serve
from processor.local.workload import Mix, Workload
from processor.metrics import Metrics
from processor.metrics.tally import Tally
from tests.support.kafka_harness import Topics, wait_until
from tests.support.processor_harness import produce, settings_record, start_processor, wait_all_committed
from tests.support.prometheus_harness import (
    JOB,
    PrometheusServer,
    dashboard_exprs,
    load_dashboard,
    load_rules,
    rule_exprs,
    running_prometheus,
)

pytestmark = pytest.mark.prometheus

A1 = "a3f1c0d2e4b5968778695a4b3c2d1e0f"
A2 = "0b1c2d3e4f5a69788796a5b4c3d2e1f0"
A3 = "9f8e7d6c5b4a39281706f5e4d3c2b1a0"

#: (outcome, identity_type, state, target account) -> count: what the tally commits.
DECISIONS = {
    ("same_account", "user", "", A1): 5,
    ("unrestricted", "service", "enabled", A2): 4,
    ("permit", "user", "monitor", A1): 7,
    ("permit", "service_id", "limited", A2): 2,
    ("would_be_deny", "user", "monitor", A1): 3,
    ("would_be_deny", "service", "monitor", A3): 6,
    ("enforced_deny", "service_id", "limited", A2): 8,
}
INVALID = {"bad_json": 2, "oversize": 1, "bad_timestamp": 1}


def known_tally() -> Tally:
    t = Tally()
    for (outcome, it, state, account), n in DECISIONS.items():
        for _ in range(n):
            t.add(outcome, it, state, account)
    for reason, n in INVALID.items():
        for _ in range(n):
            t.add_invalid(reason)
    for age in (0.05, 0.3, 2.0, 40.0):
        t.observe_age(age)
    return t


def lbl(**labels: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(labels.items()))


def stats_json(lags: dict[int, int]) -> str:
    parts = {
        str(p): {"partition": p, "fetch_state": "active", "consumer_lag_stored": lag, "consumer_lag": -1}
        for p, lag in lags.items()
    }
    return json.dumps(
        {"name": "rdkafka#consumer-1", "type": "consumer", "topics": {"iam.access-attempts": {"partitions": parts}}}
    )


def assert_every_expression_evaluates(prom: PrometheusServer) -> None:
    """Every dashboard target (variables substituted) and every rule expression parses and evaluates."""
    exprs = dashboard_exprs(load_dashboard()) + rule_exprs(load_rules())
    assert len(exprs) > 30
    errors: list[str] = []
    for where, expr in exprs:
        assert "$" not in expr, f"{where}: unsubstituted variable in {expr!r}"
        try:
            prom.query(expr)
        except AssertionError as exc:
            errors.append(f"{where}: {exc}")
    assert not errors, "\n".join(errors)


def assert_rules_healthy(prom: PrometheusServer, timeout: float = 20) -> None:
    """All rules of the rule file are loaded, have been evaluated, and evaluated without error."""
    expected = len(rule_exprs(load_rules()))

    def evaluated() -> bool:
        rules = prom.rules()
        return len(rules) == expected and all(not r.get("lastEvaluation", "0001").startswith("0001") for r in rules)

    deadline = time.monotonic() + timeout
    while not evaluated():
        assert time.monotonic() < deadline, prom.rules()
        time.sleep(0.2)
    bad = [(r["name"], r.get("lastError")) for r in prom.rules() if r["health"] != "ok"]
    assert not bad, bad


@pytest.fixture
def endpoint() -> Iterator[tuple[HttpServer, Metrics, Health]]:
    metrics = Metrics(account_labels=[A1, A2])
    health = Health()
    server = serve("127.0.0.1", 0, metrics, health)
    try:
        yield server, metrics, health
    finally:
        server.close()


@pytest.fixture
def prom(tmp_path: Path, endpoint: tuple[HttpServer, Metrics, Health]) -> Iterator[PrometheusServer]:
    server, _, _ = endpoint
    with running_prometheus(tmp_path / "prometheus", [f"127.0.0.1:{server.port}"]) as p:
        yield p


def wait_scraped_twice_since(prom: PrometheusServer, sel: str, since: float) -> None:
    """Two scrapes that started after `since` (a condition, not a sleep)."""

    def scraped_twice_since() -> bool:
        samples = prom.query(f"up{{{sel}}}[30s]")["result"]
        assert samples, "no up series"
        return sum(1 for t, _ in samples[0]["values"] if float(t) > since) >= 2

    wait_until(scraped_twice_since, 20, "two scrapes after the uncommitted tally", interval=0.2)


def commit_everything(metrics: Metrics, health: Health, pending: Tally) -> None:
    """Commit the tally and set every other metric the dashboard and rules read."""
    metrics.commit(pending)
    pending.clear()
    metrics.transaction("committed")
    metrics.observe_batch(0.004, len(DECISIONS))
    metrics.set_settings_size(3, 5)
    metrics.set_bootstrap_complete(True)
    metrics.update_from_stats(stats_json({0: 12, 1: 0}))
    health.set_bootstrapped(True)
    health.set_assigned(2)


def assert_labelled_counters(prom: PrometheusServer, sel: str, base: dict[str, str]) -> None:
    """The committed tally, counter by counter and label by label."""

    def vector(name: str) -> dict[tuple[tuple[str, str], ...], float]:
        return {k: v for k, v in prom.query_vector(f"{name}{{{sel}}}").items() if v}

    assert vector("access_eval_permits_total") == {
        lbl(**base, identity_type="user", state="monitor"): 7.0,
        lbl(**base, identity_type="service_id", state="limited"): 2.0,
    }
    assert vector("access_eval_would_be_denies_total") == {
        lbl(**base, identity_type="user"): 3.0,
        lbl(**base, identity_type="service"): 6.0,
    }
    assert vector("access_eval_enforced_denies_total") == {lbl(**base, identity_type="service_id"): 8.0}
    assert vector("access_eval_invalid_total") == {lbl(**base, reason=r): float(n) for r, n in INVALID.items()}
    assert vector("access_eval_account_decisions_total") == {
        lbl(**base, account_id=A1, outcome="same_account"): 5.0,
        lbl(**base, account_id=A1, outcome="permit"): 7.0,
        lbl(**base, account_id=A1, outcome="would_be_deny"): 3.0,
        lbl(**base, account_id=A2, outcome="unrestricted"): 4.0,
        lbl(**base, account_id=A2, outcome="permit"): 2.0,
        lbl(**base, account_id=A2, outcome="enforced_deny"): 8.0,
    }  # A3 is not configured for per-account labels


def assert_panels_return_series(prom: PrometheusServer) -> None:
    """Panels over the data just committed return series (not only "no error")."""
    results = {expr: prom.query_vector(expr) for _, expr in dashboard_exprs(load_dashboard())}
    for needle in (
        "sum by (identity_type) (increase(access_eval_would_be_denies_total",
        "sum by (outcome) (rate(access_eval_attempts_total",
        "histogram_quantile(0.99, sum by (le) (rate(access_eval_batch_processing_seconds_bucket",
        "access_eval_account_decisions_total",
        "max by (topic, partition) (access_eval_consumer_lag",
    ):
        matching = [e for e in results if needle in e]
        assert matching, needle
        assert all(results[e] for e in matching), f"no series for {matching}"


def test_scraped_counters_equal_committed_tally_and_all_queries_evaluate(
    endpoint: tuple[HttpServer, Metrics, Health], prom: PrometheusServer
) -> None:
    _, metrics, health = endpoint
    sel = f'job="{JOB}"'

    # First scrapes see the pre-initialised zeros (so rate() sees the later increments).
    prom.wait_for(f"access_eval_attempts_total{{{sel}}}", lambda v: len(v) == 6 and not any(v.values()), 20)
    assert prom.targets()[0]["health"] == "up"

    # Work that is tallied but not committed never shows up.
    pending = known_tally()
    # Wait for two scrapes that started after the tally existed (a condition, not a sleep), then look.
    tallied_at = time.time()
    wait_scraped_twice_since(prom, sel, tallied_at)
    assert metrics_total(prom, sel) == 0, "uncommitted work reached Prometheus"

    # Commit: then Prometheus sees exactly the tally.
    commit_everything(metrics, health, pending)

    expected_outcomes: dict[str, int] = {o: 0 for o in ("same_account", "unrestricted", "permit")}
    expected_outcomes |= {"would_be_deny": 0, "enforced_deny": 0, "invalid": sum(INVALID.values())}
    for (outcome, _, _, _), n in DECISIONS.items():
        expected_outcomes[outcome] += n
    attempts = prom.wait_for(
        f"access_eval_attempts_total{{{sel}}}", lambda v: sum(v.values()) == sum(expected_outcomes.values()), 20
    )
    instance = dict(next(iter(attempts)))["instance"]
    base = {"job": JOB, "instance": instance}
    assert attempts == {lbl(**base, outcome=o): float(n) for o, n in expected_outcomes.items()}

    assert_labelled_counters(prom, sel, base)
    assert prom.query_value(f"access_eval_event_age_seconds_count{{{sel}}}") == 4
    assert prom.query_value(f'access_eval_transactions_total{{{sel}, result="committed"}}') == 1
    assert prom.query_value(f'access_eval_consumer_lag{{{sel}, partition="0"}}') == 12
    assert prom.query_value(f"access_eval_ready{{{sel}}}") == 1
    assert prom.query_value(f"access_eval_assigned_partitions{{{sel}}}") == 2
    assert prom.query_value(f'access_eval_build_info{{{sel}, version="{__version__}"}}') == 1
    assert (prom.query_value(f"process_resident_memory_bytes{{{sel}}}") or 0) > 0

    assert_every_expression_evaluates(prom)
    assert_panels_return_series(prom)

    # The rules were loaded and evaluate without errors; the DLQ alert fires on the dead letters.
    assert_rules_healthy(prom)

    firing = prom.wait_for('ALERTS{alertname="AccessEvalDLQReceiving", alertstate="firing"}', lambda v: len(v) == 3, 20)
    assert {dict(k)["reason"] for k in firing} == set(INVALID)
    assert {dict(k)["severity"] for k in firing} == {"warning"}
    # nothing is down, not ready or stalled
    active = {a["labels"]["alertname"] for a in prom.alerts()}
    assert not active & {"AccessEvalDown", "AccessEvalNotReady", "AccessEvalNoTransactionsCommitting"}, active


def test_target_down_is_seen(tmp_path: Path) -> None:
    """The AccessEvalDown expression sees a dead endpoint (the alert itself waits 5 m: promtool tests it)."""
    server = serve("127.0.0.1", 0, Metrics(), Health())
    port = server.port
    server.close()
    with running_prometheus(tmp_path / "prometheus", [f"127.0.0.1:{port}"]) as prom:
        expr = dict(rule_exprs(load_rules()))["AccessEvalDown"]
        target = f"127.0.0.1:{port}"
        # before the first scrape there is no `up` at all: the absent() branch
        assert prom.query_vector(expr) in ({(): 1.0}, {lbl(instance=target, job=JOB): 0.0})
        prom.wait_for(expr, lambda v: v == {lbl(instance=target, job=JOB): 0.0}, 20)


@pytest.mark.kafka
def test_real_processor_scraped_by_prometheus(topics: Topics, tmp_path: Path) -> None:
    """`access-eval run` on the real broker: Prometheus sees the committed outcomes, readiness,
    assignment, lag back to 0, settings and transactions; the dashboard and rules evaluate on it."""
    topics.create(partitions=3)
    w = Workload(seed=3, accounts=30, allowlist_max=3, mix=Mix(invalid=0.04))
    now = int(time.time() * 1000)
    settings = [{**d, "updated_at": rfc3339_millis(now - 60_000)} for d in w.settings()]
    attempts = list(w.attempts(1200, start_ms=now - 1200 * 10, step_ms=10))
    expected = Counter(o for _, _, o in attempts)
    assert expected["invalid"] and expected["would_be_deny"] and expected["enforced_deny"]
    produce(topics.bootstrap, topics.settings, [settings_record(d) for d in settings])
    produce(topics.bootstrap, topics.attempts, [(k, v) for k, v, _ in attempts])
    labelled = w.monitor_ids[0]
    p = start_processor(topics, tmp_path, "--account-labels", labelled)
    try:
        p.wait_ready()
        with running_prometheus(tmp_path / "prometheus", [f"127.0.0.1:{p.port}"]) as prom:
            wait_all_committed(topics.bootstrap, topics.group, topics.attempts)
            sel = f'job="{JOB}"'
            got = prom.wait_for(
                f"sum by (outcome) (access_eval_attempts_total{{{sel}}})",
                lambda v: sum(v.values()) == len(attempts),
                30,
            )
            assert {dict(k)["outcome"]: int(v) for k, v in got.items() if v} == dict(expected)
            assert prom.query_value(f"sum(access_eval_would_be_denies_total{{{sel}}})") == expected["would_be_deny"]
            assert prom.query_value(f"sum(access_eval_enforced_denies_total{{{sel}}})") == expected["enforced_deny"]
            assert prom.query_value(f"sum(access_eval_permits_total{{{sel}}})") == expected["permit"]
            assert prom.query_value(f"sum(access_eval_invalid_total{{{sel}}})") == expected["invalid"]
            per_account = prom.query_vector(f"access_eval_account_decisions_total{{{sel}}}")
            assert {dict(k)["account_id"] for k in per_account} == {labelled}
            assert prom.query_value(f"access_eval_ready{{{sel}}}") == 1
            assert prom.query_value(f"access_eval_assigned_partitions{{{sel}}}") == 3
            assert prom.query_value(f"access_eval_settings_accounts{{{sel}}}") == len(settings)
            assert prom.query_value(f"access_eval_settings_bootstrap_complete{{{sel}}}") == 1
            assert (prom.query_value(f'access_eval_transactions_total{{{sel}, result="committed"}}') or 0) > 0
            assert (prom.query_value(f"access_eval_event_age_seconds_count{{{sel}}}") or 0) > 0
            # librdkafka statistics (every 5 s): one lag series per assigned attempts partition, drained to 0
            lag = prom.wait_for(
                f'access_eval_consumer_lag{{{sel}, topic="{topics.attempts}"}}',
                lambda v: len(v) == 3 and not any(v.values()),
                30,
            )
            assert {dict(k)["partition"] for k in lag} == {"0", "1", "2"}

            assert_every_expression_evaluates(prom)
            assert_rules_healthy(prom)
            # dead letters arriving while Prometheus watches fire the DLQ alert (no `for`)
            produce(topics.bootstrap, topics.attempts, [(b"k", b"{not json")] * 3)
            firing = prom.wait_for('ALERTS{alertname="AccessEvalDLQReceiving", alertstate="firing"}', bool, 30)
            assert {dict(k)["reason"] for k in firing} == {"bad_json"}
            active = {a["labels"]["alertname"] for a in prom.alerts()}
            assert not active & {"AccessEvalDown", "AccessEvalNotReady", "AccessEvalNoTransactionsCommitting"}
    finally:
        assert p.terminate() == 0, p.log()


def metrics_total(prom: PrometheusServer, sel: str) -> float | None:
    """sum(access_eval_attempts_total) as Prometheus has it; the series must exist (no vacuous zero)."""
    value = prom.query_value(f"sum(access_eval_attempts_total{{{sel}}})")
    assert value is not None, "no access_eval_attempts_total series scraped"
    return value
