"""Section 3: attempt produced -> eval event visible, at a paced load on fresh topics."""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from bench.kafka.common import (
    cpu_seconds,
    machine_cpu_seconds,
    percentile,
    say,
)
from bench.kafka.procs import Bench, Proc, tail
from bench.kafka.topics import (
    CommitWatch,
    partitions_of,
    quiesce,
)
from bench.kafka.workload import Mixed


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


def cpu_over(pids: dict[str, int], seconds: float) -> dict[str, float]:
    """Busy CPUs of each named process, and of the whole machine, over the next `seconds`."""
    cpu0 = {k: cpu_seconds(p) for k, p in pids.items()}
    machine0, t0 = machine_cpu_seconds(), time.monotonic()
    time.sleep(seconds)
    cpu1 = {k: cpu_seconds(p) for k, p in pids.items()}
    machine1, t1 = machine_cpu_seconds(), time.monotonic()
    cpu = {k: round((cpu1[k] - cpu0[k]) / (t1 - t0), 2) for k in pids if cpu0[k] is not None and cpu1[k] is not None}
    cpu["machine"] = round((machine1 - machine0) / (t1 - t0), 2)
    return cpu


def by_5s_window(samples: list[tuple[float, float]], t_first: float, warmup: float) -> list[dict[str, Any]]:
    """Latency percentiles by send time in 5 s windows from the first send (the warm-up's included)."""
    windows = []
    by_window: dict[int, list[float]] = {}
    for t, x in samples:
        by_window.setdefault(int((t - t_first) // 5000), []).append(x)
    for k in sorted(by_window):
        xs = sorted(by_window[k])
        windows.append({"from_s": k * 5, "warmup": k * 5 < warmup, "events": len(xs),
                        "p50_ms": round(percentile(xs, 0.5), 1), "p99_ms": round(percentile(xs, 0.99), 1)})
    return windows


def latency_reader(bootstrap: str, evals: str) -> tuple[Reader, list[tuple[float, float]]]:
    """A reader of the eval topic and the (send ms, latency ms) samples it appends to, one per event."""
    samples: list[tuple[float, float]] = []

    def on_message(now_ms: float, value: bytes) -> None:
        sent_ms = event_time_of(value)
        samples.append((sent_ms, now_ms - sent_ms))

    return Reader(bootstrap, evals, on_message), samples


def start_load(bench: Bench, group: str, attempts: str, rate: float, seconds: float) -> Proc:
    """The paced load generator (a worker process, so it never competes with the reader for the GIL)."""
    return bench.worker("load", group + "-load", topic=attempts,
                        extra=["--w-rate", str(rate), "--w-seconds", str(seconds), "--w-linger-ms",
                               str(bench.args.load_linger_ms), "--w-accounts",
                               str(bench.args.accounts), "--w-huge", str(bench.args.huge_allowlists)])


def wait_committed(bench: Bench, group: str, attempts: str, sent: int) -> None:
    """Everything offered is evaluated and committed: wait (60 s at most) for the group to reach the end."""
    watch = CommitWatch(bench.bootstrap, group, attempts)
    deadline = time.monotonic() + 60
    while watch.total() < sent and time.monotonic() < deadline:
        time.sleep(0.1)
    watch.close()


def _warmup_figures(early: list[float]) -> dict[str, Any]:
    return {"events": len(early), "p50_ms": round(percentile(early, 0.5), 1) if early else None,
            "p99_ms": round(percentile(early, 0.99), 1) if early else None,
            "max_ms": round(early[-1], 1) if early else None}


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
    reader, samples = latency_reader(bench.bootstrap, evals)
    time.sleep(1.0)  # the reader's assignment settles
    load = start_load(bench, group, attempts, rate, warmup + seconds)
    # CPU of each party over the offered window (2 CPUs shared by all of them and the broker).
    pids = {"processor": proc.popen.pid, "load_generator": load.popen.pid, "bench_reader": os.getpid()}
    if bench.broker_pid:
        pids["broker"] = bench.broker_pid
    time.sleep(warmup + min(2.0, seconds / 4))  # past the warm-up and the generator's start-up (templates)
    cpu = cpu_over(pids, max(0.0, seconds / 2))
    rc = load.popen.wait(warmup + seconds + 120)
    if rc != 0:
        raise RuntimeError(f"load generator failed:\n{tail(load.log)}")
    proc.check()
    sent = json.loads(load.log.read_text().strip().splitlines()[-1])
    wait_committed(bench, group, attempts, sent["sent"])
    time.sleep(1.0)
    reader.close()
    commits = proc.histogram("access_eval_commit_seconds")
    # The generator's clock starts with its first send: the measured window begins `warmup` after it.
    t_first = min((t for t, _ in samples), default=0.0)
    measured_from = t_first + warmup * 1000
    lat = sorted(x for t, x in samples if t >= measured_from)
    early = sorted(x for t, x in samples if t < measured_from)
    out = {
        "offered_per_s": round(rate),
        "achieved_per_s": round(sent["sent"] / sent["seconds"]),
        "seconds": seconds,
        "warmup_seconds": warmup,
        "warmup": _warmup_figures(early),
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
        "by_5s_window": by_5s_window(samples, t_first, warmup),
    }
    say(f"  latency at {rate:,.0f}/s: p50 {out['p50_ms']} ms p99 {out['p99_ms']} ms max {out['max_ms']} ms "
        f"({len(lat)} events); warm-up {out['warmup']}; cpu {cpu}; transaction commits {commits}")
    return out, proc, attempts, evals
