"""Helpers for the fault-injection tests (tests/faults/test_faults.py, tests/cluster/test_cluster.py): a broker of
the test's own (that may be stopped, restarted, or given a SASL/PLAIN listener), tracked publishing,
the expected output from the contract's model (tests/support/spec_model.py, not `simulate`, which shares
the evaluation core with the processor), and the exactly-once check that every fault test ends with.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaError, TopicPartition

from processor.codec.avro import EvalCodec
from processor.local import broker as local_broker
from processor.local.fetch import KAFKA_VERSION, fetch_jars
from processor.local.java import JVM_OPTS, check_java
from processor.local.paths import tail_log
from processor.local.process import children, start_ticks, write_state
from processor.local.properties import HOST, PROPERTIES_FILE, format_storage, server_properties
from processor.local.publish import Record, produce
from tests.support.kafka_harness import free_port, start_watchdog, wait_until
from tests.support.processor_harness import RunningProcessor, end_offsets, read_topic
from tests.support.spec_model import Expectation, SettingsRecord, differences, expect, project

# --------------------------------------------------------------------------------------------------
# A broker of the test's own


@dataclass
class OwnBroker:
    """A single-node broker in `data_dir` on fixed ports, started like `access-eval local start` (same
    jars, java command, KRaft properties) plus `extra` properties, so tests may stop and restart it
    (same data dir, same ports) or give it a SASL_PLAINTEXT listener. It writes the same state file
    as `local.start`, so `local_broker.stop(data_dir)` and the session watchdog can stop it too."""

    data_dir: Path
    sasl_users: dict[str, str] = field(default_factory=dict)
    extra: dict[str, str] = field(default_factory=dict)
    port: int = 0
    controller_port: int = 0
    sasl_port: int = 0
    pid: int = 0
    watchdog: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()
        self.controller_port = self.controller_port or free_port(exclude=[self.port])
        if self.sasl_users:
            self.sasl_port = self.sasl_port or free_port(exclude=[self.port, self.controller_port])

    @property
    def bootstrap(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def sasl_bootstrap(self) -> str:
        assert self.sasl_port, "no SASL listener configured"
        return f"{HOST}:{self.sasl_port}"

    def _properties(self) -> str:
        text = server_properties(self.data_dir, self.port, self.controller_port)
        text += "".join(f"{k}={v}\n" for k, v in self.extra.items())  # later keys win in java.util.Properties
        if not self.sasl_users:
            return text
        host = HOST
        users = " ".join(f'user_{u}="{p}"' for u, p in self.sasl_users.items())
        admin_user, admin_password = next(iter(self.sasl_users.items()))
        sasl = {
            "listeners": f"PLAINTEXT://{host}:{self.port},CONTROLLER://{host}:{self.controller_port},"
                         f"SASL_PLAINTEXT://{host}:{self.sasl_port}",
            "advertised.listeners": f"PLAINTEXT://{host}:{self.port},SASL_PLAINTEXT://{host}:{self.sasl_port}",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT",
            "sasl.enabled.mechanisms": "PLAIN",
            "listener.name.sasl_plaintext.sasl.enabled.mechanisms": "PLAIN",
            "listener.name.sasl_plaintext.plain.sasl.jaas.config":
                "org.apache.kafka.common.security.plain.PlainLoginModule required "
                f'username="{admin_user}" password="{admin_password}" {users};',
        }
        return text + "".join(f"{k}={v}\n" for k, v in sasl.items())

    def start(self, timeout: float = local_broker.START_TIMEOUT_S) -> None:
        data = self.data_dir
        java = check_java()
        libs = fetch_jars()
        (data / PROPERTIES_FILE).write_text(self._properties())
        log_path = data / local_broker.LOG_FILE
        format_storage(java, libs, data, log_path)
        cmd = [java, *JVM_OPTS, "-cp", f"{libs}/*", "kafka.Kafka", str(data / PROPERTIES_FILE)]
        with log_path.open("ab") as log:
            offset = log.tell()
            proc = subprocess.Popen(cmd, stdout=log, stderr=log, stdin=subprocess.DEVNULL, cwd=data,
                                    start_new_session=True)
        children[proc.pid] = proc
        self.pid = proc.pid
        state = {"host": HOST, "port": self.port, "controller_port": self.controller_port, "pid": proc.pid,
                 "start_ticks": start_ticks(proc.pid), "kafka_version": KAFKA_VERSION,
                 "started_at": time.time()}
        write_state(data / local_broker.STATE_FILE, state)
        info = local_broker.BrokerInfo(HOST, self.port, proc.pid, data)
        # Stops this JVM if pytest dies without running teardown (it exits by itself after a stop()).
        self.watchdog = start_watchdog(os.getpid(), data)
        local_broker.wait_ready(proc, info, log_path, offset, timeout, lambda _msg: None)
        if self.sasl_port:
            wait_until(lambda: local_broker.ready(self.bootstrap, 2.0) and _port_open(self.sasl_port), 30,
                       "SASL listener to accept connections")

    def stop(self) -> None:
        """SIGTERM (clean shutdown), wait until the process is gone and the ports are free."""
        local_broker.stop(self.data_dir)
        if self.watchdog is not None:
            self.watchdog.terminate()
            self.watchdog.wait(timeout=10)
            self.watchdog = None

    @property
    def running(self) -> bool:
        return local_broker.status(self.data_dir) is not None

    def log(self, lines: int = 40) -> str:
        return tail_log(self.data_dir / local_broker.LOG_FILE, lines)


def _port_open(port: int) -> bool:
    import socket

    try:
        with socket.create_connection((HOST, port), timeout=1):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def own_broker(data_dir: Path, **kwargs: Any) -> Iterator[OwnBroker]:
    broker = OwnBroker(data_dir, **kwargs)
    try:
        broker.start()
        yield broker
    finally:
        broker.stop()


# --------------------------------------------------------------------------------------------------
# Publishing with coordinates


def produce_tracked(bootstrap: str, topic: str, records: Iterable[Record],
                    config: dict[str, Any] | None = None) -> list[tuple[int, int]]:
    """Publish idempotently, in order; returns each record's (partition, offset), in input order.
    A record may carry a third element, its timestamp (epoch ms)."""
    return produce(bootstrap, topic, records, config=config, track=True).coords


def count_uncommitted_visible(bootstrap: str, topic: str) -> int:
    """Data records a read_uncommitted reader sees (committed + aborted), i.e. the topic's records
    without transaction markers. Minus what read_committed sees = records of aborted transactions."""
    ends = end_offsets(bootstrap, topic)
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"uncommitted-{time.time_ns()}",
                  "isolation.level": "read_uncommitted", "enable.auto.commit": False,
                  "enable.partition.eof": True, "fetch.max.bytes": 50_000_000})
    c.assign([TopicPartition(topic, p, 0) for p in ends])
    seen = 0
    done = {p for p, e in ends.items() if e == 0}
    deadline = time.monotonic() + 120
    try:
        while len(done) < len(ends):
            assert time.monotonic() < deadline, f"reading {topic} uncommitted: not at end"
            for m in c.consume(5000, 0.5):
                err = m.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        done.add(m.partition())
                    continue
                seen += 1
    finally:
        c.close()
    return seen


# --------------------------------------------------------------------------------------------------
# Expected output and the exactly-once check


def aborted_records(bootstrap: str, evals_topic: str, dlq_topic: str, result: Delivery) -> int:
    """Records of aborted transactions in the output topics: what a read_uncommitted reader sees
    beyond the committed events and dead letters `result` checked."""
    return (count_uncommitted_visible(bootstrap, evals_topic) + count_uncommitted_visible(bootstrap, dlq_topic)
            - result.events_checked - result.dead_letters_checked)


def expect_workload(settings: Iterable[SettingsRecord], attempts: list[tuple[bytes, bytes, str]]) -> Expectation:
    """The contract model's expectation for a `processor.local.workload` stream (settings as published).

    The workload labels each attempt with the outcome it was generated for; the model must agree
    with every label (a check of the model, not of the processor), and the expected events must
    cover monitor permits, would-be denies and enforced denies, so that decisions are compared."""
    spec = expect(settings, [v for _, v, _ in attempts])
    disagree = [(i, label, got) for i, ((_, _, label), got) in enumerate(zip(attempts, spec.outcomes, strict=True))
                if label != got]
    assert not disagree, f"the SPEC model and the workload's labels disagree (index, label, model): {disagree[:5]}"
    kinds = spec.exercised()
    assert all(kinds.get(k) for k in ("monitor/allowlisted", "monitor/not allowlisted", "limited/not allowlisted")), \
        f"the workload exercises too few decisions: {kinds}"
    return spec


@dataclass
class Delivery:
    """What an exactly-once check found; `lost` and `duplicated` must be 0."""

    events_checked: int = 0
    dead_letters_checked: int = 0
    lost: int = 0
    duplicated: int = 0
    unexpected: int = 0
    mismatched: int = 0
    examples: list[str] = field(default_factory=list)
    content_examples: list[str] = field(default_factory=list)  # events that differ from the model

    def explain(self) -> str:
        return (f"events checked {self.events_checked}, dead letters {self.dead_letters_checked}: lost {self.lost}, "
                f"duplicated {self.duplicated}, unexpected {self.unexpected}, content mismatches {self.mismatched}; "
                f"e.g. {self.examples[:5]}" + (f"; differing from the model: {self.content_examples[:3]}"
                                               if self.content_examples else ""))

    @property
    def ok(self) -> bool:
        return not (self.lost or self.duplicated or self.unexpected or self.mismatched)


def check_exactly_once(bootstrap: str, evals_topic: str, dlq_topic: str, source_topic: str,
                       expected: dict[str, dict[str, Any]], expected_dead: set[tuple[int, int]],
                       *, compare: bool = True) -> Delivery:
    """Read both output topics read_committed: one eval event per expected attempt id, nothing else;
    one DLQ record per expected (partition, offset). With `compare`, each event's projection
    (spec_model.project: decision fields, settings version, echoed attempt fields, record key) must
    equal the contract model's (`expected`, from spec_model.expect)."""
    codec = EvalCodec()
    result = Delivery()
    got: dict[str, dict[str, Any]] = {}
    counts: Counter[str] = Counter()
    for m in read_topic(bootstrap, evals_topic, timeout=180):
        event = codec.decode(m.value())
        aid = event["attemptId"]
        counts[aid] += 1
        result.events_checked += 1
        if m.key() != event["target"]["accountId"].encode():
            result.mismatched += 1
            result.examples.append(f"key {m.key()!r} is not the target account of {aid}")
        got[aid] = project(event, m.key())
    result.duplicated = sum(n - 1 for n in counts.values() if n > 1)
    missing = expected.keys() - got.keys()
    extra = got.keys() - expected.keys()
    result.lost += len(missing)
    result.unexpected += len(extra)
    result.examples += [f"lost {a}" for a in sorted(missing)[:3]] + [f"unexpected {a}" for a in sorted(extra)[:3]]
    result.examples += [f"duplicated {a}" for a, n in counts.items() if n > 1][:3]
    if compare:
        for aid in expected.keys() & got.keys():
            if got[aid] != expected[aid]:
                result.mismatched += 1
                if len(result.content_examples) < 10:
                    result.content_examples.append(f"{aid}: {differences(got[aid], expected[aid])}")
    dead: Counter[tuple[int, int]] = Counter()
    for m in read_topic(bootstrap, dlq_topic, timeout=180):
        h = dict(m.headers() or [])
        assert h.get("source.topic") == source_topic.encode(), h
        assert h.get("error.reason"), f"DLQ record without a reason: {h}"
        dead[(int(h["source.partition"]), int(h["source.offset"]))] += 1
        result.dead_letters_checked += 1
    result.duplicated += sum(n - 1 for n in dead.values() if n > 1)
    result.lost += len(expected_dead - dead.keys())
    result.unexpected += len(dead.keys() - expected_dead)
    if expected_dead - dead.keys():
        result.examples.append(f"dead letters lost at {sorted(expected_dead - dead.keys())[:3]}")
    return result


