"""Run the real `access-eval run` as a subprocess against the test broker, and read its output topics.

Shared by the pipeline, reliability, Prometheus and operator-tool tests.
"""

from __future__ import annotations

import contextlib
import json
import os
import pty
import select
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from processor.codec.avro import EvalCodec
from processor.local.publish import produce as produce  # the one bulk publisher, re-exported for the tests
from tests.support.kafka_harness import Topics, free_port, wait_until

REPO = Path(__file__).resolve().parents[2]


def settings_record(doc: dict[str, Any]) -> tuple[bytes, bytes]:
    return str(doc["account_id"]).encode(), json.dumps(doc).encode()


def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "probe", "enable.auto.commit": False})
    try:
        md = c.list_topics(topic, timeout=10).topics[topic]
        return {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in md.partitions}
    finally:
        c.close()


def committed_offsets(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        md = c.list_topics(topic, timeout=10).topics[topic]
        tps = c.committed([TopicPartition(topic, p) for p in md.partitions], timeout=10)
        return {tp.partition: tp.offset for tp in tps}
    finally:
        c.close()


def wait_all_committed(bootstrap: str, group: str, topic: str, timeout: float = 120) -> None:
    """The group's committed offsets reached the topic's end: every attempt was processed and committed."""
    ends = end_offsets(bootstrap, topic)

    def done() -> bool:
        try:
            got = committed_offsets(bootstrap, group, topic)
        except KafkaException:  # a transaction holding offsets of the group is pending: not yet readable
            return False
        return all(got.get(p, -1) >= e for p, e in ends.items() if e > 0)

    wait_until(done, timeout, f"group {group} to commit through the end of {topic} {ends}", interval=0.3)


def read_topic(bootstrap: str, topic: str, timeout: float = 60) -> list[Any]:
    """Every committed record of a topic, up to its end offsets (read_committed), in partition order."""
    ends = end_offsets(bootstrap, topic)
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"reader-{time.time_ns()}",
                  "isolation.level": "read_committed", "enable.auto.commit": False,
                  "auto.offset.reset": "earliest", "enable.partition.eof": True})
    c.assign([TopicPartition(topic, p, 0) for p in ends])
    out: list[Any] = []
    at_end = {p for p, e in ends.items() if e == 0}
    deadline = time.monotonic() + timeout
    try:
        while len(at_end) < len(ends):
            assert time.monotonic() < deadline, f"reading {topic}: not at end after {timeout}s"
            for m in c.consume(1000, 0.5):
                if m.error() is not None:
                    if m.error().code() == KafkaError._PARTITION_EOF:
                        at_end.add(m.partition())
                    continue
                out.append(m)
    finally:
        c.close()
    return out


def read_evals(bootstrap: str, topic: str, codec: EvalCodec | None = None) -> list[tuple[bytes, dict[str, Any]]]:
    codec = codec or EvalCodec()
    return [(m.key(), codec.decode(m.value())) for m in read_topic(bootstrap, topic)]


@dataclass
class RunningProcessor:
    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path
    args: list[str] = field(default_factory=list)

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=2) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()
        except OSError:
            return 0, ""

    def ready(self) -> bool:
        return self.get("/readyz")[0] == 200

    def wait_ready(self, timeout: float = 60) -> None:
        def check() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"processor exited {self.proc.returncode}:\n{self.log()}")
            return self.ready()

        try:
            wait_until(check, timeout, "processor /readyz to turn 200", interval=0.1)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; /readyz says {self.get('/readyz')[1]}\n{self.log()}") from None

    def metric(self, name: str, **labels: str) -> float:
        """Sum of a metric's samples matching the labels, from /metrics."""
        status, body = self.get("/metrics")
        assert status == 200, f"/metrics answered {status}"
        total = 0.0
        for line in body.splitlines():
            if not line.startswith(name + "{") and not line.startswith(name + " "):
                continue
            head, _, value = line.rpartition(" ")
            if all(f'{k}="{v}"' in head for k, v in labels.items()):
                total += float(value)
        return total

    def terminate(self, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:]


def start_processor(topics: Topics, tmp: Path, *extra: str, instance: str = "a",
                    env: dict[str, str] | None = None) -> RunningProcessor:
    """`python -m processor run` on the test topics with a fast commit interval and its own txn id."""
    port = free_port()
    log_path = tmp / f"processor-{instance}-{time.time_ns()}.log"
    args = [
        sys.executable, "-m", "processor", "run",
        "--bootstrap-servers", topics.bootstrap,
        "--group-id", topics.group,
        "--settings-topic", topics.settings,
        "--attempts-topic", topics.attempts,
        "--eval-topic", topics.evals,
        "--dlq-topic", topics.dlq,
        "--metrics-host", "127.0.0.1",
        "--metrics-port", str(port),
        "--commit-interval-ms", "50",
        "--transactional-id", f"{topics.group}-{instance}",
        *extra,
    ]
    with log_path.open("wb") as fh:
        proc = subprocess.Popen(args, stdout=fh, stderr=subprocess.STDOUT, cwd=REPO,
                                env={**os.environ, **(env or {})})
    return RunningProcessor(proc, port, log_path, args)


def process_all(topics: Topics, tmp: Path, *extra: str,
                records: list[tuple[bytes | None, bytes]] | None = None) -> RunningProcessor:
    """Start a processor, publish `records` to the attempts topic once it is ready, wait until the group
    committed every attempt, and stop it (exit 0 asserted); the stopped processor (its log)."""
    p = start_processor(topics, tmp, *extra)
    try:
        p.wait_ready()
        if records:
            produce(topics.bootstrap, topics.attempts, records)
        wait_all_committed(topics.bootstrap, topics.group, topics.attempts)
    finally:
        assert p.terminate() == 0, p.log()
    return p


def comparable(event: dict[str, Any]) -> dict[str, Any]:
    """An eval event minus what legitimately differs between runs (evaluation clock, record coordinates)."""
    e = json.loads(json.dumps(event, default=str))
    e["observer"].pop("evaluatedAt", None)
    sv = e["responseData"]["settingsVersion"]
    for k in ("topic", "partition", "offset"):
        sv.pop(k, None)
    return e


def answer_on_a_terminal(args: list[str], answer: str, env: dict[str, str] | None = None,
                         timeout: float = 60) -> tuple[int, str, str]:
    """Run `python -m processor ARGS` with a pseudo-terminal as stdin, wait for its `[y/N]` prompt and
    type `answer`: (exit code, stderr up to the prompt, the output after it)."""
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "processor", *args], cwd=REPO, stdin=slave,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    os.close(slave)
    try:
        assert proc.stderr is not None
        seen = ""
        deadline = time.monotonic() + timeout
        while "[y/N]" not in seen:
            assert time.monotonic() < deadline and proc.poll() is None, f"no prompt; stderr so far: {seen!r}"
            if select.select([proc.stderr], [], [], 1.0)[0]:
                chunk = os.read(proc.stderr.fileno(), 4096).decode()
                assert chunk, f"stderr closed before the prompt: {seen!r}"
                seen += chunk
        os.write(master, answer.encode() + b"\n")
        out, err = proc.communicate(timeout=timeout)
        return proc.returncode, seen, err + out
    finally:
        with contextlib.suppress(OSError):
            os.close(master)
        if proc.poll() is None:
            proc.kill()
