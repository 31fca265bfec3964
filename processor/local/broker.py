"""A real single-node Apache Kafka broker for development, demos and tests (`access-eval local ...`).

Why a real broker rather than a mock or a container: the processor's contract (SPEC §8) rests on
Kafka transactions, consumer-group rebalances and compacted topics; only the real broker proves
those. Containers are not available on every machine this project runs on, whereas a JVM and
Maven Central are, so the broker jars come from Maven Central through the machine's `mvn`
(`processor.local.fetch`) and run with the machine's `java` (17+), in KRaft mode (one process that is
both broker and controller).

This module starts, finds and stops that process. Its data dir (`processor.local.paths`) holds
``server.properties`` (`processor.local.properties`), the Kafka log dirs, ``broker.log`` and
``broker.json`` (pid, ports) that lets ``stop`` and ``status`` find the detached broker again from
another process.
"""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from processor.errors import LocalKafkaError
from processor.kafka import clients
from processor.local import cluster
from processor.local.fetch import KAFKA_VERSION, fetch_jars
from processor.local.java import JVM_OPTS, check_java
from processor.local.paths import (
    LOG_FILE,
    STATE_FILE,
    Progress,
    locked,
    resolve_data_dir,
    rotate_log,
    say_stderr,
    tail_log,
)
from processor.local.process import (
    children,
    free_port,
    live_state,
    port_free,
    port_taken_error,
    spawn_detached,
    terminate,
    wait_ports_free,
)
from processor.local.properties import DEFAULT_PORT, HOST, PROPERTIES_FILE, format_storage, server_properties

START_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 60.0

__all__ = ["DEFAULT_PORT", "LOG_FILE", "STATE_FILE", "BrokerInfo", "ready", "start", "status", "stop", "wait_ready"]


@dataclass(frozen=True)
class BrokerInfo:
    """Where a running local broker is, and which process it is."""

    host: str
    port: int
    pid: int
    data_dir: Path

    @property
    def bootstrap(self) -> str:
        """The `bootstrap.servers` value for clients, e.g. ``127.0.0.1:9092``."""
        return f"{self.host}:{self.port}"


def _info(state: dict[str, Any], data_dir: Path) -> BrokerInfo:
    return BrokerInfo(
        host=str(state["host"]), port=int(state["port"]), pid=int(state["pid"]), data_dir=data_dir
    )


def _choose_controller_port(port: int, previous: dict[str, Any] | None, requested: int | None) -> int:
    if requested is not None:
        if requested == port:
            raise LocalKafkaError(f"the controller port must differ from the broker port {port}")
        if not port_free(requested):
            raise port_taken_error(requested, "controller port")
        return requested
    # Reuse the last controller port of this data dir when free (stable, easier to read in logs).
    last = previous.get("controller_port") if previous else None
    if isinstance(last, int) and last != port and port_free(last):
        return last
    return free_port(exclude=(port,))


def ready(bootstrap: str, timeout: float) -> bool:
    """Whether the broker answers a metadata request and lists itself (registered and unfenced)."""
    from confluent_kafka.admin import AdminClient

    host, _, port = bootstrap.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=min(timeout, 1.0)):
            pass
    except OSError:
        return False  # not listening yet: skip the client, which would log connection errors
    admin = AdminClient(clients.probe_conf(bootstrap))
    try:
        metadata = admin.list_topics(timeout=timeout)
    except Exception:
        return False
    return len(metadata.brokers) > 0


