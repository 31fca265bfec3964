"""Guards of the operator tools, end to end on the real broker: `settings list --invalid` names the
rejected accounts, `report` counts each event once and states the period it covers, Confluent-framed
events without a registry are refused one by one, `demo` on a foreign cluster asks first and keeps to
its own topics, librdkafka's log lines are JSON in `run` and never raw on a terminal, every Kafka
client is configured in one place, and the eval reader uses the one account-id normaliser."""

from __future__ import annotations

import ast
import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.admin import AdminClient, ConfigResource  # type: ignore[attr-defined]

from processor.codec.avro import EvalCodec
from processor.config import RunConfig
from processor.core.times import rfc3339_millis
from tests.support.kafka_harness import Topics, free_port, wait_until
from tests.support.processor_harness import answer_on_a_terminal, end_offsets, produce, start_processor
from tests.support.tool_harness import DAY, HOUR, REPO, ae, make_event, ok, one_line_error, produce_events, sput


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """`access-eval ARGS` with a clean ACCESS_EVAL_* environment plus `env`."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("ACCESS_EVAL_")}
    return subprocess.run(
        [sys.executable, "-m", "processor", *args], cwd=REPO, stdin=subprocess.DEVNULL, capture_output=True,
        text=True, timeout=timeout, env={**base, **(env or {})},
    )


def topic_config(bootstrap: str, topic: str, name: str) -> str:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    res = ConfigResource(ConfigResource.Type.TOPIC, topic)
    value: str = admin.describe_configs([res])[res].result(timeout=10)[name].value
    return value


def existing_topics(bootstrap: str) -> set[str]:
    return set(AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10).topics)


# --- 15: settings list --invalid ------------------------------------------------------------------


def test_settings_list_invalid_names_accounts_whose_latest_record_was_rejected(topics: Topics) -> None:
    topics.create(only=[topics.settings])
    ok(sput(topics, "acct1", "--identity-type", "user", "--state", "limited"))
    ok(sput(topics, "acct3", "--identity-type", "user", "--state", "monitor"))
    bad_state = json.dumps({"account_id": "acct1", "external_account_identity_interaction": {
        "identity_types": {"user": {"state": "strict"}}}}).encode()
    produce(topics.bootstrap, topics.settings, [
        (b"acct1", bad_state),         # offset 2: rejected, the valid version at 0 stays in force
        (b"acct2", b"{not json"),      # offset 3: rejected, nothing valid for acct2 at all
        (b"acct4", b"{not json"),      # offset 4: rejected, then replaced by a valid record
    ])
    ok(sput(topics, "acct4", "--identity-type", "service", "--state", "monitor"))
    base = ("settings", "list", "--bootstrap-servers", topics.bootstrap, "--settings-topic", topics.settings,
            "--invalid")

    got = json.loads(ok(ae(*base, "--format", "json")))
    assert [r["account_id"] for r in got] == ["acct1", "acct2"]
    acct1, acct2 = got
    assert acct1["reason"] == "invalid_value" and "user" in acct1["detail"] and "state" in acct1["detail"]
    assert (acct1["topic"], acct1["partition"], acct1["offset"]) == (topics.settings, 0, 2)
    assert acct1["has_valid_version"] is True
    assert acct2["reason"] == "bad_json" and acct2["offset"] == 3 and acct2["has_valid_version"] is False

    table = ok(ae(*base))
    for needle in ("acct1", "acct2", "invalid_value", "bad_json", "valid version"):
        assert needle in table
    assert "acct3" not in table and "acct4" not in table

    topics2 = Topics.for_test(topics.bootstrap, "list-invalid-clean")
    try:
        topics2.create(only=[topics2.settings])
        ok(sput(topics2, "acct9", "--identity-type", "user", "--state", "limited"))
        clean = ("settings", "list", "--bootstrap-servers", topics.bootstrap, "--settings-topic", topics2.settings,
                 "--invalid")
        assert json.loads(ok(ae(*clean, "--format", "json"))) == []
        assert "no account" in ok(ae(*clean))
    finally:
        topics2.delete()


# --- 19: report de-duplicates and states what the data covers ---------------------------------------


def test_report_counts_each_event_once_and_states_the_period_covered(topics: Topics) -> None:
    topics.create(partitions=2, only=[topics.evals], config={"retention.ms": str(2 * DAY)})
    now = int(time.time() * 1000)
    acct = "dup-acct"
    events = [
        make_event(1, acct, "ext-a", "user", "u1", "monitor", "Deny", now - 5 * HOUR),
        make_event(2, acct, "ext-a", "user", "u2", "monitor", "Deny", now - 3 * HOUR),
        make_event(3, acct, "ext-b", "service", "s1", "monitor", "Deny", now - 2 * HOUR),
        make_event(4, acct, "ext-b", "user", "u3", "monitor", "Permit", now - HOUR),
    ]
    produce_events(topics.bootstrap, topics.evals, events)
    produce_events(topics.bootstrap, topics.evals, events[:3])  # a replay / producer retry: same ids again
    base = ("report", "--bootstrap-servers", topics.bootstrap, "--eval-topic", topics.evals,
            "--settings-topic", topics.settings, "--account", acct)

    got = json.loads(ok(ae(*base, "--since", "1d", "--format", "json")))
    assert got["would_be_denies"] == 3 and got["report_only_permits"] == 1
    assert [(e["account_id"], e["attempts"]) for e in got["external_accounts"]] == [("ext-a", 2), ("ext-b", 1)]
    assert got["duplicate_events"] == 3
    assert got["covered_from"] == rfc3339_millis(now - 5 * HOUR)
    assert got["covered_to"] == rfc3339_millis(now - HOUR)
    assert got["warnings"] == []

    # The topic keeps 2 days: a 30-day report must say so instead of claiming 30 days of evidence.
    got = json.loads(ok(ae(*base, "--since", "30d", "--format", "json")))
    assert got["would_be_denies"] == 3
    assert len(got["warnings"]) == 1
    warning = got["warnings"][0]
    assert "retention.ms" in warning and "2 days" in warning and topics.evals in warning
    assert "2 days" in got["verdict"]

    table = ok(ae(*base, "--since", "30d"))
    assert f"data covers {rfc3339_millis(now - 5 * HOUR)} .. {rfc3339_millis(now - HOUR)}" in table
    assert "warning: " in table and "retention.ms" in table


def test_report_and_tail_match_record_keys_with_the_one_normaliser(topics: Topics) -> None:
    topics.create(partitions=1, only=[topics.evals])
    now = int(time.time() * 1000)
    codec = EvalCodec()
    event = make_event(1, "ACCT-N", "ext-a", "user", "u1", "monitor", "Deny", now - HOUR)
    # A key that is the account id after trimming Unicode White_Space (U+00A0) and lower-casing.
    produce(topics.bootstrap, topics.evals, [("\u00a0ACCT-N\u2003".encode(), codec.encode(event))])
    got = json.loads(ok(ae("report", "--bootstrap-servers", topics.bootstrap, "--eval-topic", topics.evals,
                           "--settings-topic", topics.settings, "--account", "acct-n", "--format", "json")))
    assert got["would_be_denies"] == 1
    out = ok(ae("tail", "--bootstrap-servers", topics.bootstrap, "--eval-topic", topics.evals, "--from-beginning",
                "--account", "acct-n"))
    assert [json.loads(x)["attemptId"] for x in out.splitlines()] == ["att-1"]


def test_run_create_topics_gives_the_eval_topic_an_explicit_retention(topics: Topics, tmp_path: Path) -> None:
    assert RunConfig(bootstrap_servers="x").eval_retention_ms == 35 * DAY
    assert "--eval-retention-ms" in ok(ae("run", "--help"))
    proc = start_processor(topics, tmp_path, "--create-topics", "--topic-partitions", "1",
                           env={"ACCESS_EVAL_EVAL_RETENTION_MS": str(40 * DAY)})
    try:
        proc.wait_ready()
    finally:
        topics.created.extend(n for n in topics.names if n not in topics.created)
        assert proc.terminate() == 0, proc.log()
    assert topic_config(topics.bootstrap, topics.evals, "retention.ms") == str(40 * DAY)
    assert topic_config(topics.bootstrap, topics.settings, "cleanup.policy") == "compact"


# --- 20: Confluent-framed events need the registry ---------------------------------------------------


def test_confluent_framed_events_without_a_registry_are_refused_per_message(topics: Topics) -> None:
    topics.create(partitions=1, only=[topics.evals])
    now = int(time.time() * 1000)
    framed = EvalCodec(schema_id=42)
    produce_events(topics.bootstrap, topics.evals, [make_event(1, "t1", "e1", "user", "u", "monitor", "Deny", now)])
    produce_events(topics.bootstrap, topics.evals, [make_event(2, "t1", "e1", "user", "u", "monitor", "Deny", now),
                                                    make_event(3, "t1", "e1", "user", "u", "monitor", "Deny", now)],
                   codec=framed)
    proc = ae("tail", "--bootstrap-servers", topics.bootstrap, "--eval-topic", topics.evals, "--from-beginning")
    assert [json.loads(x)["attemptId"] for x in ok(proc).splitlines()] == ["att-1"]
    lines = [x for x in proc.stderr.splitlines() if "--schema-registry-url" in x]
    assert [("@ 1" in lines[0]), ("@ 2" in lines[1])] == [True, True], proc.stderr
    assert "2 of 3 events" in proc.stderr  # the summary

    got = json.loads(ok(ae("report", "--bootstrap-servers", topics.bootstrap, "--eval-topic", topics.evals,
                           "--settings-topic", topics.settings, "--account", "t1", "--format", "json")))
    assert got["would_be_denies"] == 1 and got["undecodable_events"] == 2
    assert any("--schema-registry-url" in w for w in got["warnings"])

    # Nothing decodable at all: exit 1 (not an empty result that looks like "no events").
    only_framed = Topics.for_test(topics.bootstrap, "only-framed")
    try:
        only_framed.create(partitions=1, only=[only_framed.evals])
        produce_events(topics.bootstrap, only_framed.evals,
                       [make_event(5, "t1", "e1", "user", "u", "monitor", "Deny", now)], codec=framed)
        proc = ae("tail", "--bootstrap-servers", topics.bootstrap, "--eval-topic", only_framed.evals,
                  "--from-beginning")
        assert proc.returncode == 1 and proc.stdout == "", proc
        assert "--schema-registry-url" in proc.stderr and "Traceback" not in proc.stderr
        proc = ae("report", "--bootstrap-servers", topics.bootstrap, "--eval-topic", only_framed.evals,
                  "--settings-topic", topics.settings, "--account", "t1", "--format", "json")
        assert proc.returncode == 1 and proc.stdout == "", proc
        assert "--schema-registry-url" in proc.stderr
    finally:
        only_framed.delete()


# --- 21: demo against a cluster it did not start ----------------------------------------------------

DEMO_TOPICS = ("access-eval-demo.iam.account-settings", "access-eval-demo.iam.access-attempts",
               "access-eval-demo.iam.access-evaluations", "access-eval-demo.iam.access-attempts.dlq")
PRODUCTION_TOPICS = ("iam.account-settings", "iam.access-attempts", "iam.access-evaluations",
                     "iam.access-attempts.dlq")


def test_demo_on_a_foreign_cluster_needs_confirmation_and_uses_demo_topics(kafka: Any) -> None:
    assert not existing_topics(kafka.bootstrap) & {*DEMO_TOPICS, *PRODUCTION_TOPICS}
    proc = run_cli("demo", "--bootstrap-servers", kafka.bootstrap, "--duration", "1", "--metrics-port", "0")
    one_line_error(proc, 2, "--yes")
    assert not existing_topics(kafka.bootstrap) & {*DEMO_TOPICS, *PRODUCTION_TOPICS}, "nothing created without --yes"

    proc = run_cli("demo", "--bootstrap-servers", kafka.bootstrap, "--duration", "2", "--metrics-port", "0", "--yes")
    assert proc.returncode == 0, proc
    after = existing_topics(kafka.bootstrap)
    assert set(DEMO_TOPICS) <= after
    assert not after & set(PRODUCTION_TOPICS), "the demo wrote to the production topic names"
    assert sum(end_offsets(kafka.bootstrap, DEMO_TOPICS[0]).values()) > 0
    assert "access-eval-demo.iam.access-evaluations" in proc.stdout
    admin = AdminClient({"bootstrap.servers": kafka.bootstrap})
    for future in admin.delete_topics(list(DEMO_TOPICS), operation_timeout=30).values():
        future.result(timeout=30)
    wait_until(lambda: not existing_topics(kafka.bootstrap) & set(DEMO_TOPICS), 30, "demo topics deleted")


# --- 22: librdkafka's own log lines -----------------------------------------------------------------


def test_every_kafka_client_is_configured_by_clients_py() -> None:
    """Every Consumer/Producer/AdminClient built in processor/ takes its configuration from
    `processor.kafka.clients` (which routes librdkafka's log lines to the Python logger). The one client
    built inside that module is its own property probe (`check_properties`: never connects, its own
    silent logger)."""
    offenders = []
    for path in (REPO / "processor").rglob("*.py"):
        if path == REPO / "processor" / "kafka" / "clients.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in (
                    "Consumer", "Producer", "AdminClient"):
                arg = node.args[0] if node.args else None
                if not (isinstance(arg, ast.Call) and isinstance(arg.func, ast.Attribute)
                        and isinstance(arg.func.value, ast.Name) and arg.func.value.id == "clients"):
                    offenders.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert offenders == []


def test_librdkafka_lines_are_json_in_run_and_never_raw_on_a_terminal(topics: Topics) -> None:
    topics.create(partitions=1)
    half_down = dataclasses.replace(topics, bootstrap=f"{topics.bootstrap},127.0.0.1:{free_port()}")

    # run: librdkafka's own complaint about an unreachable broker is a JSON log record at its level.
    dead = f"127.0.0.1:{free_port()}"
    run = run_cli("run", "--bootstrap-servers", dead, "--startup-timeout-s", "3", "--metrics-host", "127.0.0.1",
                  "--metrics-port", "0", "--group-id", topics.group, "--settings-topic", topics.settings,
                  "--attempts-topic", topics.attempts, "--eval-topic", topics.evals, "--dlq-topic", topics.dlq)
    assert run.returncode == 2, run
    records = [json.loads(line) for line in run.stderr.splitlines()]  # every line is JSON, none raw
    from_librdkafka = [r for r in records if r["logger"] == "access_eval.librdkafka"]
    assert from_librdkafka, run.stderr
    assert all(r["level"] in ("warning", "error") for r in from_librdkafka)
    assert any(dead in r["msg"] and "Connection refused" in r["msg"] for r in from_librdkafka)

    # the demo and the tools: quiet (their own one-line messages only), nothing raw.
    demo = run_cli("demo", "--bootstrap-servers", half_down.bootstrap, "--duration", "5", "--metrics-port", "0",
                   "--yes", "--settings-topic", topics.settings, "--attempts-topic", topics.attempts,
                   "--eval-topic", topics.evals, "--dlq-topic", topics.dlq)
    assert demo.returncode == 0, demo
    tail = run_cli("tail", "--bootstrap-servers", half_down.bootstrap, "--eval-topic", topics.evals,
                   "--from-beginning", "--limit", "1")
    assert tail.returncode == 0, tail
    for proc_ in (demo, tail):
        raw = [x for x in (proc_.stdout + proc_.stderr).splitlines() if x.startswith("%")]
        assert raw == []
        assert "Connection refused" not in proc_.stderr, proc_.stderr
    assert sum(end_offsets(topics.bootstrap, topics.settings).values()) > 0, "demo used --settings-topic"

    # A tool on an unreachable cluster: one line of its own; librdkafka's lines only with DEBUG.
    quiet = run_cli("tail", "--bootstrap-servers", dead, "--eval-topic", topics.evals, "--timeout", "2")
    one_line_error(quiet, 1, "cannot reach Kafka")
    debug = run_cli("tail", "--bootstrap-servers", dead, "--eval-topic", topics.evals, "--timeout", "2",
                    env={"ACCESS_EVAL_LOG_LEVEL": "DEBUG"})
    assert debug.returncode == 1, debug
    assert not any(x.startswith("%") for x in debug.stderr.splitlines())
    assert len([x for x in debug.stderr.splitlines() if "Connection refused" in x]) >= 2, debug.stderr


def test_demo_refuses_on_a_terminal_answer_other_than_yes(kafka: Any) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACCESS_EVAL_")}
    code, prompt, _rest = answer_on_a_terminal(
        ["demo", "--bootstrap-servers", kafka.bootstrap, "--duration", "1", "--metrics-port", "0"], "n", env=env)
    assert "access-eval-demo.iam.account-settings" in prompt and kafka.bootstrap in prompt
    assert code == 1
    assert not existing_topics(kafka.bootstrap) & {*DEMO_TOPICS, *PRODUCTION_TOPICS}


_ = pytest  # fixtures come from conftest.py
