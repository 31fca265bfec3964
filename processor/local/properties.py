"""The broker's configuration (single-node KRaft `server.properties`) and its formatted storage."""

from __future__ import annotations

import base64
import subprocess
import uuid
from pathlib import Path

from processor.errors import LocalKafkaError
from processor.local.java import LOG_OPTS
from processor.local.paths import tail_log

HOST = "127.0.0.1"  # not "localhost": that may resolve to ::1 first while the broker listens on IPv4
DEFAULT_PORT = 9092
PROPERTIES_FILE = "server.properties"


def server_properties(data_dir: Path, port: int, controller_port: int) -> str:
    """Single-node KRaft config. The internal topics default to replication factor 3 / min ISR 2,
    which one node can never satisfy: consumer groups and transactions would hang, so all are 1."""
    props = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@{HOST}:{controller_port}",
        "listeners": f"PLAINTEXT://{HOST}:{port},CONTROLLER://{HOST}:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://{HOST}:{port}",
        "inter.broker.listener.name": "PLAINTEXT",
        "controller.listener.names": "CONTROLLER",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "log.dirs": str(data_dir / "logs"),
        "num.partitions": "1",
        "default.replication.factor": "1",
        "min.insync.replicas": "1",
        "auto.create.topics.enable": "false",
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "3",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "transaction.state.log.num.partitions": "3",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "share.coordinator.state.topic.num.partitions": "1",
        "group.initial.rebalance.delay.ms": "0",
        # Development and tests: members may ask for short sessions (the default floor is 6 s), so a
        # killed member's partitions move in seconds (tests/faults/test_faults.py uses 3 s).
        "group.min.session.timeout.ms": "1000",
        "num.network.threads": "2",
        "num.io.threads": "4",
    }
    header = "# Written by `access-eval local start` (processor/local/properties.py) on every start; edits are lost.\n"
    return header + "".join(f"{key}={value}\n" for key, value in props.items())


def cluster_id() -> str:
    """A KRaft cluster id: a random UUID as 22 chars of URL-safe base64 without padding, as Kafka's
    `Uuid.toString` makes it. Like Kafka's `Uuid.randomUuid`, avoid a leading '-' (it reads as an
    option on command lines)."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode("ascii").rstrip("=")
        if not text.startswith("-"):
            return text


def is_formatted(data_dir: Path) -> bool:
    return (data_dir / "logs" / "meta.properties").exists()


def format_command(java: str, libs: Path, data_dir: Path, kraft_cluster_id: str) -> list[str]:
    """Kafka's StorageTool formatting `data_dir` (its ``server.properties``) for the cluster id."""
    return [
        java,
        "-Xmx256m",
        "-XX:-UsePerfData",
        *LOG_OPTS,
        "-cp",
        f"{libs}/*",
        "kafka.tools.StorageTool",
        "format",
        "-t",
        kraft_cluster_id,
        "-c",
        str(data_dir / PROPERTIES_FILE),
    ]


def format_storage(java: str, libs: Path, data_dir: Path, log_path: Path) -> None:
    """Format the KRaft metadata log once per data dir (Kafka 4 refuses to start unformatted)."""
    if is_formatted(data_dir):
        return
    cmd = format_command(java, libs, data_dir, cluster_id())
    with log_path.open("ab") as log:
        offset = log.tell()
        try:
            result = subprocess.run(
                cmd, stdout=log, stderr=log, stdin=subprocess.DEVNULL, cwd=data_dir, timeout=120, check=False
            )
        except subprocess.TimeoutExpired as exc:
            raise LocalKafkaError(f"formatting Kafka storage in {data_dir} timed out") from exc
    if result.returncode != 0:
        raise LocalKafkaError(
            f"formatting Kafka storage in {data_dir} failed (exit {result.returncode}):\n"
            f"{tail_log(log_path, 30, offset)}"
        )
