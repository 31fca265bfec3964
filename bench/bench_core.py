#!/usr/bin/env python
"""Benchmark of the pure evaluation path on one core: attempt JSON bytes -> validate -> evaluate -> Avro.

No Kafka: this is the ceiling of what one processor process can evaluate. The path is the one
`processor/stream/attempt_stage.py` runs per attempt: `parse_attempt` (validate), `assess` (settings lookup at
event time + policy), and for emitted events `EvalCodec.encode_evaluation` (encode).

Workload (generated, deterministic for a seed), shares exact:
  50% same-account, 20% cross-account unrestricted (half into unrestricted accounts, half into
  restricted accounts with another identity type), 15% monitor, 15% limited; half of the
  restricted ones allowlisted. 100k accounts with settings (40% unrestricted, 30% monitor, 30%
  limited), allowlists of 1-50 ids, some of 10,000; 2% of accounts carry two versions.

Measures, per batch of 5,000 (the processor's default batch), the per-attempt loop exactly as the
processor runs it (the headline, attempts/s) and, by running it three times with one stage more
each time, the cost of each stage (they add up to the total). CPU time of the measuring thread is
the headline (the figure is per core, and robust to other processes on the machine); wall-clock
time is printed too. Prints a table, `--json PATH` writes the figures. `--quick` (20k attempts, 5k accounts) checks
correctness only (outcome counts equal the mix's exact counts, every encoded event decodes to what
its attempt should give) and is run by tests/bench/test_bench_core.py; no mode ever asserts a time.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import gc
import io
import json
import pstats
import resource
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.core_workload import (  # noqa: E402
    BASE_MS,
    EXPECT,
    Workload,
    attempt_bytes,
    categories,
    expected_outcomes,
    make_workload,
)
from bench.sysinfo import machine  # noqa: E402
from processor.codec.avro import EvalCodec  # noqa: E402
from processor.core.attempts import Attempt, InvalidAttempt, parse_attempt  # noqa: E402
from processor.core.conflicts import AttemptIdConflicts  # noqa: E402
from processor.core.evaluator import assess  # noqa: E402
from processor.core.settings import SettingsHistory  # noqa: E402

TARGET_PER_S = 120_000
FULL = {"attempts": 300_000, "accounts": 100_000, "huge": 10, "runs": 3}
QUICK = {"attempts": 20_000, "accounts": 5_000, "huge": 2, "runs": 1}


def say(msg: str) -> None:
    print(f"[bench-core {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def code_version() -> dict[str, Any]:
    """Which processor code was measured: its path, the git commit, and whether processor/ was modified."""
    import subprocess

    import processor

    src = Path(processor.__file__).resolve().parent
    info: dict[str, Any] = {"processor": str(src), "commit": None, "dirty": None}
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        commit = subprocess.run(["git", "-C", str(src), "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, timeout=10)
        if commit.returncode == 0:
            info["commit"] = commit.stdout.strip()
            dirty = subprocess.run(["git", "-C", str(src), "status", "--porcelain", "--", "."], capture_output=True,
                                   text=True, timeout=10)
            info["dirty"] = bool(dirty.stdout.strip())
    return info


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --- the workload --------------------------------------------------------------------------------




# --- measurement ---------------------------------------------------------------------------------


@dataclass
class RunResult:
    attempts: int = 0
    emitted: int = 0
    cpu_ns: Counter[str] = field(default_factory=Counter)  # thread CPU time per stage
    wall_ns: Counter[str] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)

    def figures(self, clock: str = "cpu") -> dict[str, float]:
        ns = self.cpu_ns if clock == "cpu" else self.wall_ns
        n = self.attempts
        return {
            "validate_us": ns["validate"] / n / 1000,
            "evaluate_us": ns["evaluate"] / n / 1000,
            "encode_us": ns["encode"] / n / 1000,
            "encode_us_per_event": ns["encode"] / max(self.emitted, 1) / 1000,
            "total_us": ns["fused"] / n / 1000,
            "attempts_per_s": n / (ns["fused"] / 1e9),
        }


def check_batch(cats: bytearray, start: int, parsed: list[Attempt | None], results: list[Any],
                encoded: list[tuple[int, bytes]], codec: EvalCodec, r: RunResult) -> None:
    """Every attempt got its category's outcome; every emitted event decodes to what it should say."""
    for j, res in enumerate(results):
        want = EXPECT[cats[start + j]]
        if res is None or res[0].outcome != want[0]:
            got = "invalid" if res is None else res[0].outcome
            r.errors.append(f"attempt {start + j}: outcome {got}, expected {want[0]}")
        elif res[0].emit != want[1]:
            r.errors.append(f"attempt {start + j}: emit {res[0].emit}, expected {want[1]}")
    emitted_idx = [j for j, res in enumerate(results) if res is not None and res[0].emit]
    if [j for j, _ in encoded] != emitted_idx:
        r.errors.append(f"batch at {start}: encoded events do not match emitted verdicts")
        return
    for j, data in encoded:
        want = EXPECT[cats[start + j]]
        a = parsed[j]
        assert a is not None
        try:
            ev = codec.decode(data)
        except Exception as exc:  # any failure to decode is a correctness error
            r.errors.append(f"attempt {start + j}: event does not decode: {exc}")
            continue
        rd = ev["responseData"]
        if (rd["decision"], rd["state"], rd["isEnforced"], ev["attemptId"], ev["target"]["accountId"]) != (
            want[2], want[3], want[3] == "limited", a.model.id, a.model.account_id
        ):
            r.errors.append(f"attempt {start + j}: event content {rd} differs from expected {want}")


