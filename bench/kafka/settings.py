"""Section 4: settings topic bootstrap (ready time, peak RSS) and settings change propagation."""

from __future__ import annotations

import contextlib
import gc
import json
import random
import threading
import time
from typing import Any

from confluent_kafka import Producer

from bench.kafka.common import (
    percentile,
    proc_status_kb,
    say,
)
from bench.kafka.latency import Reader, wait_ready
from bench.kafka.procs import Bench, Proc
from bench.kafka.topics import (
    end_offsets,
    preload,
)
from bench.kafka.workload import Mixed, attempt_value, probe_doc, settings_docs
from processor.local.workload import Workload


class FirstEvaluations:
    """The first evaluatedAt of the probe account's eval events per settings offset (fed by a Reader)."""

    def __init__(self, probe_account: str) -> None:
        from processor.codec.avro import EvalCodec

        self.codec = EvalCodec()
        self.probe_account = probe_account
        self.seen: dict[int, float] = {}  # settings offset -> first evaluatedAt
        self.lock = threading.Lock()

    def on_message(self, _now: float, value: bytes) -> None:
        e = self.codec.decode(value)
        if e["target"]["accountId"] != self.probe_account:
            return
        off = e["responseData"]["settingsVersion"]["offset"]
        at = e["observer"]["evaluatedAt"]
        at_ms = at.timestamp() * 1000 if hasattr(at, "timestamp") else float(at)
        with self.lock:
            if off not in self.seen or at_ms < self.seen[off]:
                self.seen[off] = at_ms

    def wait(self, offset: int, timeout: float = 20) -> float:
        """The first evaluatedAt (ms) of an event naming the settings version at `offset`."""
        deadline = time.monotonic() + timeout
        while True:
            with self.lock:
                at = self.seen.get(offset)
            if at is not None:
                return at
            if time.monotonic() > deadline:
                raise RuntimeError(f"settings change at offset {offset} never reached evaluation")
            time.sleep(0.01)


def probe_load(bench: Bench, mixed: Mixed, attempts: str, stop: threading.Event) -> None:
    """Probe attempts every 5 ms until `stop` (run in a thread)."""
    p = Producer({"bootstrap.servers": bench.bootstrap, "linger.ms": 0, "enable.idempotence": True})
    i = 0
    while not stop.is_set():
        i += 1
        p.produce(attempts, attempt_value(f"probe-{i}", mixed.probe_account, mixed.probe_external,
                                          int(time.time() * 1000)), mixed.probe_account.encode())
        p.poll(0)
        time.sleep(0.005)
    p.flush(10)


def publish_change(producer: Producer, bench: Bench, mixed: Mixed, k: int) -> tuple[int, int]:
    """Publish the probe account's `k`th settings version -> (its offset, its timestamp ms)."""
    got: list[Any] = []
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
    return msg.offset(), msg.timestamp()[1]


def propagation(bench: Bench, mixed: Mixed, proc: Proc, attempts: str, evals: str, changes: int) -> dict[str, Any]:
    """Publish `changes` settings versions of the probe account (monitor) while probe attempts flow;
    delay = evaluatedAt of the first eval event naming the new version - the record's timestamp."""
    first = FirstEvaluations(mixed.probe_account)
    # From the current end: the latency section's ~900k events before it are of no interest, and
    # decoding them first took longer than a change's deadline.
    reader = Reader(bench.bootstrap, evals, first.on_message, start=end_offsets(bench.bootstrap, evals))
    stop = threading.Event()
    sender = threading.Thread(target=probe_load, args=(bench, mixed, attempts, stop), daemon=True)
    sender.start()
    producer = Producer({"bootstrap.servers": bench.bootstrap, "linger.ms": 0, "enable.idempotence": True})
    delays: list[float] = []
    rng = random.Random(3)
    try:
        for k in range(changes):
            time.sleep(0.5 + rng.random())
            proc.check()
            offset, published_ms = publish_change(producer, bench, mixed, k)
            delays.append(first.wait(offset) - published_ms)
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
    bench.drop(topic, attempts, evals)
    return out
