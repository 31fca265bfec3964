"""Alert rules and dashboard: promtool check + unit tests, and static checks of the dashboard JSON.

Every alert in the rule file must have a promtool unit test in tests/k8s/rules/ where it fires and one
where it does not; every metric used by the rules and the dashboard must be one the processor
exports (introspected from a real ``Metrics`` registry) or a standard one.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from processor.metrics import Metrics
from tests.support.prometheus_harness import (
    DASHBOARD_FILE,
    RULE_TESTS_DIR,
    RULES_FILE,
    dashboard_exprs,
    dashboard_panels,
    load_dashboard,
    load_rules,
    require_binary,
    rule_exprs,
)

README = RULES_FILE.parent / "README.md"
SEVERITIES = {"critical", "warning", "info"}
REQUIRED_ALERTS = {
    "AccessEvalDown",
    "AccessEvalNotReady",
    "AccessEvalConsumerLagGrowing",
    "AccessEvalDLQReceiving",
    "AccessEvalSettingsRejected",
    "AccessEvalSettingsInvalidLatest",
    "AccessEvalEnforcedDeniesSpike",
    "AccessEvalNoTransactionsCommitting",
}


def rule_test_files() -> list[Path]:
    return sorted(RULE_TESTS_DIR.glob("*.test.yaml"))


def alerts() -> list[dict[str, Any]]:
    return [r for g in load_rules()["groups"] for r in g["rules"] if "alert" in r]


# --- promtool ----------------------------------------------------------------------------------


@pytest.mark.prometheus
def test_promtool_check_rules() -> None:
    promtool = require_binary("promtool")
    proc = subprocess.run([promtool, "check", "rules", str(RULES_FILE)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


@pytest.mark.prometheus
def test_promtool_unit_tests_pass() -> None:
    promtool = require_binary("promtool")
    files = rule_test_files()
    assert files, f"no promtool tests in {RULE_TESTS_DIR}"
    proc = subprocess.run(
        [promtool, "test", "rules", *map(str, files)], capture_output=True, text=True, cwd=RULE_TESTS_DIR
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("SUCCESS") == len(files), proc.stdout


def test_unit_tests_cover_every_alert_firing_and_not_firing() -> None:
    firing: set[str] = set()
    quiet: set[str] = set()
    for path in rule_test_files():
        doc = yaml.safe_load(path.read_text())
        rule_files = [(path.parent / f).resolve() for f in doc["rule_files"]]
        assert rule_files == [RULES_FILE.resolve()], f"{path.name} must test the chart's rule file"
        for test in doc["tests"]:
            for case in test.get("alert_rule_test", []):
                (firing if case.get("exp_alerts") else quiet).add(case["alertname"])
    names = {a["alert"] for a in alerts()}
    assert names >= REQUIRED_ALERTS
    assert not names - firing, f"alerts never tested firing: {sorted(names - firing)}"
    assert not names - quiet, f"alerts never tested not firing: {sorted(names - quiet)}"
    assert not (firing | quiet) - names, f"tests name unknown alerts: {sorted((firing | quiet) - names)}"


def test_alerts_have_severity_and_runbook() -> None:
    readme = README.read_text()
    anchors = {re.sub(r"[^a-z0-9-]", "", h.strip().lower()) for h in re.findall(r"^#+ (.+)$", readme, re.M)}
    for alert in alerts():
        name = alert["alert"]
        assert alert.get("labels", {}).get("severity") in SEVERITIES, name
        annotations = alert.get("annotations", {})
        for key in ("summary", "description", "runbook"):
            assert annotations.get(key, "").strip(), f"{name}: annotation {key} missing"
        anchor = re.search(r"README\.md#([\w-]+)", annotations["runbook"])
        assert anchor, f"{name}: runbook must point to README.md#<anchor>"
        assert anchor.group(1) in anchors, f"{name}: README.md has no section #{anchor.group(1)}"


# --- dashboard ---------------------------------------------------------------------------------


def test_dashboard_structure() -> None:
    dash = load_dashboard()
    assert dash["uid"] == "access-eval" and dash["title"]
    assert dash.get("id") is None  # importable anywhere
    assert isinstance(dash.get("__inputs"), list) and isinstance(dash.get("__requires"), list)
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    ds = variables["datasource"]
    assert ds["type"] == "datasource" and ds["query"] == "prometheus"
    for name in ("job", "instance"):
        assert variables[name]["type"] == "query"
        assert variables[name]["datasource"]["uid"] == "${datasource}"
        assert variables[name]["includeAll"] is True

    panels = dashboard_panels(dash)
    assert len(panels) >= 10
    ids = [p["id"] for p in dash["panels"]] + [p["id"] for p in panels if p not in dash["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in panels:
        title = panel.get("title")
        assert title, panel
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, title
        assert panel.get("targets"), f"panel {title!r} has no targets"
        assert {"h", "w", "x", "y"} <= set(panel["gridPos"]), title
        for target in panel["targets"]:
            assert target.get("expr", "").strip(), f"panel {title!r}: empty expr"
            assert target.get("datasource", panel["datasource"])["uid"] == "${datasource}", title
            assert target.get("refId"), title
    # no hard-coded data source anywhere
    uids = set(re.findall(r'"uid":\s*"([^"]*)"', DASHBOARD_FILE.read_text()))
    assert uids <= {"${datasource}", "-- Grafana --", "access-eval"}, uids


def test_dashboard_has_the_required_views() -> None:
    exprs = " ".join(e for _, e in dashboard_exprs(load_dashboard()))
    titles = " ".join(p["title"].lower() for p in dashboard_panels(load_dashboard()))
    for metric in (
        "access_eval_permits_total",
        "access_eval_would_be_denies_total",
        "access_eval_enforced_denies_total",
        "access_eval_attempts_total",
        "access_eval_invalid_total",
        "access_eval_settings_rejected_total",
        "access_eval_consumer_lag",
        "access_eval_batch_processing_seconds_bucket",
        "access_eval_event_age_seconds_bucket",
        "access_eval_ready",
        "access_eval_transactions_total",
        "access_eval_account_decisions_total",
    ):
        assert metric in exprs, metric
    assert "histogram_quantile(0.5," in exprs and "histogram_quantile(0.99," in exprs
    assert "[30d]" in exprs  # report-only view over the default 30 d window
    for words in ("would-be denies", "per-account", "consumer lag", "readiness", "transactions"):
        assert words in titles, words


# --- metric names ------------------------------------------------------------------------------

# PromQL functions, aggregations and keywords: every other identifier outside label matchers,
# grouping clauses and strings is a metric name.
PROMQL_WORDS = frozenset(
    re.findall(
        r"\w+",
        """
        sum min max avg count stddev stdvar topk bottomk quantile count_values group
        rate irate increase delta idelta deriv predict_linear histogram_quantile label_replace label_join
        clamp clamp_min clamp_max abs absent absent_over_time time vector scalar sort sort_desc
        round ceil floor ln log2 log10 exp sqrt timestamp changes resets
        avg_over_time min_over_time max_over_time sum_over_time count_over_time last_over_time
        quantile_over_time stddev_over_time present_over_time day_of_week hour minute month year
        by without on ignoring group_left group_right offset bool and or unless inf nan
        """,
    )
)
STANDARD_METRICS = {"up"}


def metric_names(expr: str) -> set[str]:
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # range / subquery windows
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", r"\1", text)
    text = re.sub(r"\boffset\s+-?\d+\w*", "", text)
    words = set(re.findall(r"(?<![\w.])[A-Za-z_:][\w:]*", text))
    return {w for w in words if w not in PROMQL_WORDS and not re.fullmatch(r"\d+\w*", w)}


def exported_metrics() -> set[str]:
    m = Metrics(account_labels=["a3f1c0d2e4b5968778695a4b3c2d1e0f"])
    m.update_from_stats(
        '{"name": "c", "type": "consumer", "topics": {"t": {"partitions": '
        '{"0": {"partition": 0, "fetch_state": "active", "consumer_lag_stored": 1}}}}}'
    )
    return {s.name for fam in m.registry.collect() for s in fam.samples} | STANDARD_METRICS


def test_metric_name_extraction() -> None:
    assert metric_names(
        'sum by (job, le) (rate(foo_bucket{job=~"$job", le!="x"}[5m] offset 1d)) / on (job) '
        'group_left bar and label_replace(baz, "a", "b", "", "") > 0.5'
    ) == {"foo_bucket", "bar", "baz"}


def test_every_metric_used_is_exported() -> None:
    exported = exported_metrics()
    used: dict[str, set[str]] = {}
    for where, expr in dashboard_exprs(load_dashboard()):
        for name in metric_names(expr):
            used.setdefault(name, set()).add(f"dashboard panel {where!r}")
    for var in load_dashboard()["templating"]["list"]:
        if var["type"] == "query":
            query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]  # what Grafana runs
            inner = re.fullmatch(r"label_values\((.*),\s*\w+\)", query)
            assert inner, query
            for name in metric_names(inner.group(1)):
                used.setdefault(name, set()).add(f"dashboard variable {var['name']}")
    for where, expr in rule_exprs(load_rules()):
        for name in metric_names(expr):
            used.setdefault(name, set()).add(f"rule {where}")
    assert "access_eval_attempts_total" in used and "up" in used
    unknown = {name: sorted(places) for name, places in used.items() if name not in exported}
    assert not unknown, f"metrics not exported by processor.metrics.Metrics: {unknown}"


def test_missing_binary_fails_unless_skipping_is_asked_for(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ACCESS_EVAL_ALLOW_MISSING_TOOLS", raising=False)
    monkeypatch.setenv("CI", "")  # CI no longer matters: one rule, one variable
    with pytest.raises(pytest.fail.Exception, match="scripts/bootstrap --all"):
        require_binary("no-such-promtool")
    monkeypatch.setenv("ACCESS_EVAL_ALLOW_MISSING_TOOLS", "1")
    with pytest.raises(pytest.skip.Exception):
        require_binary("no-such-promtool")
