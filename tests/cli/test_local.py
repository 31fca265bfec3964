"""The local broker (`access-eval local ...`) against real Kafka: no mocks.

The session broker (conftest `kafka`) proves produce/consume and transactions work with the
single-node settings; lifecycle tests use a second broker on their own port and data dir so the
session broker stays up for everyone else.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from processor import local
from processor.cli.main import build_parser  # plain import: the CLI exists
from processor.local import BrokerInfo, LocalKafkaError
from processor.local.java import parse_java_major
from processor.local.properties import cluster_id
from tests.support.kafka_harness import Topics, free_port, wait_until

REPO = Path(__file__).resolve().parents[2]

def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    """`access-eval <args>` in a subprocess, as scripts and users run it."""
    return subprocess.run(
        [sys.executable, "-m", "processor", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        env=env,
        check=False,
    )


def consume(consumer: Consumer, count: int, timeout: float) -> list[Message]:
    """Poll until `count` records arrived (errors other than partition EOF fail the test)."""
    received: list[Message] = []

    def got_all() -> bool:
        msg = consumer.poll(0.5)
        if msg is not None:
            error = msg.error()
            if error is None:
                received.append(msg)
            elif error.code() != KafkaError._PARTITION_EOF:
                raise AssertionError(f"consumer error: {error}")
        return len(received) >= count

    wait_until(got_all, timeout, f"{count} records")
    return received


def listening_socket(port: int) -> socket.socket:
    """Bind and listen like a server would (SO_REUSEADDR, as the JVM sets it)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen()
    return sock


# --------------------------------------------------------------------------------------------------
# The session broker