# --------------------------------------------------------------------------------------------------
# Processes


def run_to_exit(p: RunningProcessor, timeout: float) -> tuple[int, list[str]]:
    try:
        rc = p.proc.wait(timeout)
    except Exception:
        raise AssertionError(f"the processor did not exit within {timeout:g} s:\n{p.log()}") from None
    return rc, p.log_path.read_text(errors="replace").splitlines()


def problem_lines(lines: list[str]) -> list[str]:
    """The processor's own error lines (JSON logs at level error, or plain stderr), without librdkafka's
    (its own log lines come through the JSON logger as `access_eval.librdkafka`, at librdkafka's level)."""
    return [line for line in lines
            if ('"level": "error"' in line and '"logger": "access_eval.librdkafka"' not in line)
            or (line and not line.startswith(("{", "%")))]


def stacks(pid: int) -> str:
    """The Python stacks of a live process (py-spy, when installed): what a hung processor is doing."""
    import shutil
    import sys

    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    try:
        return subprocess.run([spy, "dump", "--pid", str(pid)], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"(no stacks: {exc})"


def rss_kb(pid: int) -> int:
    """Resident set size of a process (VmRSS of /proc/<pid>/status), in kB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {pid}")


def record_figures(name: str, **figures: Any) -> None:
    """Print the figures of a fault test (shown with -s / -rA) and append them to the JSON-lines file
    named by ACCESS_EVAL_FAULT_REPORT, which docs/guarantees.md quotes from."""
    line = json.dumps({"test": name, **figures}, sort_keys=True)
    print(f"\nFAULT FIGURES {line}")
    path = os.environ.get("ACCESS_EVAL_FAULT_REPORT")
    if path:
        with open(path, "a") as fh:
            fh.write(line + "\n")
