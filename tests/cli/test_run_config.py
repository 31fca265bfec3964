"""Configuration of `access-eval run` (README "Configuration", docs/configuration.md): every flag also
reads ACCESS_EVAL_<FLAG>, flags win, a bad value exits 2 naming the flag and the variable,
`--kafka-config FILE`, `--create-topics`, and the limits wired into the real process."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.admin import ConfigResource

from processor import config as run_config
from processor.cli.main import build_parser, main
from processor.config import RunConfig, load
from processor.stream import app
from tests.stream.test_pipeline import attempt, doc
from tests.support.kafka_harness import Topics, free_port, wait_until
from tests.support.processor_harness import (
    REPO,
    RunningProcessor,
    produce,
    read_evals,
    read_topic,
    settings_record,
    wait_all_committed,
)

CONSOLE_SCRIPT = REPO / ".venv" / "bin" / "access-eval"

#: A valid non-default value for every RunConfig field, as the environment would spell it, and the
#: parsed value. Adding a flag without adding it here fails test_every_field_is_covered.
ENV_VALUES: dict[str, tuple[str, Any]] = {
    "bootstrap_servers": ("env-host:1", "env-host:1"),
    "group_id": ("env-group", "env-group"),
    "settings_topic": ("env.settings", "env.settings"),
    "attempts_topic": ("env.attempts", "env.attempts"),
    "eval_topic": ("env.evals", "env.evals"),
    "dlq_topic": ("env.dlq", "env.dlq"),
    "metrics_host": ("127.0.0.9", "127.0.0.9"),
    "metrics_port": ("9999", 9999),
    "create_topics": ("true", True),
    "topic_partitions": ("7", 7),
    "kafka_config": ("<file>", "<file>"),
    "delivery": ("at-least-once", "at-least-once"),
    "staleness_ms": ("777", 777),
    "settings_retention_ms": ("5000", 5000),
    "batch_size": ("42", 42),
    "commit_interval_ms": ("9", 9),
    "max_future_ms": ("11", 11),
    "max_attempt_bytes": ("2048", 2048),
    "schema_registry_url": ("http://registry.example:8081", "http://registry.example:8081"),
    "account_labels": ("a1,a2", "a1,a2"),
    "log_level": ("debug", "DEBUG"),
    "shutdown_timeout_s": ("3.5", 3.5),
    "startup_timeout_s": ("4.5", 4.5),
    "transactional_id": ("env-txn", "env-txn"),
    "liveness_bound_s": ("30", 30.0),
    "eval_retention_ms": ("7200000", 7_200_000),
    "state_dir": ("<dir>", "<dir>"),
}

#: The same fields given as flags (other values), to check that flags win.
FLAG_VALUES: dict[str, tuple[str, Any]] = {
    "bootstrap_servers": ("flag-host:2", "flag-host:2"),
    "group_id": ("flag-group", "flag-group"),
    "settings_topic": ("flag.settings", "flag.settings"),
    "attempts_topic": ("flag.attempts", "flag.attempts"),
    "eval_topic": ("flag.evals", "flag.evals"),
    "dlq_topic": ("flag.dlq", "flag.dlq"),
    "metrics_host": ("127.0.0.8", "127.0.0.8"),
    "metrics_port": ("8888", 8888),
    "topic_partitions": ("3", 3),
    "kafka_config": ("<file2>", "<file2>"),
    "delivery": ("exactly-once", "exactly-once"),
    "staleness_ms": ("333", 333),
    "settings_retention_ms": ("6000", 6000),
    "batch_size": ("24", 24),
    "commit_interval_ms": ("8", 8),
    "max_future_ms": ("12", 12),
    "max_attempt_bytes": ("4096", 4096),
    "schema_registry_url": ("http://flag.example:8081", "http://flag.example:8081"),
    "account_labels": ("b1", "b1"),
    "log_level": ("ERROR", "ERROR"),
    "shutdown_timeout_s": ("1.5", 1.5),
    "startup_timeout_s": ("2.5", 2.5),
    "transactional_id": ("flag-txn", "flag-txn"),
    "liveness_bound_s": ("45", 45.0),
    "eval_retention_ms": ("10800000", 10_800_000),
    "state_dir": ("<dir2>", "<dir2>"),
}


#: The fields holding a path.
PATHS = {"kafka_config", "state_dir"}


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def env_name(name: str) -> str:
    return "ACCESS_EVAL_" + name.upper()


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in list(os.environ):
        if name.startswith("ACCESS_EVAL_"):
            monkeypatch.delenv(name)
    return monkeypatch


def _resolve(value: str, tmp_path: Path) -> str:
    if value.startswith("<dir"):
        return str(tmp_path / value.strip("<>"))  # created by the check
    if value.startswith("<file"):
        path = tmp_path / f"{value.strip('<>')}.properties"
        path.write_text("client.id=from-file\n")
        return str(path)
    return value


def run_flags(argv: list[str]) -> dict[str, Any]:
    args = build_parser().parse_args(["run", *argv])
    return {k: v for k, v in vars(args).items() if k not in ("func", "command")}


def test_every_field_is_covered_and_every_field_is_a_run_flag() -> None:
    fields = set(RunConfig.model_fields)
    assert set(ENV_VALUES) == fields, f"fields without an env test value: {fields ^ set(ENV_VALUES)}"
    assert set(run_flags([])) == fields, f"flags and RunConfig fields differ: {set(run_flags([])) ^ fields}"
    assert set(FLAG_VALUES) == fields - {"create_topics"}  # a switch: it has no other value to win with


def test_every_variable_is_read(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name, (raw, _) in ENV_VALUES.items():
        clean_env.setenv(env_name(name), _resolve(raw, tmp_path))
    cfg = load(run_flags([]))
    for name, (raw, parsed) in ENV_VALUES.items():
        want = Path(_resolve(raw, tmp_path)) if name in PATHS else parsed
        assert getattr(cfg, name) == want, f"{env_name(name)}={raw!r} gave {name}={getattr(cfg, name)!r}"
    assert cfg.kafka_properties()["client.id"] == "from-file"


def test_flags_win_over_variables(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name, (raw, _) in ENV_VALUES.items():
        clean_env.setenv(env_name(name), _resolve(raw, tmp_path))
    argv: list[str] = []
    for name, (raw, _) in FLAG_VALUES.items():
        argv += [flag(name), _resolve(raw, tmp_path)]
    cfg = load(run_flags(argv))
    for name, (raw, parsed) in FLAG_VALUES.items():
        want = Path(_resolve(raw, tmp_path)) if name in PATHS else parsed
        assert getattr(cfg, name) == want, f"{flag(name)} {raw} lost against {env_name(name)}"
    assert cfg.create_topics is True  # from the variable: the flag was not given


def test_unset_switch_does_not_override_the_variable(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("ACCESS_EVAL_CREATE_TOPICS", "true")
    assert load(run_flags(["--bootstrap-servers", "h:1"])).create_topics is True
    clean_env.setenv("ACCESS_EVAL_CREATE_TOPICS", "false")
    assert load(run_flags(["--bootstrap-servers", "h:1", "--create-topics"])).create_topics is True


@pytest.mark.parametrize(("name", "bad"), [
    ("staleness_ms", "abc"), ("staleness_ms", "5"), ("metrics_port", "70000"), ("delivery", "twice"),
    ("batch_size", "0"), ("log_level", "chatty"), ("max_attempt_bytes", "10"), ("topic_partitions", "-1"),
    ("shutdown_timeout_s", "0"), ("create_topics", "perhaps"),
])
def test_bad_variable_exits_2_naming_flag_and_variable(clean_env: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str], name: str, bad: str) -> None:
    clean_env.setenv("ACCESS_EVAL_BOOTSTRAP_SERVERS", "127.0.0.1:1")
    clean_env.setenv(env_name(name), bad)
    assert app.run(run_flags([])) == 2
    err = capsys.readouterr().err
    assert flag(name) in err and env_name(name) in err, err
    assert err.count("\n") == 1, f"one line expected: {err!r}"


def test_unreadable_kafka_config_exits_2(clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                                         tmp_path: Path) -> None:
    assert app.run(run_flags(["--bootstrap-servers", "h:1", "--kafka-config", str(tmp_path / "none")])) == 2
    err = capsys.readouterr().err
    assert "--kafka-config" in err and "ACCESS_EVAL_KAFKA_CONFIG" in err, err
    bad = tmp_path / "bad.properties"
    bad.write_text("# comment\nclient.id=x\nno separator here\n")
    assert app.run(run_flags(["--bootstrap-servers", "h:1", "--kafka-config", str(bad)])) == 2
    assert f"{bad}:3" in capsys.readouterr().err


def test_state_dir_is_created_or_exits_2_naming_it(clean_env: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    made = tmp_path / "a" / "state"
    assert load({"bootstrap_servers": "h:1", "state_dir": str(made)}).state_dir == made and made.is_dir()
    blocker = tmp_path / "file"
    blocker.write_text("")
    for bad in (blocker, blocker / "state"):  # a file, and a directory that cannot be created
        assert app.run(run_flags(["--bootstrap-servers", "h:1", "--state-dir", str(bad)])) == 2
        err = capsys.readouterr().err
        assert "--state-dir" in err and "ACCESS_EVAL_STATE_DIR" in err and err.count("\n") == 1, err


def test_kafka_config_file_then_variables(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = tmp_path / "client.properties"
    path.write_text("! java style\nclient.id = from-file\nsocket.timeout.ms: 1234\n"
                    "schema.registry.basic.auth.user.info=u:p\nbasic.auth.user.info=u:p\n")
    clean_env.setenv("ACCESS_EVAL_KAFKA_SOCKET_TIMEOUT_MS", "4321")
    cfg = load({"bootstrap_servers": "h:1", "kafka_config": str(path)})
    props = cfg.kafka_properties()
    assert props["client.id"] == "from-file" and props["socket.timeout.ms"] == "4321"
    assert props["bootstrap.servers"] == "h:1"
    assert not any("basic.auth" in k for k in props), "registry options must not reach librdkafka"
    assert run_config.ENV_PREFIX == "ACCESS_EVAL_"


def test_bad_variable_through_the_console_script_exits_2(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACCESS_EVAL_")}
    env |= {"ACCESS_EVAL_BOOTSTRAP_SERVERS": "127.0.0.1:1", "ACCESS_EVAL_STALENESS_MS": "soon"}
    r = subprocess.run([str(CONSOLE_SCRIPT), "run"], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2, r.stderr
    assert "--staleness-ms" in r.stderr and "ACCESS_EVAL_STALENESS_MS" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr


def _launch(topics: Topics, tmp_path: Path, args: list[str], env_extra: dict[str, str]) -> RunningProcessor:
    """The installed `access-eval` console script, configured through variables plus `args`."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACCESS_EVAL_")}
    env |= {
        "ACCESS_EVAL_BOOTSTRAP_SERVERS": topics.bootstrap,
        "ACCESS_EVAL_GROUP_ID": topics.group,
        "ACCESS_EVAL_SETTINGS_TOPIC": topics.settings,
        "ACCESS_EVAL_ATTEMPTS_TOPIC": topics.attempts,
        "ACCESS_EVAL_EVAL_TOPIC": topics.evals,
        "ACCESS_EVAL_DLQ_TOPIC": topics.dlq,
        "ACCESS_EVAL_METRICS_HOST": "127.0.0.1",
        "ACCESS_EVAL_METRICS_PORT": str(port),
        "ACCESS_EVAL_COMMIT_INTERVAL_MS": "50",
        "ACCESS_EVAL_TRANSACTIONAL_ID": f"{topics.group}-cfg",
        **env_extra,
    }
    log_path = tmp_path / f"run-{time.time_ns()}.log"
    with log_path.open("wb") as fh:
        proc = subprocess.Popen([str(CONSOLE_SCRIPT), "run", *args], stdout=fh, stderr=subprocess.STDOUT,
                                env=env, cwd=tmp_path)
    return RunningProcessor(proc, port, log_path)