def run_once(w: Workload, history: SettingsHistory, cats: bytearray, batch: int, seed: int, check: bool,
             profile: cProfile.Profile | None = None) -> RunResult:
    """Per batch, three timed passes of the processor's per-attempt loop, each one stage longer:
    validate; validate+evaluate; validate+evaluate+encode (the full path). A stage's cost is the
    difference between consecutive passes, so the stages add up to the full path exactly."""
    codec = EvalCodec()
    encode = codec.encode_evaluation
    conflicts = AttemptIdConflicts()  # attempt_stage.py checks each emitted attempt's id for reuse: part of "encode"
    parse = parse_attempt
    now_ms = BASE_MS + len(cats) + 60_000
    r = RunResult()
    cpu, wall = time.thread_time_ns, time.perf_counter_ns
    for start in range(0, len(cats), batch):
        stop = min(start + batch, len(cats))
        raws = attempt_bytes(w, cats, start, stop, seed)

        c0, w0 = cpu(), wall()
        for raw in raws:
            try:
                attempt = parse(raw, now_ms)
            except InvalidAttempt:
                continue
        c1, w1 = cpu(), wall()
        for raw in raws:
            try:
                attempt = parse(raw, now_ms)
            except InvalidAttempt:
                continue
            verdict, version, exact = assess(history, attempt)
        c2, w2 = cpu(), wall()
        if profile is not None:
            profile.enable()
        c3, w3 = cpu(), wall()
        out: list[bytes] = []
        for raw in raws:
            try:
                attempt = parse(raw, now_ms)
            except InvalidAttempt:
                continue
            verdict, version, exact = assess(history, attempt)
            if verdict.emit:
                conflicts.observe(attempt)
                out.append(encode(attempt, verdict, version, exact, now_ms))
        c4, w4 = cpu(), wall()
        if profile is not None:
            profile.disable()

        _add_stage_times(r.cpu_ns, c0, c1, c2, c3, c4)
        _add_stage_times(r.wall_ns, w0, w1, w2, w3, w4)
        r.attempts += len(raws)
        r.emitted += len(out)
        _untimed_outcomes(r, history, cats, start, raws, now_ms, out, codec if check else None)
    return r


def _add_stage_times(ns: dict[str, int], t0: int, t1: int, t2: int, t3: int, t4: int) -> None:
    """The three passes' clock readings -> each stage's share (consecutive passes' differences)."""
    ns["validate"] += t1 - t0
    ns["evaluate"] += (t2 - t1) - (t1 - t0)
    ns["encode"] += (t4 - t3) - (t2 - t1)
    ns["fused"] += t4 - t3


