#!/usr/bin/env python
"""Benchmark of `access-eval run` against a real Kafka broker (`make bench`).

One command: starts its own single-node broker on free ports in a temporary directory (unless
`--bootstrap-servers` is given), preloads the reference mix once, then measures

1. throughput of the real CLI (a subprocess, new consumer group per run) draining the preloaded
   topic, exactly-once and at-least-once, with 1 and 2 processes in the group, timed from the
   first committed offset to all offsets committed, and checked: eval events == the mix's count;
2. the ceiling in the same run: a plain consumer (same client settings, no processing) and a
   transactional consume->produce pass-through, drained and timed the same way;
3. latency attempt produced -> eval event visible to a read_committed consumer at half the
   measured exactly-once throughput;
4. settings: bootstrap of a large settings topic (time to ready, peak RSS) and the propagation
   delay of a settings change (publish -> first attempt evaluated with it);
5. stage costs in µs per attempt (consume, decode/validate, evaluate, encode, produce), in
   process, so the next optimisation is obvious.

Prints a table and writes the same figures as JSON (`--json PATH`). `--quick` is a small version
for the test suite (tests/test_bench_kafka_quick.py), which checks correctness only, never times.

Internal modes (`--worker consume|passthrough|load`) run the ceiling clients and the load
generator as separate processes, so the measuring process never competes for the GIL.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import confluent_kafka  # noqa: E402
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition  # noqa: E402
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]  # noqa: E402

from bench.sysinfo import machine  # noqa: E402
from processor.core.ids import IDENTITY_TYPES, rfc3339_millis  # noqa: E402
from processor.local import broker as local  # noqa: E402
from processor.local.workload import Mix, Workload  # noqa: E402

#: Outcomes that produce an eval event (a `permit` only when the account is in `monitor`).
EMITTING = ("would_be_deny", "enforced_deny")

FULL = {
    "attempts": 1_000_000,
    "accounts": 100_000,
    "huge_allowlists": 3,  # accounts 0..8 that are restricted get 10,000-id allowlists: 6 accounts
    "latency_seconds": 60.0,
    "latency_warmup_seconds": 10.0,
    "settings_records": 1_000_000,
    "changes": 20,
    "runs": 3,
    "stage_attempts": 200_000,
}
QUICK = {
    "attempts": 20_000,
    "accounts": 2_000,
    "huge_allowlists": 1,
    "latency_seconds": 5.0,
    "latency_warmup_seconds": 2.0,
    "settings_records": 20_000,
    "changes": 5,
    "runs": 1,
    "stage_attempts": 20_000,
}


def say(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def median(xs: Iterable[float | None]) -> float | None:
    known = [x for x in xs if x is not None]
    return statistics.median(known) if known else None


def num(x: float | None) -> str:
    return "n/a" if x is None else f"{x:,.0f}"


def percentile(sorted_xs: list[float], q: float) -> float:
    if not sorted_xs:
        return float("nan")
    i = min(len(sorted_xs) - 1, max(0, round(q * (len(sorted_xs) - 1))))
    return sorted_xs[i]


# --- /proc ---------------------------------------------------------------------------------------

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float | None:
    """utime + stime of a process (including its threads), from /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def machine_cpu_seconds() -> float:
    """CPU seconds all processes of the machine used so far (busy time of /proc/stat)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / CLK_TCK


def proc_status_kb(pid: int, key: str) -> int | None:
    """A `VmHWM:`-style field of /proc/PID/status in kB (VmHWM is the peak resident set size)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def machine_facts() -> dict[str, Any]:
    return {
        **machine(),
        "kafka": local.KAFKA_VERSION,
        "confluent_kafka": confluent_kafka.__version__,
        "librdkafka": confluent_kafka.libversion()[0],
    }


# --- Kafka helpers -------------------------------------------------------------------------------


def create_topics(bootstrap: str, specs: list[tuple[str, int, dict[str, str]]]) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics(
        [NewTopic(name, num_partitions=n, replication_factor=1, config=cfg) for name, n, cfg in specs],
        operation_timeout=30,
    )
    for f in futures.values():
        f.result(60)
    deadline = time.monotonic() + 60
    names = {name: n for name, n, _ in specs}
    while time.monotonic() < deadline:
        md = admin.list_topics(timeout=10)
        if all(
            name in md.topics
            and md.topics[name].error is None
            and len(md.topics[name].partitions) == n
            and all(p.leader >= 0 for p in md.topics[name].partitions.values())
            for name, n in names.items()
        ):
            return
        time.sleep(0.2)
    raise RuntimeError(f"topics {sorted(names)} did not get leaders")


#: When this process last deleted topics (time.monotonic()); see quiesce().
_last_delete = [0.0]
#: The broker removes a deleted topic's files this long after the delete (file.delete.delay.ms).
FILE_DELETE_DELAY_S = 60.0


def delete_topics(bootstrap: str, names: list[str]) -> None:
    if not names:
        return
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for f in admin.delete_topics(names, operation_timeout=30).values():
        with contextlib.suppress(Exception):
            f.result(60)
    _last_delete[0] = time.monotonic()


def quiesce(max_wait_s: float = 150.0, busy_below: float = 0.3) -> float:
    """Let the previous section's background work end before a latency run: the broker removing the
    files of deleted topics (the pass-through ceiling writes ~0.5 GB per run), dirty pages written back
    (sync), then the machine's CPUs idle over 2 s. Returns the seconds waited."""
    started = time.monotonic()
    deadline = started + max_wait_s
    pending = _last_delete[0] + FILE_DELETE_DELAY_S + 2.0 - started if _last_delete[0] else 0.0
    if pending > 0:
        time.sleep(min(pending, max_wait_s))  # the broker's delayed file deletion
    os.sync()
    while time.monotonic() < deadline:
        cpu0, t0 = machine_cpu_seconds(), time.monotonic()
        time.sleep(2.0)  # measurement window
        if (machine_cpu_seconds() - cpu0) / (time.monotonic() - t0) < busy_below:
            break
    return round(time.monotonic() - started, 1)


def preload(bootstrap: str, topic: str, records: Iterable[tuple[bytes, bytes]], **extra: Any) -> tuple[int, int]:
    """Produce idempotently (lz4, large batches) and wait for every delivery; (records, bytes)."""
    failures: list[str] = []

    def on_delivery(err: KafkaError | None, _msg: Any) -> None:
        if err is not None:
            failures.append(err.str())

    p = Producer(
        {
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,
            "linger.ms": 50,
            "batch.size": 1_000_000,
            "compression.type": "lz4",
            "queue.buffering.max.messages": 500_000,
            **extra,
        }
    )
    n = size = 0
    for key, value in records:
        while True:
            try:
                p.produce(topic, value, key, on_delivery=on_delivery)
                break
            except BufferError:
                p.poll(0.05)
        n += 1
        size += len(value)
        if not n % 5000:
            p.poll(0)
    if p.flush(120) != 0 or failures:
        raise RuntimeError(f"preload of {topic} failed: {failures[:3]}")
    return n, size


def partitions_of(bootstrap: str, topic: str) -> list[int]:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    return sorted(admin.list_topics(topic, timeout=10).topics[topic].partitions)


def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-probe", "enable.auto.commit": False})
    try:
        return {
            p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in partitions_of(bootstrap, topic)
        }
    finally:
        c.close()