@pytest.mark.kafka
def test_create_topics_kafka_config_and_flag_over_variable_in_the_real_process(topics: Topics,
                                                                               tmp_path: Path) -> None:
    client_id = f"cfg-{time.time_ns()}"
    props = tmp_path / "client.properties"
    props.write_text(f"# from --kafka-config\nclient.id={client_id}\n")
    wrong_evals = topics.evals + ".wrong"
    topics.created += topics.names  # the processor creates them; the fixture deletes them
    p = _launch(topics, tmp_path, ["--eval-topic", topics.evals], {
        "ACCESS_EVAL_EVAL_TOPIC": wrong_evals,  # the flag wins
        "ACCESS_EVAL_CREATE_TOPICS": "true",
        "ACCESS_EVAL_TOPIC_PARTITIONS": "5",
        "ACCESS_EVAL_KAFKA_CONFIG": str(props),
    })
    try:
        p.wait_ready()
        admin = topics.admin()
        md = admin.list_topics(timeout=10).topics
        assert wrong_evals not in md, "the variable won over --eval-topic"
        assert {t: len(md[t].partitions) for t in topics.names} == {
            topics.settings: 1, topics.attempts: 5, topics.evals: 5, topics.dlq: 5}
        res = ConfigResource(ConfigResource.Type.TOPIC, topics.settings)
        cfg = next(iter(admin.describe_configs([res]).values())).result(timeout=10)
        assert cfg["cleanup.policy"].value == "compact"

        def member_client_ids() -> list[str]:
            desc = admin.describe_consumer_groups([topics.group])[topics.group].result(timeout=10)
            return [m.client_id for m in desc.members]

        assert wait_until(member_client_ids, 30, "the group to have a member") == [client_id]
    finally:
        assert p.terminate() == 0, p.log()