def _untimed_outcomes(r: RunResult, history: SettingsHistory, cats: bytearray, start: int, raws: list[bytes],
                      now_ms: int, out: list[bytes], codec: EvalCodec | None) -> None:
    """Untimed: the batch's outcomes, and (with `codec`: the first run) every verdict and event checked
    against the mix."""
    parsed: list[Attempt | None] = []
    for raw in raws:
        try:
            parsed.append(parse_attempt(raw, now_ms))
        except InvalidAttempt:
            parsed.append(None)
    results = [assess(history, a) if a is not None else None for a in parsed]
    for res in results:
        r.outcomes["invalid" if res is None else res[0].outcome] += 1
    if codec is not None:
        emitted = [j for j, res in enumerate(results) if res is not None and res[0].emit]
        if len(emitted) != len(out):
            r.errors.append(f"batch at {start}: {len(out)} events for {len(emitted)} emitting verdicts")
        else:
            check_batch(cats, start, parsed, results, list(zip(emitted, out, strict=True)), codec, r)


def load_settings(w: Workload, history: SettingsHistory) -> float:
    t0 = time.perf_counter()
    for offset, (key, value, ts) in enumerate(w.records):
        err = history.apply_record(key, value, ts, "iam.account-settings", 0, offset)
        if err is not None:
            raise SystemExit(f"bench bug: settings record rejected: {err}")
    return time.perf_counter() - t0


# --- report --------------------------------------------------------------------------------------


def _median_run(results: list[RunResult], clock: str) -> dict[str, float]:
    figures = sorted((r.figures(clock) for r in results), key=lambda f: f["attempts_per_s"])
    return figures[(len(figures) - 1) // 2]


def _fmt_table(fig: dict[str, float], emitted_share: float) -> str:
    total = fig["total_us"]
    rows = [
        ("validate (parse_attempt)", fig["validate_us"], f"{fig['validate_us'] / total:4.0%}"),
        ("evaluate (assess)", fig["evaluate_us"], f"{fig['evaluate_us'] / total:4.0%}"),
        ("encode (encode_evaluation)", fig["encode_us"],
         f"{fig['encode_us'] / total:4.0%}  ({fig['encode_us_per_event']:.2f} µs per event, "
         f"{emitted_share:.1%} emitted)"),
        ("total", total, f"{fig['attempts_per_s']:,.0f} attempts/s"),
    ]
    return "\n".join(f"  {name:<28}{us:8.2f} µs/attempt   {extra}" for name, us, extra in rows)


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, dict[str, int]]:
    """The flags, and the run's sizes: the mode's defaults with the flags given on top."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small run for CI: correctness only")
    p.add_argument("--attempts", type=int, help=f"attempts per run (default {FULL['attempts']:,})")
    p.add_argument("--accounts", type=int, help=f"accounts with settings (default {FULL['accounts']:,})")
    p.add_argument("--huge", type=int, help="restricted accounts with 10,000-id allowlists (default 10)")
    p.add_argument("--runs", type=int, help="measured runs; the median is reported (default 3)")
    p.add_argument("--batch", type=int, default=5000, help="attempts per batch (default 5000)")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--json", dest="json_path", help="write the figures to this file")
    p.add_argument("--gc-freeze", action="store_true", help="gc.freeze() after loading settings")
    p.add_argument("--profile", metavar="N", type=int, default=0,
                   help="cProfile the fused loop of the first run and print the top N functions")
    args = p.parse_args(argv)
    cfg = dict(QUICK if args.quick else FULL)
    for key in ("attempts", "accounts", "huge", "runs"):
        if getattr(args, key) is not None:
            cfg[key] = getattr(args, key)
    return args, cfg


def check_runs(results: list[RunResult], cats: bytearray, expected: Counter[str]) -> tuple[list[str], int]:
    """Every run's errors, outcome counts and event count against the mix -> (errors, events expected)."""
    errors = [e for r in results for e in r.errors]
    for r in results:
        if r.outcomes != expected:
            errors.append(f"outcome counts {dict(r.outcomes)} != expected {dict(expected)}")
    expected_emitted = sum(k for cat, k in Counter(cats).items() if EXPECT[cat][1])
    if any(r.emitted != expected_emitted for r in results):
        errors.append(f"emitted {[r.emitted for r in results]} events, expected {expected_emitted}")
    return errors, expected_emitted