def count_committed_records(bootstrap: str, topic: str, timeout: float = 120) -> int:
    """Records a read_committed consumer sees from the beginning to the end of a topic."""
    ends = end_offsets(bootstrap, topic)
    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-count-{uuid.uuid4().hex[:6]}",
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "auto.offset.reset": "earliest",
        }
    )
    c.assign([TopicPartition(topic, p, 0) for p in ends])
    at_end = {p for p, e in ends.items() if e == 0}
    n = 0
    deadline = time.monotonic() + timeout
    try:
        while len(at_end) < len(ends):
            if time.monotonic() > deadline:
                raise RuntimeError(f"counting {topic}: not at the end after {timeout}s")
            for m in c.consume(10_000, 0.5):
                err = m.error()
                if err is None:
                    n += 1
                elif err.code() == KafkaError._PARTITION_EOF:
                    at_end.add(m.partition())
    finally:
        c.close()
    return n


class CommitWatch:
    """Polls a group's committed offsets on a topic (one long-lived client, read_uncommitted so the
    OffsetFetch never waits for a pending transaction)."""

    def __init__(self, bootstrap: str, group: str, topic: str) -> None:
        self.parts = [TopicPartition(topic, p) for p in partitions_of(bootstrap, topic)]
        self.c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
        self.last = 0

    def total(self) -> int:
        """Sum of committed offsets; the last known sum while the coordinator is (re)loading."""
        try:
            self.last = sum(max(tp.offset, 0) for tp in self.c.committed(self.parts, timeout=10))
        except KafkaException as exc:
            if not exc.args[0].retriable() and exc.args[0].code() not in (
                KafkaError.NOT_COORDINATOR, KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
                KafkaError.COORDINATOR_NOT_AVAILABLE,
            ):
                raise
        return self.last

    def close(self) -> None:
        self.c.close()


# --- the workload --------------------------------------------------------------------------------


@dataclass
class Mixed:
    """The preloaded reference mix and what the processor must make of it."""

    workload: Workload
    settings: list[tuple[bytes, bytes]]
    attempts_total: int
    outcomes: Counter[str]
    expected_events: int
    monitor: set[str]
    probe_account: str = ""
    probe_external: str = ""


def settings_docs(w: Workload, updated_at: str | None) -> Iterator[tuple[bytes, bytes]]:
    for d in w.settings():
        if updated_at is not None:
            d["updated_at"] = updated_at
        yield str(d["account_id"]).encode(), json.dumps(d, separators=(",", ":")).encode()


def probe_doc(account: str, allowed: list[str], updated_at: str | None = None) -> bytes:
    doc: dict[str, Any] = {
        "account_id": account,
        "external_account_identity_interaction": {
            "identity_types": {t: {"state": "monitor", "external_allowed_accounts": allowed} for t in IDENTITY_TYPES}
        },
    }
    if updated_at is not None:
        doc["updated_at"] = updated_at
    return json.dumps(doc, separators=(",", ":")).encode()


def attempt_value(attempt_id: str, account: str, ext: str, t_ms: int) -> bytes:
    return json.dumps(
        {
            "id": attempt_id,
            "event_time": rfc3339_millis(t_ms),
            "account_id": account,
            "identity": {"iam_id": "iam-probe", "type": "user", "account_id": ext, "name": "probe"},
            "action": "cloud-object-storage.object.read",
        },
        separators=(",", ":"),
    ).encode()


# --- processes -----------------------------------------------------------------------------------