@pytest.mark.kafka
def test_produce_and_consume(kafka: BrokerInfo, topics: Topics) -> None:
    topics.create(partitions=1, only=[topics.attempts])
    producer = Producer({"bootstrap.servers": kafka.bootstrap, "enable.idempotence": True})
    delivered: list[Message] = []
    producer.produce(
        topics.attempts, key=b"acct-1", value=b'{"hello": 1}', on_delivery=lambda e, m: delivered.append(m)
    )
    assert producer.flush(30) == 0
    assert delivered and delivered[0].error() is None

    consumer = Consumer(
        {
            "bootstrap.servers": kafka.bootstrap,
            "group.id": topics.group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    try:
        consumer.subscribe([topics.attempts])
        [msg] = consume(consumer, 1, timeout=60)
        assert (msg.key(), msg.value()) == (b"acct-1", b'{"hello": 1}')
        # The group coordinator works (offsets topic with RF 1): committing an offset succeeds.
        committed = consumer.commit(message=msg, asynchronous=False)
        assert committed is not None and committed[0].offset == (msg.offset() or 0) + 1
    finally:
        consumer.close()


@pytest.mark.kafka
def test_transactions_and_read_committed(kafka: BrokerInfo, topics: Topics) -> None:
    """init/begin/commit only work when the transaction state topic can be created with RF 1 /
    min ISR 1; a read_committed reader must skip the aborted record and see the committed one."""
    topics.create(partitions=1, only=[topics.evals])
    producer = Producer({"bootstrap.servers": kafka.bootstrap, "transactional.id": f"{topics.group}.tx"})
    producer.init_transactions(60)
    producer.begin_transaction()
    producer.produce(topics.evals, key=b"acct", value=b"aborted")
    producer.abort_transaction(30)
    producer.begin_transaction()
    producer.produce(topics.evals, key=b"acct", value=b"committed")
    producer.commit_transaction(30)

    consumer = Consumer(
        {
            "bootstrap.servers": kafka.bootstrap,
            "group.id": topics.group,
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        }
    )
    try:
        consumer.assign([TopicPartition(topics.evals, 0, 0)])
        records: list[bytes | None] = []
        eof = False

        def read_to_end() -> bool:
            nonlocal eof
            msg = consumer.poll(0.5)
            if msg is None:
                return False
            error = msg.error()
            if error is not None:
                assert error.code() == KafkaError._PARTITION_EOF, str(error)
                eof = bool(records)
                return eof
            records.append(msg.value())
            return False

        wait_until(read_to_end, 60, "the committed record, then the end of the partition")
        assert records == [b"committed"]
    finally:
        consumer.close()


@pytest.mark.kafka
def test_cli_status_prints_bootstrap_of_running_broker(kafka: BrokerInfo) -> None:
    result = run_cli("local", "status", "--data-dir", str(kafka.data_dir))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "running" in lines
    assert f"bootstrap: {kafka.bootstrap}" in lines
    assert kafka.bootstrap == f"127.0.0.1:{kafka.port}"


@pytest.mark.kafka
def test_session_broker_settings_for_one_node(kafka: BrokerInfo) -> None:
    props = (kafka.data_dir / "server.properties").read_text().splitlines()
    for expected in (
        "offsets.topic.replication.factor=1",
        "transaction.state.log.replication.factor=1",
        "transaction.state.log.min.isr=1",
        "share.coordinator.state.topic.replication.factor=1",
        "share.coordinator.state.topic.min.isr=1",
        "group.initial.rebalance.delay.ms=0",
        "auto.create.topics.enable=false",
        f"listeners=PLAINTEXT://127.0.0.1:{kafka.port},CONTROLLER://127.0.0.1:"
        f"{json.loads((kafka.data_dir / 'broker.json').read_text())['controller_port']}",
    ):
        assert expected in props
    # Logs go to the data dir's broker.log through the slf4j binding (not silently nowhere).
    assert "INFO" in (kafka.data_dir / "broker.log").read_text(errors="replace")


# --------------------------------------------------------------------------------------------------
# Lifecycle, on a second broker


@pytest.fixture
def second_dir(tmp_path: Path) -> Iterator[Path]:
    data_dir = tmp_path / "second"
    yield data_dir
    local.stop(data_dir)  # whatever the test did, leave no broker behind


@pytest.mark.kafka
def test_lifecycle_start_twice_status_stop_restart(kafka: BrokerInfo, second_dir: Path) -> None:
    port = free_port(exclude=[kafka.port])
    assert local.status(second_dir) is None

    first = local.start(port=port, data_dir=second_dir)
    assert (first.host, first.port, first.data_dir) == ("127.0.0.1", port, second_dir.resolve())
    assert first.bootstrap == f"127.0.0.1:{port}"

    # start again, even with another --port: the running broker is reused, no second JVM
    again = local.start(port=free_port(exclude=[port, kafka.port]), data_dir=second_dir)
    assert again == first
    assert local.status(second_dir) == first

    result = run_cli("local", "start", "--port", str(port), "--data-dir", str(second_dir))
    assert result.returncode == 0, result.stderr
    assert f"bootstrap: 127.0.0.1:{port}" in result.stdout.splitlines()
    assert str(first.pid) in result.stdout

    result = run_cli("local", "status", "--data-dir", str(second_dir))
    assert result.returncode == 0
    assert result.stdout.splitlines()[:2] == ["running", f"bootstrap: 127.0.0.1:{port}"]

    # data survives a restart from the same data dir (no re-format)
    kept = Topics.for_test(first.bootstrap, "lifecycle")
    kept.create(partitions=1, only=[kept.attempts])

    assert local.stop(second_dir) is True
    assert local.status(second_dir) is None
    assert not (second_dir / "broker.json").exists()
    with listening_socket(port):  # the port is really free again
        pass
    assert local.stop(second_dir) is False

    result = run_cli("local", "status", "--data-dir", str(second_dir))
    assert result.returncode == 1
    assert result.stdout.splitlines() == ["stopped"]

    restarted = local.start(port=port, data_dir=second_dir)
    assert restarted.pid != first.pid
    after = AdminClient({"bootstrap.servers": restarted.bootstrap}).list_topics(timeout=10).topics
    assert kept.attempts in after

    result = run_cli("local", "stop", "--data-dir", str(second_dir))
    assert result.returncode == 0 and result.stdout.strip() == "stopped"
    assert local.status(second_dir) is None


@pytest.mark.kafka
def test_taken_port_gives_clear_error(tmp_path: Path) -> None:
    port = free_port()
    with listening_socket(port):
        with pytest.raises(LocalKafkaError) as excinfo:
            local.start(port=port, data_dir=tmp_path / "taken")
        message = str(excinfo.value)
        assert str(port) in message and "--port" in message

        result = run_cli("local", "start", "--port", str(port), "--data-dir", str(tmp_path / "taken"))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert str(port) in result.stderr and "--port" in result.stderr
    assert local.status(tmp_path / "taken") is None


def test_stale_state_file_is_cleaned_up(tmp_path: Path) -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    data_dir = tmp_path / "stale"
    data_dir.mkdir()
    (data_dir / "broker.json").write_text(
        json.dumps({"host": "127.0.0.1", "port": 1, "controller_port": 2, "pid": gone.pid})
    )
    assert local.status(data_dir) is None
    assert not (data_dir / "broker.json").exists()
    assert local.stop(data_dir) is False


def test_status_of_missing_data_dir(tmp_path: Path) -> None:
    result = run_cli("local", "status", "--data-dir", str(tmp_path / "nothing-here"))
    assert result.returncode == 1
    assert result.stdout.splitlines() == ["stopped"]
    assert not (tmp_path / "nothing-here").exists()


# --------------------------------------------------------------------------------------------------
# Jars and prerequisites


@pytest.mark.kafka
def test_fetch_reuses_complete_cache(kafka: BrokerInfo) -> None:
    libs = local.fetch_jars()
    names = {p.name for p in libs.glob("*.jar")}
    assert f"kafka_2.13-{local.KAFKA_VERSION}.jar" in names
    assert "slf4j-simple-1.7.36.jar" in names and "slf4j-api-1.7.36.jar" in names
    said: list[str] = []
    assert local.fetch_jars(progress=said.append) == libs
    assert said == []  # cached: no download, no output


def test_missing_mvn_and_java_are_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    empty_bin = tmp_path / "bin"
    empty_bin.mkdir()
    monkeypatch.setenv("PATH", str(empty_bin))
    monkeypatch.delenv("JAVA_HOME", raising=False)
    with pytest.raises(LocalKafkaError, match=r"mvn.*install"):
        local.fetch_jars(tmp_path / "cache")
    with pytest.raises(LocalKafkaError, match=r"Java 17\+.*install"):
        local.start(port=free_port(), data_dir=tmp_path / "data")

    env = {**os.environ, "PATH": str(empty_bin), "ACCESS_EVAL_KAFKA_CACHE": str(tmp_path / "cache")}
    env.pop("JAVA_HOME", None)
    result = run_cli("local", "fetch", env=env)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "mvn" in result.stderr and "install" in result.stderr


def test_java_version_parsing() -> None:
    parse = parse_java_major
    assert parse('openjdk version "17.0.15" 2025-04-15') == 17
    assert parse('java version "1.8.0_392"') == 8
    assert parse('openjdk version "21" 2023-09-19') == 21
    assert parse("garbage") is None


def test_cluster_id_shape() -> None:
    for _ in range(200):
        cid = cluster_id()
        assert len(cid) == 22 and not cid.startswith("-")
        assert set(cid) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def test_local_commands_are_registered_in_the_cli() -> None:
    for command in ("start", "stop", "status"):
        args = build_parser().parse_args(["local", command])
        assert callable(args.func)