@pytest.mark.kafka
def test_max_future_max_attempt_bytes_and_settings_retention_in_the_real_process(topics: Topics,
                                                                                 tmp_path: Path) -> None:
    topics.create(partitions=1)
    p = _launch(topics, tmp_path, ["--max-future-ms", "60000", "--max-attempt-bytes", "2048"],
                {"ACCESS_EVAL_SETTINGS_RETENTION_MS": "1000"})
    try:
        p.wait_ready()
        now = int(time.time() * 1000)
        produce(topics.bootstrap, topics.settings, [
            settings_record(doc("acct-r", "monitor", [], now - 60_000)),
            settings_record(doc("acct-r", "limited", [], now - 30_000)),
            settings_record(doc("acct-m", "monitor", [])),
        ])
        wait_until(lambda: p.metric("access_eval_settings_records_total") == 3, 30, "settings applied")
        big = json.loads(attempt("big", "acct-m", "ext", now)[1])
        big["padding"] = "x" * 3000
        fits = json.loads(attempt("fits", "acct-m", "ext", now)[1])
        fits["padding"] = "x" * 1500
        produce(topics.bootstrap, topics.attempts, [
            attempt("near-future", "acct-m", "ext", now + 30_000),
            attempt("far-future", "acct-m", "ext", now + 600_000),  # within the default hour, not the flag's
            (b"acct-m", json.dumps(big).encode()),  # over --max-attempt-bytes, far under the default 256 KiB
            (b"acct-m", json.dumps(fits).encode()),
        ])
        # Same partition, in order: the first moves stream time to now, which with a 1 s retention drops
        # the version that was in force 45 s ago (the default 24 h would keep it).
        produce(topics.bootstrap, topics.attempts, [attempt("now", "acct-r", "ext", now),
                                                    attempt("then", "acct-r", "ext", now - 45_000)])
        wait_all_committed(topics.bootstrap, topics.group, topics.attempts)
    finally:
        assert p.terminate() == 0, p.log()
    events = {e["attemptId"]: e["responseData"] for _, e in read_evals(topics.bootstrap, topics.evals)}
    dlq = {json.loads(m.value()).get("id"): dict(m.headers())["error.reason"].decode()
           for m in read_topic(topics.bootstrap, topics.dlq)}
    assert dlq == {"att-far-future": "bad_timestamp", "att-big": "oversize"}, dlq
    assert {"att-near-future", "att-fits", "att-now", "att-then"} == set(events), events
    then = events["att-then"]
    assert then["state"] == "limited" and then["settingsVersion"]["exact"] is False, (
        f"--settings-retention-ms 1000 did not drop the older version: {then}")