@dataclass
class Proc:
    popen: subprocess.Popen[bytes]
    port: int
    log: Path
    started: float = field(default_factory=time.monotonic)

    def get(self, path: str) -> int:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=2) as r:
                return int(r.status)
        except urllib.error.HTTPError as e:
            return int(e.code)
        except OSError:
            return 0

    def histogram(self, name: str) -> dict[str, Any]:
        """count, mean and the bucket bound holding the p99 of a histogram on the process's /metrics."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as r:
            text = r.read().decode()
        buckets: list[tuple[float, float]] = []
        total = count = 0.0
        for line in text.splitlines():
            head, _, value = line.rpartition(" ")
            if head.startswith(name + "_bucket{"):
                le = head.split('le="', 1)[1].split('"', 1)[0]
                buckets.append((float(le), float(value)))
            elif head == name + "_sum":
                total = float(value)
            elif head == name + "_count":
                count = float(value)
        p99 = next((le for le, n in sorted(buckets) if count and n >= 0.99 * count), None)
        return {"count": int(count), "mean_ms": round(total / count * 1000, 1) if count else None,
                "p99_at_most_ms": p99 * 1000 if p99 is not None and p99 != float("inf") else p99}

    def alive(self) -> bool:
        return self.popen.poll() is None

    def check(self) -> None:
        if not self.alive():
            raise RuntimeError(f"process exited {self.popen.returncode}; log {self.log}:\n{tail(self.log)}")

    def stop(self, timeout: float = 60) -> int:
        if self.alive():
            self.popen.send_signal(signal.SIGTERM)
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            return self.popen.wait(10)


def tail(path: Path, n: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


@dataclass
class Bench:
    args: argparse.Namespace
    bootstrap: str
    tmp: Path
    prefix: str
    broker_pid: int | None
    created: list[str] = field(default_factory=list)
    procs: list[Proc] = field(default_factory=list)
    serial: int = 0

    @property
    def settings_topic(self) -> str:
        return f"{self.prefix}.iam.account-settings"

    @property
    def attempts_topic(self) -> str:
        return f"{self.prefix}.iam.access-attempts"

    @property
    def dlq_topic(self) -> str:
        return f"{self.prefix}.iam.access-attempts.dlq"

    def topic(self, name: str, partitions: int, config: dict[str, str] | None = None) -> str:
        create_topics(self.bootstrap, [(name, partitions, config or {})])
        self.created.append(name)
        return name

    def fresh(self, what: str) -> str:
        self.serial += 1
        return f"{self.prefix}.{what}.{self.serial}.{uuid.uuid4().hex[:4]}"

    def spawn(self, argv: list[str], name: str, port: int = 0) -> Proc:
        log = self.tmp / f"{name}.log"
        with log.open("wb") as fh:
            popen = subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT, cwd=REPO)
        proc = Proc(popen, port, log)
        self.procs.append(proc)
        return proc

    def processor(
        self,
        group: str,
        eval_topic: str,
        *,
        delivery: str = "exactly-once",
        instance: int = 0,
        settings_topic: str | None = None,
        attempts_topic: str | None = None,
        extra: list[str] | None = None,
    ) -> Proc:
        port = free_port()
        argv = [
            sys.executable, "-m", "processor", "run",
            "--bootstrap-servers", self.bootstrap,
            "--metrics-port", str(port),
            "--group-id", group,
            "--settings-topic", settings_topic or self.settings_topic,
            "--attempts-topic", attempts_topic or self.attempts_topic,
            "--eval-topic", eval_topic,
            "--dlq-topic", self.dlq_topic,
            "--metrics-host", "127.0.0.1",
            "--delivery", delivery,
            "--transactional-id", f"{group}-{instance}",
            "--log-level", "WARNING" if not self.args.verbose else "INFO",
            *self.args.processor_arg,
            *(extra or []),
        ]
        return self.spawn(argv, f"{group}-{instance}", port)

    def worker(self, mode: str, group: str, *, out_topic: str = "", instance: int = 0, extra: list[str] | None = None,
               topic: str | None = None) -> Proc:
        argv = [
            sys.executable, str(Path(__file__).resolve()), "--worker", mode,
            "--bootstrap-servers", self.bootstrap,
            "--w-topic", topic or self.attempts_topic,
            "--w-group", group,
            "--w-out-topic", out_topic,
            "--w-txn-id", f"{group}-{instance}",
            *(extra or []),
        ]
        for a in self.args.processor_arg:
            argv += ["--processor-arg=" + a]
        return self.spawn(argv, f"{mode}-{group}-{instance}")


# --- 1 + 2: throughput and ceiling ---------------------------------------------------------------


def drain(bench: Bench, group: str, procs: list[Proc], total: int, timeout: float) -> dict[str, Any]:
    """Time from the first committed offset to all `total` offsets committed (polled every 50 ms).

    With several processes the clock starts once every one of them is ready (settings bootstrapped,
    partitions assigned), so a process still starting up does not count as part of the group.
    """
    watch = CommitWatch(bench.bootstrap, group, bench.attempts_topic)
    try:
        deadline = time.monotonic() + timeout
        first_t = first_n = None
        cpu0: list[float | None] = []
        broker0 = None
        all_ready = len(procs) == 1
        while True:
            for p in procs:
                p.check()
            if not all_ready:
                all_ready = all(p.port == 0 or p.get("/readyz") == 200 for p in procs)
            n = watch.total()
            now = time.monotonic()
            if first_t is None and n > 0 and all_ready:
                first_t, first_n = now, n
                cpu0 = [cpu_seconds(p.popen.pid) for p in procs]
                broker0 = cpu_seconds(bench.broker_pid) if bench.broker_pid else None
                machine0 = machine_cpu_seconds()
            if n >= total:
                break
            if now > deadline:
                raise RuntimeError(f"group {group}: {n}/{total} committed after {timeout}s")
            time.sleep(0.05)
        if first_t is None or first_n is None:  # all committed before the group was complete (tiny --quick)
            first_t, first_n = now, total
            cpu0 = [None] * len(procs)
            broker0 = machine0 = None
        elapsed = now - first_t
        cpu1 = [cpu_seconds(p.popen.pid) for p in procs]
        broker1 = cpu_seconds(bench.broker_pid) if bench.broker_pid else None
        machine1 = machine_cpu_seconds()
        rss = [proc_status_kb(p.popen.pid, "VmHWM") for p in procs]
    finally:
        watch.close()
    drained = total - first_n
    from_start = now - min(p.started for p in procs)
    out: dict[str, Any] = {
        "from_start_s": round(from_start, 3),
        # None when everything was committed before the first observation (tiny --quick sizes)
        "attempts_per_s": round(drained / elapsed) if drained and elapsed > 0 else None,
        "seconds": round(elapsed, 3),
        "attempts_timed": drained,
        "cpu_per_process": [
            round((b - a) / elapsed, 2) if a is not None and b is not None and elapsed > 0 else None
            for a, b in zip(cpu0, cpu1, strict=True)
        ],
        "peak_rss_mb": [round(r / 1024) if r else None for r in rss],
    }
    if broker0 is not None and broker1 is not None and elapsed > 0:
        out["broker_cpu"] = round((broker1 - broker0) / elapsed, 2)
    if elapsed > 0 and machine0 is not None:
        # Busy CPUs of the whole machine during the run: ours plus anything else running (noise).
        out["machine_cpu"] = round((machine1 - machine0) / elapsed, 2)
    return out


def throughput_run(bench: Bench, mixed: Mixed, delivery: str, nprocs: int, rep: int) -> dict[str, Any]:
    group = bench.fresh(f"tp-{delivery}-{nprocs}p-r{rep}")
    evals = bench.topic(bench.fresh("evals"), bench.args.partitions)
    procs = [bench.processor(group, evals, delivery=delivery, instance=i) for i in range(nprocs)]
    try:
        result = drain(bench, group, procs, mixed.attempts_total, bench.args.run_timeout)
    finally:
        codes = [p.stop() for p in procs]
    events = count_committed_records(bench.bootstrap, evals)
    # Exactly-once: exactly the mix's count. At-least-once may legitimately duplicate (reported).
    exact = events == mixed.expected_events
    result.update(
        events=events,
        expected_events=mixed.expected_events,
        duplicates=events - mixed.expected_events,
        correct=exact if delivery == "exactly-once" else events >= mixed.expected_events,
        exit_codes=codes,
    )
    delete_topics(bench.bootstrap, [evals])
    bench.created.remove(evals)
    say(f"  {delivery} x{nprocs} run {rep + 1}: {num(result['attempts_per_s'])} attempts/s, "
        f"events {events}/{mixed.expected_events}, cpu {result['cpu_per_process']}, broker {result.get('broker_cpu')}, "
        f"machine {result.get('machine_cpu')}")
    return result


def ceiling_run(bench: Bench, mixed: Mixed, mode: str, rep: int) -> dict[str, Any]:
    group = bench.fresh(f"ceiling-{mode}-r{rep}")
    out_topic = bench.topic(bench.fresh("passthrough"), bench.args.partitions) if mode == "passthrough" else ""
    proc = bench.worker(mode, group, out_topic=out_topic)
    try:
        result = drain(bench, group, [proc], mixed.attempts_total, bench.args.run_timeout)
    finally:
        code = proc.stop()
    result["exit_codes"] = [code]
    if out_topic:
        n = count_committed_records(bench.bootstrap, out_topic)
        result.update(records=n, correct=n == mixed.attempts_total)
        delete_topics(bench.bootstrap, [out_topic])
        bench.created.remove(out_topic)
    else:
        result["correct"] = True
    say(f"  ceiling {mode} run {rep + 1}: {num(result['attempts_per_s'])} attempts/s, cpu {result['cpu_per_process']}")
    return result


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "attempts_per_s": median(r["attempts_per_s"] for r in runs),
        "correct": all(r["correct"] for r in runs),
        "runs": runs,
    }


# --- 3: latency ----------------------------------------------------------------------------------


def event_time_of(value: bytes) -> int:
    """`eventTime` of a single-object-encoded eval event: the third field after two strings."""
    pos = 10  # C3 01 + 8-byte fingerprint

    def varint() -> int:
        nonlocal pos
        shift = result = 0
        while True:
            b = value[pos]
            pos += 1
            result |= (b & 0x7F) << shift
            if b < 0x80:
                return (result >> 1) ^ -(result & 1)
            shift += 7

    for _ in range(2):  # id, action
        n = varint()
        pos += n
    return varint()


class Reader:
    """A read_committed consumer of an eval topic in a thread; stores (receive ms, event) pairs."""

    def __init__(self, bootstrap: str, topic: str, on_message: Callable[[float, bytes], None],
                 start: dict[int, int] | None = None) -> None:
        """`start`: offset per partition to read from (default: the beginning)."""
        self.c = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"bench-reader-{uuid.uuid4().hex[:6]}",
                "isolation.level": "read_committed",
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "fetch.wait.max.ms": 20,
            }
        )
        self.c.assign([TopicPartition(topic, p, (start or {}).get(p, 0)) for p in partitions_of(bootstrap, topic)])
        self.on_message = on_message
        self.stopping = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stopping:
            # What is already fetched, at once: consume(n, timeout) would hold the messages that did
            # arrive until n of them or the timeout, and stamp them late.
            msgs = self.c.consume(10_000, 0) or self.c.consume(1, 0.05)
            now = time.time() * 1000
            for m in msgs:
                if m.error() is None:
                    self.on_message(now, m.value())

    def close(self) -> None:
        self.stopping = True
        self.thread.join(10)
        self.c.close()


def median_latency_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median p99 (all its figures), plus every run's headline figures."""
    med = dict(sorted(runs, key=lambda r: r["p99_ms"])[len(runs) // 2])
    med["runs"] = [
        {"p50_ms": r["p50_ms"], "p99_ms": r["p99_ms"], "max_ms": r["max_ms"], "warmup_p99_ms": r["warmup"]["p99_ms"],
         "warmup_max_ms": r["warmup"]["max_ms"], "commit_mean_ms": r["commits"]["mean_ms"], "cpu": r["cpu"]}
        for r in runs
    ]
    return med


def wait_ready(proc: Proc, timeout: float) -> float:
    deadline = time.monotonic() + timeout
    while proc.get("/readyz") != 200:
        proc.check()
        if time.monotonic() > deadline:
            raise RuntimeError(f"processor not ready after {timeout}s:\n{tail(proc.log)}")
        time.sleep(0.05)
    return time.monotonic() - proc.started


def latency(bench: Bench, mixed: Mixed, rate: float, seconds: float,
            warmup: float = 0.0) -> tuple[dict[str, Any], Proc, str, str]:
    """Offer `rate` attempts/s for `warmup` + `seconds` on fresh topics; latency of every emitted eval
    event whose attempt was sent in the measured window (the warm-up's first seconds, on brand-new
    topics and a processor that just became ready, are reported apart).

    Returns the running processor and its topics, reused for the propagation measurement.
    """
    attempts = bench.topic(bench.fresh("lat-attempts"), bench.args.partitions)
    evals = bench.topic(bench.fresh("lat-evals"), bench.args.partitions)
    group = bench.fresh("latency")
    quiet_s = 0.0 if bench.args.quick else quiesce()  # --quick checks correctness only
    proc = bench.processor(group, evals, attempts_topic=attempts, extra=bench.args.latency_arg)
    ready_s = wait_ready(proc, 300)
    samples: list[tuple[float, float]] = []  # (send ms, latency ms)

    def on_message(now_ms: float, value: bytes) -> None:
        sent_ms = event_time_of(value)
        samples.append((sent_ms, now_ms - sent_ms))

    reader = Reader(bench.bootstrap, evals, on_message)
    time.sleep(1.0)  # the reader's assignment settles
    load = bench.worker("load", group + "-load", topic=attempts,
                        extra=["--w-rate", str(rate), "--w-seconds", str(warmup + seconds), "--w-linger-ms",
                               str(bench.args.load_linger_ms), "--w-accounts",
                               str(bench.args.accounts), "--w-huge", str(bench.args.huge_allowlists)])
    # CPU of each party over the offered window (2 CPUs shared by all of them and the broker).
    pids = {"processor": proc.popen.pid, "load_generator": load.popen.pid, "bench_reader": os.getpid()}
    if bench.broker_pid:
        pids["broker"] = bench.broker_pid
    time.sleep(warmup + min(2.0, seconds / 4))  # past the warm-up and the generator's start-up (templates)
    cpu0 = {k: cpu_seconds(p) for k, p in pids.items()}
    machine0, t0 = machine_cpu_seconds(), time.monotonic()
    time.sleep(max(0.0, seconds / 2))
    cpu1 = {k: cpu_seconds(p) for k, p in pids.items()}
    machine1, t1 = machine_cpu_seconds(), time.monotonic()
    cpu = {k: round((cpu1[k] - cpu0[k]) / (t1 - t0), 2) for k in pids if cpu0[k] is not None and cpu1[k] is not None}
    cpu["machine"] = round((machine1 - machine0) / (t1 - t0), 2)
    rc = load.popen.wait(warmup + seconds + 120)
    if rc != 0:
        raise RuntimeError(f"load generator failed:\n{tail(load.log)}")
    proc.check()
    sent = json.loads(load.log.read_text().strip().splitlines()[-1])
    # Everything offered is evaluated and committed: wait for the group to reach the end.
    watch = CommitWatch(bench.bootstrap, group, attempts)
    deadline = time.monotonic() + 60
    while watch.total() < sent["sent"] and time.monotonic() < deadline:
        time.sleep(0.1)
    watch.close()
    time.sleep(1.0)
    reader.close()
    commits = proc.histogram("access_eval_commit_seconds")
    # The generator's clock starts with its first send: the measured window begins `warmup` after it.
    t_first = min((t for t, _ in samples), default=0.0)
    measured_from = t_first + warmup * 1000
    lat = sorted(x for t, x in samples if t >= measured_from)
    early = sorted(x for t, x in samples if t < measured_from)
    windows = []
    by_window: dict[int, list[float]] = {}
    for t, x in samples:  # by send time, from the first send (the warm-up's windows included)
        by_window.setdefault(int((t - t_first) // 5000), []).append(x)
    for k in sorted(by_window):
        xs = sorted(by_window[k])
        windows.append({"from_s": k * 5, "warmup": k * 5 < warmup, "events": len(xs),
                        "p50_ms": round(percentile(xs, 0.5), 1), "p99_ms": round(percentile(xs, 0.99), 1)})
    out = {
        "offered_per_s": round(rate),
        "achieved_per_s": round(sent["sent"] / sent["seconds"]),
        "seconds": seconds,
        "warmup_seconds": warmup,
        "warmup": {"events": len(early), "p50_ms": round(percentile(early, 0.5), 1) if early else None,
                   "p99_ms": round(percentile(early, 0.99), 1) if early else None,
                   "max_ms": round(early[-1], 1) if early else None},
        "attempts": sent["sent"],
        "events": len(lat),
        "p50_ms": round(percentile(lat, 0.50), 1),
        "p99_ms": round(percentile(lat, 0.99), 1),
        "max_ms": round(lat[-1], 1) if lat else None,
        "processor_ready_s": round(ready_s, 2),
        "quiesce_s": quiet_s,
        "processor_args": bench.args.latency_arg,
        "cpu": cpu,
        "commits": commits,
        "by_5s_window": windows,
    }
    say(f"  latency at {rate:,.0f}/s: p50 {out['p50_ms']} ms p99 {out['p99_ms']} ms max {out['max_ms']} ms "
        f"({len(lat)} events); warm-up {out['warmup']}; cpu {cpu}; transaction commits {commits}")
    return out, proc, attempts, evals


# --- 4: settings ---------------------------------------------------------------------------------


def propagation(bench: Bench, mixed: Mixed, proc: Proc, attempts: str, evals: str, changes: int) -> dict[str, Any]:
    """Publish `changes` settings versions of the probe account (monitor) while probe attempts flow;
    delay = evaluatedAt of the first eval event naming the new version - the record's timestamp."""
    from processor.codec.avro import EvalCodec

    codec = EvalCodec()
    seen: dict[int, float] = {}  # settings offset -> first evaluatedAt
    lock = threading.Lock()

    def on_message(_now: float, value: bytes) -> None:
        e = codec.decode(value)
        if e["target"]["accountId"] != mixed.probe_account:
            return
        off = e["responseData"]["settingsVersion"]["offset"]
        at = e["observer"]["evaluatedAt"]
        at_ms = at.timestamp() * 1000 if hasattr(at, "timestamp") else float(at)
        with lock:
            if off not in seen or at_ms < seen[off]:
                seen[off] = at_ms

    # From the current end: the latency section's ~900k events before it are of no interest, and
    # decoding them first took longer than a change's deadline.
    reader = Reader(bench.bootstrap, evals, on_message, start=end_offsets(bench.bootstrap, evals))
    stop = threading.Event()

    def probe_load() -> None:
        p = Producer({"bootstrap.servers": bench.bootstrap, "linger.ms": 0, "enable.idempotence": True})
        i = 0
        while not stop.is_set():
            i += 1
            p.produce(attempts, attempt_value(f"probe-{i}", mixed.probe_account, mixed.probe_external,
                                              int(time.time() * 1000)), mixed.probe_account.encode())
            p.poll(0)
            time.sleep(0.005)
        p.flush(10)

    sender = threading.Thread(target=probe_load, daemon=True)
    sender.start()
    producer = Producer({"bootstrap.servers": bench.bootstrap, "linger.ms": 0, "enable.idempotence": True})
    delays: list[float] = []
    rng = random.Random(3)
    got: list[Any] = []
    try:
        for k in range(changes):
            time.sleep(0.5 + rng.random())
            proc.check()
            got.clear()
            producer.produce(
                bench.settings_topic,
                probe_doc(mixed.probe_account, [mixed.probe_external + "-x", f"{k:032x}"]),
                mixed.probe_account.encode(),
                on_delivery=lambda err, msg: got.append((err, msg)),
            )
            producer.flush(10)
            err, msg = got[0]
            if err is not None:
                raise RuntimeError(f"settings change not delivered: {err}")
            offset, published_ms = msg.offset(), msg.timestamp()[1]
            deadline = time.monotonic() + 20
            while True:
                with lock:
                    at = seen.get(offset)
                if at is not None:
                    delays.append(at - published_ms)
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"settings change at offset {offset} never reached evaluation")
                time.sleep(0.01)
    finally:
        stop.set()
        sender.join(10)
        reader.close()
    delays.sort()
    out = {
        "changes": len(delays),
        "p50_ms": round(percentile(delays, 0.5), 1),
        "p99_ms": round(percentile(delays, 0.99), 1),
        "max_ms": round(delays[-1], 1) if delays else None,
    }
    say(f"  propagation: p50 {out['p50_ms']} ms p99 {out['p99_ms']} ms over {len(delays)} changes")
    return out


def bootstrap_run(bench: Bench, records: int) -> dict[str, Any]:
    """A settings topic of `records` accounts (allowlists 1-5 ids): time to ready and peak RSS."""
    topic = bench.topic(bench.fresh("boot-settings"), 3, {"cleanup.policy": "compact"})
    w = Workload(seed=21, accounts=records, allowlist_min=1, allowlist_max=bench.args.bootstrap_allowlist_max)
    t0 = time.monotonic()
    n, size = preload(bench.bootstrap, topic, settings_docs(w, "2026-01-01T00:00:00Z"))
    preload_s = time.monotonic() - t0
    del w
    gc.collect()
    say(f"  bootstrap topic: {n:,} records, {size / 1e6:.0f} MB in {preload_s:.1f} s")
    attempts = bench.topic(bench.fresh("boot-attempts"), 1)
    evals = bench.topic(bench.fresh("boot-evals"), 1)
    group = bench.fresh("bootstrap")
    proc = bench.processor(group, evals, settings_topic=topic, attempts_topic=attempts, extra=["--log-level", "INFO"])
    try:
        ready_s = wait_ready(proc, 600)
        peak = proc_status_kb(proc.popen.pid, "VmHWM")
        rss = proc_status_kb(proc.popen.pid, "VmRSS")
    finally:
        proc.stop()
    boot_s = None
    for line in proc.log.read_text(errors="replace").splitlines():
        if "settings bootstrapped" in line:
            with contextlib.suppress(ValueError, KeyError):
                boot_s = json.loads(line).get("seconds")
    out = {
        "records": n,
        "megabytes": round(size / 1e6),
        "allowlist_ids": f"1-{bench.args.bootstrap_allowlist_max}",
        "preload_s": round(preload_s, 1),
        "ready_s": round(ready_s, 2),
        "bootstrap_s": boot_s,
        "peak_rss_mb": round(peak / 1024) if peak else None,
        "rss_after_mb": round(rss / 1024) if rss else None,
    }
    say(f"  bootstrap of {n:,} records: ready in {ready_s:.1f} s (bootstrap {boot_s} s), "
        f"peak RSS {out['peak_rss_mb']} MB")
    delete_topics(bench.bootstrap, [topic, attempts, evals])
    for t in (topic, attempts, evals):
        bench.created.remove(t)
    return out


# --- 5: stage costs ------------------------------------------------------------------------------


def stage_costs(bench: Bench, mixed: Mixed, limit: int) -> dict[str, Any]:
    """µs per attempt of each step of the hot path, stage by stage over batches of real messages,
    plus the real `Batch.process` on the same messages for a cross-check."""
    from processor.codec.avro import EvalCodec
    from processor.config import RunConfig
    from processor.core.attempts import parse_attempt
    from processor.core.evaluator import assess
    from processor.core.settings import SettingsHistory
    from processor.health import Health
    from processor.metrics import Metrics, Tally
    from processor.stream.loop import Processor

    history = SettingsHistory()
    t0 = time.perf_counter()
    for i, (k, v) in enumerate(mixed.settings):
        history.apply_record(k, v, 0, bench.settings_topic, 0, i)
    apply_us = (time.perf_counter() - t0) / len(mixed.settings) * 1e6

    c = Consumer({"bootstrap.servers": bench.bootstrap, "group.id": "bench-stages", "enable.auto.commit": False,
                  "isolation.level": "read_committed"})
    c.assign([TopicPartition(bench.attempts_topic, p, 0) for p in partitions_of(bench.bootstrap, bench.attempts_topic)])
    batches: list[list[Any]] = []
    got = 0
    t0 = time.perf_counter()
    while got < limit:
        msgs = [m for m in c.consume(min(5000, limit - got), 1.0) if m.error() is None]
        if msgs:
            batches.append(msgs)
            got += len(msgs)
    consume_us = (time.perf_counter() - t0) / got * 1e6
    c.close()

    codec = EvalCodec()
    scratch = bench.topic(bench.fresh("stages"), bench.args.partitions)
    # The bench's own heap (the mix, the batches) would make the collector's passes cost more here
    # than in the processor: park it in the permanent generation while measuring.
    gc.collect()
    gc.freeze()
    producer = Producer({"bootstrap.servers": bench.bootstrap, "enable.idempotence": True, "linger.ms": 10,
                         "batch.size": 1_000_000, "compression.type": "lz4", "queue.buffering.max.messages": 1_000_000})
    now_ms = int(time.time() * 1000)
    # Per message, in the real loop's order, with a clock read between steps (~0.1 µs each):
    # stage-by-stage passes over whole batches would keep thousands of objects alive and charge
    # the garbage collector to whichever stage happens to trigger it.
    clock = time.perf_counter
    t_parse = t_eval = t_encode = t_produce = 0.0
    emitted = 0
    headers = codec.headers
    encode = codec.encode_evaluation
    produce = producer.produce
    for msgs in batches:
        tally = Tally()
        for m in msgs:
            t_a = clock()
            a = parse_attempt(m.value(), now_ms)
            t_b = clock()
            v, ver, ex = assess(history, a)
            tally.add(v.outcome, a.data["identity"]["type"], v.state, a.data["account_id"])
            t_c = clock()
            t_parse += t_b - t_a
            t_eval += t_c - t_b
            if v.emit:
                value = encode(a, v, ver, ex, now_ms)
                t_e = clock()
                while True:
                    try:
                        produce(scratch, value, a.data["account_id"].encode(), headers=headers)
                        break
                    except BufferError:
                        producer.poll(0.01)
                t_f = clock()
                t_encode += t_e - t_c
                t_produce += t_f - t_e
                emitted += 1
        t_a = clock()
        producer.poll(0)
        t_produce += clock() - t_a
    t_a = clock()
    producer.flush(60)
    t_produce += clock() - t_a
    totals = {"decode_validate": t_parse, "evaluate": t_eval, "encode": t_encode, "produce": t_produce}

    # The real hot path, in process, on the same messages (exactly-once, commit every 10 batches).
    cfg = RunConfig(bootstrap_servers=bench.bootstrap, group_id=bench.fresh("stages-group"),
                    settings_topic=bench.settings_topic, attempts_topic=bench.attempts_topic, eval_topic=scratch,
                    dlq_topic=bench.dlq_topic, transactional_id=bench.fresh("stages-txn"))
    proc = Processor(cfg, Metrics(), Health(), codec)
    proc.history = history
    txn = proc.open_clients()
    assert proc.batch is not None
    proc.consumer.assign([TopicPartition(bench.attempts_topic, p, 0)
                          for p in partitions_of(bench.bootstrap, bench.attempts_topic)])
    t0 = time.perf_counter()
    t_process = 0.0
    for i, msgs in enumerate(batches):
        t_a = time.perf_counter()
        proc.batch.process(msgs)
        t_process += time.perf_counter() - t_a
        if i % 10 == 9:
            txn.commit()
    if txn.open:
        txn.commit()
    t_total = time.perf_counter() - t0
    proc.consumer.close()
    txn.producer.flush(30)
    proc.table.close()

    # A 10,000-id allowlist costs the same as a small one (set lookup).
    from processor.core.policy import evaluate

    huge = [a for a, ids in mixed.workload.allow.items() if len(ids) >= 10_000 and a not in
            mixed.workload.unrestricted_ids]
    small = [a for a, ids in mixed.workload.allow.items() if len(ids) <= 50 and a in mixed.monitor][:1]
    allow_cost: dict[str, float] = {}
    for label, accounts in (("small", small), ("huge", huge[:1])):
        if not accounts:
            continue
        version, _ = history.lookup(accounts[0], now_ms)
        assert version is not None
        rules = version.rules
        ids = mixed.workload.allow[accounts[0]]
        probes = [ids[i % len(ids)] for i in range(500)] + [f"{i:032x}" for i in range(500)]
        n = 0
        t0 = time.perf_counter()
        for _ in range(200):
            for ext in probes:
                evaluate(accounts[0], ext, "user", rules)
                n += 1
        allow_cost[label] = round((time.perf_counter() - t0) / n * 1e6, 3)

    per = {k: round(v / got * 1e6, 2) for k, v in totals.items()}
    out = {
        "attempts": got,
        "emitted": emitted,
        "us_per_attempt": {"consume": round(consume_us, 2), **per,
                           "sum": round(consume_us + sum(per.values()), 2)},
        "us_per_event": {k: round(totals[k] / emitted * 1e6, 2) for k in ("encode", "produce")}
        if emitted else {},
        "process_us_per_attempt": round(t_process / got * 1e6, 2),
        "process_and_commit_us_per_attempt": round(t_total / got * 1e6, 2),
        "settings_apply_us_per_record": round(apply_us, 2),
        "evaluate_us_by_allowlist": allow_cost,
    }
    say(f"  stages µs/attempt: {out['us_per_attempt']}; Batch.process {out['process_us_per_attempt']}")
    return out


# --- workers (separate processes) ----------------------------------------------------------------


def run_worker(args: argparse.Namespace) -> int:
    """`--worker consume|passthrough`: ceiling clients built by the processor's own client factory;
    `--worker load`: paced attempt producer for the latency measurement."""
    if args.worker == "load":
        return load_worker(args)
    from processor.config import RunConfig
    from processor.kafka import clients

    flags = parse_processor_args(args.processor_arg)
    eos = args.worker == "passthrough"
    cfg = RunConfig(bootstrap_servers=args.bootstrap_servers, group_id=args.w_group, attempts_topic=args.w_topic,
                    eval_topic=args.w_out_topic or "unused", transactional_id=args.w_txn_id,
                    delivery="exactly-once" if eos else "at-least-once", **flags)
    props = cfg.kafka_properties()
    consumer = Consumer(clients.processor_consumer_conf(props, cfg.group_id))
    producer = Producer(clients.processor_producer_conf(props, cfg.txn_id())) if eos else None
    if producer is not None:
        producer.init_transactions(30)
    stopping = [False]

    def stop(_s: int, _f: Any) -> None:
        stopping[0] = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    consumer.subscribe([args.w_topic])
    commit_s = cfg.commit_interval_ms / 1000
    offsets: dict[tuple[str, int], int] = {}
    in_txn = False
    started = 0.0
    out = args.w_out_topic

    def commit() -> None:
        nonlocal in_txn
        tps = [TopicPartition(t, p, o) for (t, p), o in offsets.items()]
        if producer is not None:
            if tps:
                producer.send_offsets_to_transaction(tps, consumer.consumer_group_metadata(), 30)
            producer.commit_transaction(30)
        elif tps:
            consumer.commit(offsets=tps, asynchronous=False)
        offsets.clear()
        in_txn = False

    while not stopping[0]:
        msgs = consumer.consume(cfg.batch_size, 0.1)
        if msgs:
            if not in_txn:
                if producer is not None:
                    producer.begin_transaction()
                in_txn, started = True, time.monotonic()
            for m in msgs:
                if m.error() is not None:
                    continue
                offsets[(m.topic(), m.partition())] = m.offset() + 1
                if producer is not None:
                    while True:
                        try:
                            producer.produce(out, m.value(), m.key())
                            break
                        except BufferError:
                            producer.poll(0.05)
            if producer is not None:
                producer.poll(0)
        if in_txn and time.monotonic() - started >= commit_s:
            commit()
    if in_txn:
        commit()
    consumer.close()
    return 0


def parse_processor_args(argv: list[str]) -> dict[str, Any]:
    """`--batch-size 5000`-style processor flags -> RunConfig fields (for the ceiling workers)."""
    flags: dict[str, Any] = {}
    it = iter(argv)
    for a in it:
        if not a.startswith("--"):
            continue
        name, _, value = a[2:].partition("=")
        if not value:
            value = next(it, "")
        flags[name.replace("-", "_")] = value
    return {k: v for k, v in flags.items() if k in ("batch_size", "commit_interval_ms")}


def load_worker(args: argparse.Namespace) -> int:
    """Offer `--w-rate` attempts/s of the reference mix (event_time = send time) for `--w-seconds`."""
    w = Workload(seed=7, accounts=args.w_accounts, huge_allowlists=args.w_huge)
    for _ in w.settings():
        pass
    templates: list[tuple[bytes, bytes, bytes]] = []
    marker = b'"event_time":"'
    for key, value, _ in w.attempts(min(200_000, max(10_000, int(args.w_rate * 2))), start_ms=0):
        i = value.index(marker) + len(marker)
        j = value.index(b'"', i)
        templates.append((key, value[:i], value[j:]))
    p = Producer({"bootstrap.servers": args.bootstrap_servers, "enable.idempotence": True,
                  "linger.ms": args.w_linger_ms, "compression.type": "lz4", "queue.buffering.max.messages": 1_000_000})
    rate, seconds = args.w_rate, args.w_seconds
    n = 0
    start = time.monotonic()
    last_ms = 0
    stamp = b""
    while True:
        elapsed = time.monotonic() - start
        if elapsed >= seconds:
            break
        due = int(rate * elapsed)
        now_ms = int(time.time() * 1000)  # once per tick: an attempt is stamped <= 2 ms before its send
        if now_ms != last_ms:
            last_ms, stamp = now_ms, rfc3339_millis(now_ms).encode()
        while n < due:
            key, head, rest = templates[n % len(templates)]
            try:
                p.produce(args.w_topic, head + stamp + rest, key)
            except BufferError:
                p.poll(0.01)
                continue
            n += 1
        p.poll(0)
        time.sleep(0.002)
    elapsed = time.monotonic() - start
    p.flush(60)
    print(json.dumps({"sent": n, "seconds": elapsed}))
    return 0


# --- report --------------------------------------------------------------------------------------


def table(results: dict[str, Any]) -> str:
    lines = []
    m = results["machine"]
    lines.append(f"machine: {m['nproc']} CPUs ({m['cpu']}), {m['ram_gb']} GB RAM, Python {m['python']}, "
                 f"Kafka {m['kafka']}, librdkafka {m['librdkafka']}")
    c = results["config"]
    lines.append(f"mix: {c['attempts']:,} attempts, {c['accounts']:,} accounts, {c['partitions']} partitions; "
                 f"{results['expected']['events']:,} eval events expected; median of {c['runs']} run(s)")
    pre = results["preload"]
    lines.append(f"preload: settings {pre['settings_s']} s, attempts {pre['attempts_s']} s "
                 f"({pre['attempts_mb']} MB)")
    lines.append("")
    lines.append(f"{'throughput (attempts/s)':<40}{'median':>12}  {'runs':<30} correct")
    tp = results["throughput"]
    for key, label in (("exactly_once_1", "exactly-once, 1 process"), ("exactly_once_2", "exactly-once, 2 processes"),
                       ("at_least_once_1", "at-least-once, 1 process"),
                       ("at_least_once_2", "at-least-once, 2 processes"),
                       ("ceiling_consume", "ceiling: plain consumer"),
                       ("ceiling_passthrough", "ceiling: transactional pass-through")):
        if key in tp:
            r = tp[key]
            runs = ", ".join(num(x["attempts_per_s"]) for x in r["runs"])
            lines.append(f"{label:<40}{num(r['attempts_per_s']):>12}  {runs:<30} {r['correct']}")
    ratios = results.get("ratios", {})
    if ratios:
        lines.append(f"exactly-once x1 / plain consumer: {ratios.get('eos_vs_consume')}; "
                     f"/ pass-through: {ratios.get('eos_vs_passthrough')}")
    if "latency" in results:
        lat = results["latency"]
        lines.append("")
        lines.append(f"latency at {lat['offered_per_s']:,}/s offered ({lat['achieved_per_s']:,}/s achieved, "
                     f"{lat['seconds']} s, {lat['events']:,} events): p50 {lat['p50_ms']} ms, p99 {lat['p99_ms']} ms, "
                     f"max {lat['max_ms']} ms")
        lines.append("  runs (p50 / p99 / max ms; the median p99 is the line above): " + "; ".join(
            f"{r['p50_ms']} / {r['p99_ms']} / {r['max_ms']}" for r in lat["runs"]))
        wu = lat["warmup"]
        lines.append(f"  {lat['warmup_seconds']} s warm-up before it: p50 {wu['p50_ms']} ms, p99 {wu['p99_ms']} ms, "
                     f"max {wu['max_ms']} ms; transaction commit mean {lat['commits']['mean_ms']} ms")
    if "settings" in results:
        s = results["settings"]
        b = s.get("bootstrap")
        if b:
            lines.append(f"settings bootstrap: {b['records']:,} records ({b['megabytes']} MB, allowlists "
                         f"{b['allowlist_ids']} ids): ready in {b['ready_s']} s (bootstrap {b['bootstrap_s']} s), "
                         f"peak RSS {b['peak_rss_mb']} MB")
        p = s.get("propagation")
        if p:
            lines.append(f"settings change propagation: p50 {p['p50_ms']} ms, p99 {p['p99_ms']} ms, "
                         f"max {p['max_ms']} ms ({p['changes']} changes)")
    if "stages" in results:
        st = results["stages"]
        lines.append("")
        lines.append("stage costs, µs per attempt: " + ", ".join(f"{k} {v}" for k, v in st["us_per_attempt"].items()))
        if st.get("us_per_event"):
            lines.append("  per emitted event: " + ", ".join(f"{k} {v}" for k, v in st["us_per_event"].items()))
        lines.append(f"  Batch.process in process: {st['process_us_per_attempt']} µs/attempt "
                     f"({st['process_and_commit_us_per_attempt']} with commits); settings apply "
                     f"{st['settings_apply_us_per_record']} µs/record; evaluate by allowlist size "
                     f"{st['evaluate_us_by_allowlist']}")
    lines.append(f"\nall counts correct: {results['correct']}")
    return "\n".join(lines)


# --- main ----------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bootstrap-servers", help="use this broker instead of starting one")
    p.add_argument("--quick", action="store_true", help="small sizes for the test suite (correctness only)")
    p.add_argument("--attempts", type=int, help="attempts in the mix (1,000,000)")
    p.add_argument("--accounts", type=int, help="accounts with settings (100,000)")
    p.add_argument("--huge-allowlists", type=int, help="x3 first accounts get 10,000-id allowlists (3)")
    p.add_argument("--partitions", type=int, default=12)
    p.add_argument("--runs", type=int, help="runs per throughput configuration; the median is reported (3)")
    p.add_argument("--latency-seconds", type=float, help="duration of the latency measurement (60)")
    p.add_argument("--latency-warmup-seconds", type=float,
                   help="load offered before the measured window, reported apart (10)")
    p.add_argument("--latency-rate", type=float, help="offered attempts/s (default: half the exactly-once x1 figure)")
    p.add_argument("--settings-records", type=int, help="records of the bootstrap measurement (1,000,000)")
    p.add_argument("--bootstrap-allowlist-max", type=int, default=5, help="allowlist ids per bootstrap record (1-5)")
    p.add_argument("--changes", type=int, help="settings changes for the propagation measurement (20)")
    p.add_argument("--stage-attempts", type=int, help="attempts for the in-process stage costs (200,000)")
    p.add_argument("--throughput-configs", default="exactly_once_1,exactly_once_2,at_least_once_1,at_least_once_2",
                   help="which throughput configurations to run")
    p.add_argument("--only", default="throughput,ceiling,latency,settings,stages",
                   help="comma list of sections: throughput, ceiling, latency, settings (= propagation + "
                   "bootstrap), stages")
    p.add_argument("--processor-arg", action="append", default=[],
                   help="extra flag for every `access-eval run` (repeatable, e.g. --processor-arg=--batch-size=10000)")
    p.add_argument("--load-linger-ms", type=float, default=5,
                   help="linger.ms of the latency section's load generator: 5, the Java producer's default since "
                        "Kafka 4.0 (KIP-1030); its batching counts in the latency")
    p.add_argument("--latency-arg", action="append", default=[],
                   help="extra flag for the latency processor only (e.g. --latency-arg=--commit-interval-ms=50)")
    p.add_argument("--run-timeout", type=float, default=900, help="seconds a drain may take")
    p.add_argument("--no-warmup", dest="warmup", action="store_false",
                   help="skip the unreported warm-up drain before the measured runs")
    p.add_argument("--json", type=Path, help="also write the figures here")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory (logs)")
    p.add_argument("--verbose", action="store_true", help="processor logs at INFO")
    # internal: worker processes
    p.add_argument("--worker", choices=["consume", "passthrough", "load"], help=argparse.SUPPRESS)
    p.add_argument("--w-topic", help=argparse.SUPPRESS)
    p.add_argument("--w-group", help=argparse.SUPPRESS)
    p.add_argument("--w-out-topic", default="", help=argparse.SUPPRESS)
    p.add_argument("--w-txn-id", help=argparse.SUPPRESS)
    p.add_argument("--w-rate", type=float, help=argparse.SUPPRESS)
    p.add_argument("--w-linger-ms", type=float, default=1, help=argparse.SUPPRESS)
    p.add_argument("--w-seconds", type=float, help=argparse.SUPPRESS)
    p.add_argument("--w-accounts", type=int, help=argparse.SUPPRESS)
    p.add_argument("--w-huge", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    defaults = QUICK if args.quick else FULL
    for k, v in defaults.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    return args


def prepare(bench: Bench) -> tuple[Mixed, dict[str, Any]]:
    args = bench.args
    create_topics(bench.bootstrap, [
        (bench.settings_topic, 3, {"cleanup.policy": "compact", "max.message.bytes": "16777216"}),
        (bench.attempts_topic, args.partitions, {}),
        (bench.dlq_topic, args.partitions, {}),
    ])
    bench.created += [bench.settings_topic, bench.attempts_topic, bench.dlq_topic]
    now_ms = int(time.time() * 1000)
    t0 = time.monotonic()
    w = Workload(seed=7, accounts=args.accounts, huge_allowlists=args.huge_allowlists, mix=Mix())
    # In force since yesterday: every attempt (event times of the last `attempts` ms) is evaluated exactly.
    settings = list(settings_docs(w, rfc3339_millis(now_ms - 86_400_000)))
    rng = random.Random(99)
    probe, probe_ext = f"{rng.getrandbits(128):032x}", f"{rng.getrandbits(128):032x}"
    settings.append((probe.encode(), probe_doc(probe, [probe_ext], rfc3339_millis(now_ms - 86_400_000))))
    gen_settings_s = time.monotonic() - t0
    t0 = time.monotonic()
    _, settings_bytes = preload(bench.bootstrap, bench.settings_topic, settings, **{"message.max.bytes": 16_000_000})
    settings_s = time.monotonic() - t0
    say(f"settings: {len(settings):,} records, {settings_bytes / 1e6:.0f} MB, generated in {gen_settings_s:.1f} s, "
        f"produced in {settings_s:.1f} s")

    monitor = set(w.monitor_ids)
    outcomes: Counter[str] = Counter()
    expected = 0
    t0 = time.monotonic()
    records: list[tuple[bytes, bytes]] = []
    for key, value, outcome in w.attempts(args.attempts, start_ms=now_ms - args.attempts, step_ms=1):
        outcomes[outcome] += 1
        if outcome in EMITTING or (outcome == "permit" and key.decode() in monitor):
            expected += 1
        records.append((key, value))
    gen_s = time.monotonic() - t0
    t0 = time.monotonic()
    n, size = preload(bench.bootstrap, bench.attempts_topic, records)
    attempts_s = time.monotonic() - t0
    del records
    say(f"attempts: {n:,} records, {size / 1e6:.0f} MB, generated in {gen_s:.1f} s, produced in {attempts_s:.1f} s; "
        f"outcomes {dict(outcomes)}; {expected:,} eval events expected")
    mixed = Mixed(w, settings, n, outcomes, expected, monitor, probe, probe_ext)
    pre = {
        "settings_records": len(settings),
        "settings_mb": round(settings_bytes / 1e6),
        "settings_generate_s": round(gen_settings_s, 1),
        "settings_s": round(settings_s, 1),
        "attempts_generate_s": round(gen_s, 1),
        "attempts_s": round(attempts_s, 1),
        "attempts_mb": round(size / 1e6),
    }
    return mixed, pre


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        return run_worker(args)
    sections = set(args.only.split(","))
    tmp = Path(tempfile.mkdtemp(prefix="access-eval-bench-"))
    broker_dir: Path | None = None
    broker_pid: int | None = None
    bootstrap = args.bootstrap_servers
    started = time.monotonic()
    try:
        if bootstrap is None:
            broker_dir = tmp / "kafka"
            port = free_port()
            info = local.start(port=port, data_dir=broker_dir, controller_port=free_port(), progress=say)
            bootstrap, broker_pid = info.bootstrap, info.pid
        bench = Bench(args, bootstrap, tmp, f"bench.{uuid.uuid4().hex[:8]}", broker_pid)
        try:
            results = run_all(bench, sections)
        finally:
            for p in bench.procs:
                if p.alive():
                    p.stop(30)
            if args.bootstrap_servers:
                delete_topics(bootstrap, bench.created)
    finally:
        if broker_dir is not None:
            local.stop(broker_dir)
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            say(f"kept {tmp}")
    results["bench_seconds"] = round(time.monotonic() - started, 1)
    print(table(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
        say(f"wrote {args.json}")
    return 0 if results["correct"] else 1


def run_all(bench: Bench, sections: set[str]) -> dict[str, Any]:
    args = bench.args
    results: dict[str, Any] = {
        "machine": machine_facts(),
        "config": {
            "quick": args.quick,
            "warmup": args.warmup,
            "attempts": args.attempts,
            "accounts": args.accounts,
            "huge_allowlists": args.huge_allowlists * 2,
            "partitions": args.partitions,
            "runs": args.runs,
            "processor_args": args.processor_arg,
            "mix": vars(Mix()),
        },
    }
    mixed, results["preload"] = prepare(bench)
    results["expected"] = {"events": mixed.expected_events, "outcomes": dict(mixed.outcomes)}
    tp: dict[str, Any] = {}
    results["throughput"] = tp
    if args.warmup and ({"throughput", "ceiling", "latency"} & sections):
        # The broker's JIT compiles its fetch/produce/transaction paths during the first minute:
        # one unreported transactional pass-through drain first, so the first measured run is not slower.
        say("warm-up: one transactional pass-through drain (not reported)")
        ceiling_run(bench, mixed, "passthrough", -1)
    if "throughput" in sections:
        for delivery, key in (("exactly-once", "exactly_once"), ("at-least-once", "at_least_once")):
            for nprocs in (1, 2):
                if f"{key}_{nprocs}" not in args.throughput_configs.split(","):
                    continue
                say(f"throughput: {delivery}, {nprocs} process(es)")
                tp[f"{key}_{nprocs}"] = summarise(
                    [throughput_run(bench, mixed, delivery, nprocs, r) for r in range(args.runs)]
                )
    if "ceiling" in sections:
        for mode in ("consume", "passthrough"):
            say(f"ceiling: {mode}")
            tp[f"ceiling_{mode}"] = summarise([ceiling_run(bench, mixed, mode, r) for r in range(args.runs)])
    if "exactly_once_1" in tp and "ceiling_consume" in tp:
        eos = tp["exactly_once_1"]["attempts_per_s"]

        def ratio(key: str) -> float | None:
            base = tp[key]["attempts_per_s"]
            return round(eos / base, 3) if eos and base else None

        results["ratios"] = {
            "eos_vs_consume": ratio("ceiling_consume"),
            "eos_vs_passthrough": ratio("ceiling_passthrough"),
        }
    settings: dict[str, Any] = {}
    if "settings" in sections:
        sections |= {"propagation", "bootstrap"}
    if "latency" in sections or "propagation" in sections:
        base = tp.get("exactly_once_1", {}).get("attempts_per_s") or 20_000
        rate = args.latency_rate or base / 2
        say(f"latency: {rate:,.0f} attempts/s for {args.latency_warmup_seconds} s + {args.latency_seconds} s")
        lat_runs: list[dict[str, Any]] = []
        procs: list[Proc] = []
        for _ in range(args.runs if "latency" in sections else 1):  # each on fresh topics, a new processor
            for earlier in procs:
                earlier.stop()  # the last run's processor serves the propagation measurement
            lat, proc, lat_attempts, lat_evals = latency(
                bench, mixed, rate, args.latency_seconds if "latency" in sections else 1.0,
                args.latency_warmup_seconds if "latency" in sections else 0.0,
            )
            lat_runs.append(lat)
            procs = [proc]
        if "latency" in sections:
            results["latency"] = median_latency_run(lat_runs)
        if "propagation" in sections:
            say(f"settings: propagation of {args.changes} changes")
            settings["propagation"] = propagation(bench, mixed, proc, lat_attempts, lat_evals, args.changes)
        proc.stop()
    if "bootstrap" in sections:
        say(f"settings: bootstrap of {args.settings_records:,} records")
        settings["bootstrap"] = bootstrap_run(bench, args.settings_records)
    if settings:
        results["settings"] = settings
    if "stages" in sections:
        say("stage costs (in process)")
        results["stages"] = stage_costs(bench, mixed, min(args.stage_attempts, mixed.attempts_total))
    checks = [v["correct"] for v in tp.values()]
    if "latency" in results:
        checks.append(results["latency"]["events"] > 0)
    if "propagation" in settings:
        checks.append(settings["propagation"]["changes"] == args.changes)
    results["correct"] = all(checks)
    return results


if __name__ == "__main__":
    sys.exit(main())