def main(argv: list[str] | None = None) -> int:
    args, cfg = parse_args(argv)
    info = machine()
    code = code_version()
    say(f"generating {cfg['accounts']:,} accounts' settings ({cfg['huge']} with 10,000-id allowlists)")
    w = make_workload(cfg["accounts"], cfg["huge"], args.seed)
    history = SettingsHistory()
    load_s = load_settings(w, history)
    say(f"settings: {len(w.records):,} records applied in {load_s:.2f} s "
        f"({len(w.records) / load_s:,.0f}/s), {w.allowlist_ids:,} allowlist ids, peak RSS {rss_mib():.0f} MiB")
    if args.gc_freeze:
        gc.collect()
        gc.freeze()
    cats = categories(cfg["attempts"], args.seed)
    expected = expected_outcomes(cats)

    profile = cProfile.Profile() if args.profile else None
    results: list[RunResult] = []
    for run in range(cfg["runs"]):
        say(f"run {run + 1}/{cfg['runs']}: {cfg['attempts']:,} attempts in batches of {args.batch}")
        r = run_once(w, history, cats, args.batch, args.seed, check=(run == 0), profile=profile if run == 0 else None)
        results.append(r)
        fig, fw = r.figures("cpu"), r.figures("wall")
        say(f"  {fig['attempts_per_s']:,.0f} attempts per CPU-second ({fw['attempts_per_s']:,.0f}/s wall)")

    errors, expected_emitted = check_runs(results, cats, expected)
    # the run with the median total, so that its stages add up to its total
    median = _median_run(results, "cpu")
    median_wall = _median_run(results, "wall")
    emitted_share = expected_emitted / cfg["attempts"]
    report = {
        "mode": "quick" if args.quick else "full",
        "machine": info,
        "code": code,
        "config": cfg | {"batch": args.batch, "seed": args.seed, "gc_freeze": args.gc_freeze,
                         "settings_records": len(w.records), "allowlist_ids": w.allowlist_ids},
        "settings_load_s": load_s,
        "peak_rss_mib": rss_mib(),
        "runs": [{"cpu": r.figures("cpu"), "wall": r.figures("wall")} for r in results],
        "median": median,
        "median_wall": median_wall,
        "emitted_share": emitted_share,
        "target_attempts_per_s": TARGET_PER_S,
        "target_met": median["attempts_per_s"] >= TARGET_PER_S,
        "outcomes": dict(results[0].outcomes),
        "expected_outcomes": dict(expected),
        "correct": not errors,
        "errors": errors[:100],
    }
    print_report(report, errors)
    if profile is not None:
        buf = io.StringIO()
        pstats.Stats(profile, stream=buf).sort_stats("tottime").print_stats(args.profile)
        print(buf.getvalue())
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(report, indent=2) + "\n")
    return 1 if errors else 0


def print_report(report: dict[str, Any], errors: list[str]) -> None:
    """The figures of `report` (what --json writes) as text."""
    cfg, info, code = report["config"], report["machine"], report["code"]
    median, emitted_share = report["median"], report["emitted_share"]
    print(f"access-eval core bench ({report['mode']}): {cfg['attempts']:,} attempts x "
          f"{cfg['runs']} run(s), {cfg['accounts']:,} accounts, {cfg['allowlist_ids']:,} allowlist ids, "
          f"batch {cfg['batch']}")
    print(f"machine: {info['nproc']} CPUs, {info['cpu']}, Python {info['python']}, "
          f"load {info['loadavg_1m_at_start']}")
    print(f"code: {code['processor']} at {code['commit'] or 'unknown commit'}"
          f"{' + uncommitted changes' if code['dirty'] else ''}")
    print(f"median run of {cfg['runs']}, one core, CPU time of the measuring thread:")
    print(_fmt_table(median, emitted_share))
    print("median run by wall-clock time (includes time the OS gave other processes):")
    print(_fmt_table(report["median_wall"], emitted_share))
    print(f"target >= {TARGET_PER_S:,} attempts/s on one core (CPU time): "
          f"{'met' if report['target_met'] else 'MISSED'}")
    print(f"outcomes: {dict(sorted(report['outcomes'].items()))}")
    print(f"correctness: {'ok' if not errors else f'{len(errors)} error(s)'}")
    for e in errors[:20]:
        print(f"  ERROR {e}")


if __name__ == "__main__":
    raise SystemExit(main())