@pytest.mark.parametrize(("argv", "named"), [
    (["--dlq-topic", "iam.access-attempts"], ["--dlq-topic", "--attempts-topic"]),
    (["--eval-topic", "t", "--attempts-topic", "t"], ["--eval-topic", "--attempts-topic"]),
    (["--eval-topic", "t", "--dlq-topic", "t"], ["--eval-topic", "--dlq-topic"]),
    (["--settings-topic", "t", "--dlq-topic", "t"], ["--settings-topic", "--dlq-topic"]),
    (["--settings-topic", "t", "--attempts-topic", "t"], ["--settings-topic", "--attempts-topic"]),
])
def test_one_topic_in_two_roles_exits_2_naming_both_flags(clean_env: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str],
                                                          argv: list[str], named: list[str]) -> None:
    """Issue 23: with --dlq-topic equal to --attempts-topic every dead letter would be read back as input
    (and with --eval-topic, every event): a topic may serve one role only."""
    assert app.run(run_flags(["--bootstrap-servers", "127.0.0.1:1", "--startup-timeout-s", "1", *argv])) == 2
    err = capsys.readouterr().err
    assert all(f in err for f in named), err
    assert err.count("\n") == 1, f"one line expected: {err!r}"


@pytest.mark.parametrize(("interval_ms", "timeout_ms", "ok"), [
    (90_000, None, False), (30_000, None, False), (29_999, None, True),
    (20_000, "30000", False), (50, "30000", True),
])
def test_commit_interval_must_fit_the_transaction_timeout(clean_env: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str], interval_ms: int,
                                                          timeout_ms: str | None, ok: bool) -> None:
    """Issue 23: a commit interval near or over transaction.timeout.ms (60 s unless overridden) lets the
    broker abort every transaction at low traffic; the process then looked fenced ("shared transactional
    id"). Refused at start-up (exit 2) naming both settings; at-least-once has no transactions."""
    if timeout_ms is not None:
        clean_env.setenv("ACCESS_EVAL_KAFKA_TRANSACTION_TIMEOUT_MS", timeout_ms)
    flags = run_flags(["--bootstrap-servers", "127.0.0.1:1", "--startup-timeout-s", "1",
                       "--commit-interval-ms", str(interval_ms)])
    if ok:
        assert load(flags).commit_interval_ms == interval_ms
        return
    assert app.run(flags) == 2
    err = capsys.readouterr().err
    assert "--commit-interval-ms" in err and "transaction.timeout.ms" in err, err
    assert "ACCESS_EVAL_KAFKA_TRANSACTION_TIMEOUT_MS" in err and err.count("\n") == 1, err
    assert load({**flags, "delivery": "at-least-once"}).commit_interval_ms == interval_ms