def start(
    port: int = DEFAULT_PORT,
    data_dir: Path | None = None,
    controller_port: int | None = None,
    *,
    timeout: float = START_TIMEOUT_S,
    progress: Progress | None = None,
) -> BrokerInfo:
    """Start a detached single-node broker (or find the one already running from `data_dir`).

    Returns once the broker answers a metadata request, so callers can create topics right away.
    The broker outlives this process; `stop` finds it again through the state file.
    """
    say = progress or say_stderr
    data = resolve_data_dir(data_dir)
    data.mkdir(parents=True, exist_ok=True)
    with locked(data / ".lock"):
        running = live_state(data / STATE_FILE)
        if running is not None:
            info = _info(running, data)
            if info.port != port:
                say(f"A broker from {data} is already running on port {info.port} (requested {port} ignored)")
            return info
        previous = _read_last_ports(data)
        if not port_free(port):
            raise port_taken_error(port, "port")
        java = check_java()
        libs = fetch_jars(progress=say)
        cport = _choose_controller_port(port, previous, controller_port)
        (data / PROPERTIES_FILE).write_text(server_properties(data, port, cport))
        (data / "last-ports.json").write_text(json.dumps({"port": port, "controller_port": cport}) + "\n")
        log_path = data / LOG_FILE
        rotate_log(log_path)
        format_storage(java, libs, data, log_path)

        cmd = [java, *JVM_OPTS, "-cp", f"{libs}/*", "kafka.Kafka", str(data / PROPERTIES_FILE)]
        started = time.monotonic()
        proc, log_offset, state = spawn_detached(
            cmd, data, log_path, data / STATE_FILE,
            {"host": HOST, "port": port, "controller_port": cport, "kafka_version": KAFKA_VERSION},
        )
        info = _info(state, data)
        try:
            wait_ready(proc, info, log_path, log_offset, timeout, say)
        except BaseException:
            with contextlib.suppress(LocalKafkaError):
                terminate(proc.pid, timeout=10.0)
            (data / STATE_FILE).unlink(missing_ok=True)
            raise
        say(
            f"Kafka {KAFKA_VERSION} broker ready on {info.bootstrap} in {time.monotonic() - started:.1f} s "
            f"(pid {info.pid}, log {log_path})"
        )
        return info


def _read_last_ports(data_dir: Path) -> dict[str, Any] | None:
    try:
        value = json.loads((data_dir / "last-ports.json").read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def wait_ready(
    proc: subprocess.Popen[bytes],
    info: BrokerInfo,
    log_path: Path,
    log_offset: int,
    timeout: float,
    say: Progress,
) -> None:
    """Poll until the broker answers, failing early (with the log tail) if the JVM exits."""
    deadline = time.monotonic() + timeout
    next_note = time.monotonic() + 15.0
    while True:
        rc = proc.poll()
        if rc is not None:
            raise LocalKafkaError(
                f"the Kafka broker exited during start-up (exit {rc}); last lines of {log_path}:\n"
                f"{tail_log(log_path, 40, log_offset)}"
            )
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise LocalKafkaError(
                f"the Kafka broker did not answer on {info.bootstrap} within {timeout:.0f} s; "
                f"last lines of {log_path}:\n{tail_log(log_path, 40, log_offset)}"
            )
        if ready(info.bootstrap, timeout=min(2.0, max(remaining, 0.1))):
            return
        if time.monotonic() >= next_note:
            say(f"  waiting for the broker on {info.bootstrap} ...")
            next_note = time.monotonic() + 15.0
        time.sleep(0.2)


def stop(data_dir: Path | None = None, *, timeout: float = STOP_TIMEOUT_S) -> bool:
    """Stop the broker running from `data_dir`. True if one was running, False if there was none.

    Returns only once the process is gone and its port can be bound again, so a following `start`
    (or a test) can reuse the port immediately.
    """
    data = resolve_data_dir(data_dir)
    if not data.is_dir():
        return False
    if (data / cluster.CLUSTER_FILE).is_file():  # `start --brokers N`: every node (processor/local/cluster.py)
        return cluster.stop(data)
    with locked(data / ".lock"):
        state = live_state(data / STATE_FILE)
        if state is None:
            return False
        info = _info(state, data)
        terminate(info.pid, timeout=timeout)
        children.pop(info.pid, None)
        ports = [info.port] + (
            [state["controller_port"]] if isinstance(state.get("controller_port"), int) else []
        )
        if not wait_ports_free(ports):
            raise LocalKafkaError(f"broker {info.pid} exited but port {info.port} is still taken")
        (data / STATE_FILE).unlink(missing_ok=True)
        return True


def status(data_dir: Path | None = None) -> BrokerInfo | None:
    """The broker running from `data_dir`, or None (a stale state file is cleaned up)."""
    data = resolve_data_dir(data_dir)
    if not data.is_dir():
        return None
    with locked(data / ".lock"):
        state = live_state(data / STATE_FILE)
    return _info(state, data) if state is not None else None
