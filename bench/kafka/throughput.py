"""Sections 1 + 2: draining the preloaded mix through `access-eval run` and through the ceiling clients."""

from __future__ import annotations

import time
from typing import Any

from bench.kafka.common import (
    cpu_seconds,
    machine_cpu_seconds,
    median,
    num,
    proc_status_kb,
    say,
)
from bench.kafka.procs import Bench, Proc
from bench.kafka.topics import (
    CommitWatch,
    count_committed_records,
)
from bench.kafka.workload import Mixed

#: CPU seconds so far of each process, of the broker (when the bench started it) and of the whole machine.
CpuMark = tuple[list[float | None], float | None, float | None]


def cpu_mark(bench: Bench, procs: list[Proc]) -> CpuMark:
    return ([cpu_seconds(p.popen.pid) for p in procs], cpu_seconds(bench.broker_pid) if bench.broker_pid else None,
            machine_cpu_seconds())


def drain(bench: Bench, group: str, procs: list[Proc], total: int, timeout: float) -> dict[str, Any]:
    """Time from the first committed offset to all `total` offsets committed (polled every 50 ms).

    With several processes the clock starts once every one of them is ready (settings bootstrapped,
    partitions assigned), so a process still starting up does not count as part of the group.
    """
    watch = CommitWatch(bench.bootstrap, group, bench.attempts_topic)
    try:
        deadline = time.monotonic() + timeout
        first_t = first_n = None
        # stays unknown when all is committed before the group was complete (tiny --quick)
        mark0: CpuMark = ([None] * len(procs), None, None)
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
                mark0 = cpu_mark(bench, procs)
            if n >= total:
                break
            if now > deadline:
                raise RuntimeError(f"group {group}: {n}/{total} committed after {timeout}s")
            time.sleep(0.05)
        if first_t is None or first_n is None:  # all committed before the group was complete (tiny --quick)
            first_t, first_n = now, total
        elapsed = now - first_t
        mark1 = cpu_mark(bench, procs)
        rss = [proc_status_kb(p.popen.pid, "VmHWM") for p in procs]
    finally:
        watch.close()
    drained = total - first_n
    out: dict[str, Any] = {
        "from_start_s": round(now - min(p.started for p in procs), 3),
        # None when everything was committed before the first observation (tiny --quick sizes)
        "attempts_per_s": round(drained / elapsed) if drained and elapsed > 0 else None,
        "seconds": round(elapsed, 3),
        "attempts_timed": drained,
    }
    return out | cpu_shares(mark0, mark1, elapsed, rss)


def cpu_shares(mark0: CpuMark, mark1: CpuMark, elapsed: float, rss: list[int | None]) -> dict[str, Any]:
    """Busy CPUs of each process, the broker and the whole machine between two marks; peak RSS."""
    (cpu0, broker0, machine0), (cpu1, broker1, machine1) = mark0, mark1
    out: dict[str, Any] = {
        "cpu_per_process": [
            round((b - a) / elapsed, 2) if a is not None and b is not None and elapsed > 0 else None
            for a, b in zip(cpu0, cpu1, strict=True)
        ],
        "peak_rss_mb": [round(r / 1024) if r else None for r in rss],
    }
    if broker0 is not None and broker1 is not None and elapsed > 0:
        out["broker_cpu"] = round((broker1 - broker0) / elapsed, 2)
    if elapsed > 0 and machine0 is not None and machine1 is not None:
        # Busy CPUs of the whole machine during the run: ours plus anything else running (noise).
        out["machine_cpu"] = round((machine1 - machine0) / elapsed, 2)
    return out


def throughput_run(bench: Bench, mixed: Mixed, delivery: str, nprocs: int, rep: int) -> dict[str, Any]:
    group = bench.fresh(f"tp-{delivery}-{nprocs}p-r{rep}")
    evals = bench.topic(bench.fresh("evals"), bench.args.partitions)
    procs = [bench.processor(group, evals, delivery=delivery, instance=i) for i in range(nprocs)]
    try:
        result = drain(bench, group, procs, mixed.attempts_total, bench.args.run_timeout)
        # Transactions committed over the whole drain (each process's commit histogram). The loop checks the
        # commit interval after each batch, so under load it commits once per interval or per full batch,
        # whichever takes longer: a change to the commit pacing shows here.
        result["commits"] = sum(p.histogram("access_eval_commit_seconds")["count"] for p in procs)
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
    bench.drop(evals)
    say(f"  {delivery} x{nprocs} run {rep + 1}: {num(result['attempts_per_s'])} attempts/s, "
        f"events {events}/{mixed.expected_events}, cpu {result['cpu_per_process']}, broker {result.get('broker_cpu')}, "
        f"machine {result.get('machine_cpu')}, "
        f"commits {result.get('commits')} (whole drain; timed {result.get('seconds')} s)")
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
        bench.drop(out_topic)
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