@pytest.mark.parametrize(("variable", "value", "named"), [
    ("ACCESS_EVAL_KAFKA_SASL_JAAS_CONFIG",
     'org.apache.kafka.common.security.plain.PlainLoginModule required username="u" password="hunter2";',
     "sasl.jaas.config"),
    ("ACCESS_EVAL_KAFKA_BOGUS_THING", "hunter2", "bogus.thing"),
    ("ACCESS_EVAL_KAFKA_FETCH_MIN_BYTES", "hunter2", "fetch.min.bytes"),
])
def test_a_property_librdkafka_rejects_exits_2_naming_it(clean_env: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str],
                                                         variable: str, value: str, named: str) -> None:
    """Contract §8: one line naming the property (and its variable), no traceback, no value."""
    clean_env.setenv(variable, value)
    assert main(["run", "--bootstrap-servers", "127.0.0.1:1", "--metrics-port", "0", "--startup-timeout-s", "1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, f"one line expected: {err!r}"
    assert named in err and variable in err and "Traceback" not in err, err
    assert "hunter2" not in err


@pytest.mark.parametrize("command", [["tail"], ["report", "--account", "acct-a"], ["settings", "list"]])
def test_the_operator_tools_name_a_refused_property_too(clean_env: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str], command: list[str]) -> None:
    clean_env.setenv("ACCESS_EVAL_KAFKA_SASL_JAAS_CONFIG", 'x required username="u" password="hunter2";')
    assert main([*command, "--bootstrap-servers", "127.0.0.1:1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "sasl.jaas.config" in err and "hunter2" not in err, err
