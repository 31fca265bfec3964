#!/usr/bin/env python
"""Benchmark of `access-eval run` against a real Kafka broker (`make bench`).

One command: starts its own single-node broker on free ports in a temporary directory (unless
`--bootstrap-servers` is given), preloads the reference mix once, then measures

1. throughput of the real CLI (a subprocess, new consumer group per run) draining the preloaded
   topic, exactly-once and at-least-once, with 1 and 2 processes in the group, timed from the
   first committed offset to all offsets committed, and checked: eval events == the mix's count;
2. the ceiling in the same run: a plain consumer (same client settings, no processing) and a
   transactional consume->produce pass-through, drained and timed the same way; and the peer, a
   Kafka Streams application doing the same job (bench/peers/KStreamsPeer.java), drained and checked
   the same way;
3. latency attempt produced -> eval event visible to a read_committed consumer at half the
   measured exactly-once throughput;
4. settings: bootstrap of a large settings topic (time to ready, peak RSS) and the propagation
   delay of a settings change (publish -> first attempt evaluated with it);
5. stage costs in µs per attempt (consume, decode/validate, evaluate, encode, produce), in
   process, so the next optimisation is obvious.

Prints a table and writes the same figures as JSON (`--json PATH`). `--quick` is a small version
for the test suite (tests/bench/test_bench_kafka_quick.py), which checks correctness only, never times.

Internal modes (`--worker consume|passthrough|load`) run the ceiling clients and the load
generator as separate processes, so the measuring process never competes for the GIL.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.kafka import peers  # noqa: E402
from bench.kafka.common import FULL, QUICK, free_port, machine_facts, say  # noqa: E402
from bench.kafka.latency import latency, median_latency_run  # noqa: E402
from bench.kafka.procs import Bench, Proc  # noqa: E402
from bench.kafka.report import report  # noqa: E402
from bench.kafka.settings import bootstrap_run, propagation  # noqa: E402
from bench.kafka.stages import stage_costs  # noqa: E402
from bench.kafka.throughput import ceiling_run, summarise, throughput_run  # noqa: E402
from bench.kafka.topics import delete_topics  # noqa: E402
from bench.kafka.worker import run_worker  # noqa: E402
from bench.kafka.workload import Mixed, prepare  # noqa: E402
from processor.local import broker as local  # noqa: E402
from processor.local.workload import Mix  # noqa: E402

# Sections (one module each, in bench/kafka/): workload.py (the mix, preloaded once), throughput.py
# (1 + 2), latency.py (3), settings.py (4), stages.py (5), worker.py (`--worker`), report.py; the
# shared parts: common.py, topics.py, procs.py.


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
    p.add_argument("--only", default="throughput,ceiling,peers,latency,settings,stages",
                   help="comma list of sections: throughput, ceiling, peers (Kafka Streams; needs a JDK and mvn), "
                   "latency, settings (= propagation + bootstrap), stages")
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
    report(results, args.json)
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
    run_throughput(bench, mixed, sections, tp)
    if "exactly_once_1" in tp and "ceiling_consume" in tp:
        results["ratios"] = _ratios(tp)
    settings: dict[str, Any] = {}
    if "settings" in sections:
        sections |= {"propagation", "bootstrap"}
    if "latency" in sections or "propagation" in sections:
        run_latency(bench, mixed, sections, tp, results, settings)
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


def run_throughput(bench: Bench, mixed: Mixed, sections: set[str], tp: dict[str, Any]) -> None:
    """Sections 1 and 2: the CLI's throughput per delivery mode and process count, then the ceilings."""
    args = bench.args
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
    if "peers" in sections:
        why = peers.unavailable()
        if why is not None:
            say(f"peers: skipped ({why})")
        else:
            say("peers: Kafka Streams (bench/peers/KStreamsPeer.java)")
            classpath = peers.build(bench.tmp)
            tp["peer_kstreams"] = summarise([peers.peer_run(bench, mixed, classpath, r) for r in range(args.runs)])


def _ratios(tp: dict[str, Any]) -> dict[str, float | None]:
    eos = tp["exactly_once_1"]["attempts_per_s"]

    def ratio(key: str) -> float | None:
        base = tp[key]["attempts_per_s"]
        return round(eos / base, 3) if eos and base else None

    return {
        "eos_vs_consume": ratio("ceiling_consume"),
        "eos_vs_passthrough": ratio("ceiling_passthrough"),
        "eos_vs_best_peer": ratio("peer_kstreams") if "peer_kstreams" in tp else None,
    }


def run_latency(bench: Bench, mixed: Mixed, sections: set[str], tp: dict[str, Any], results: dict[str, Any],
                settings: dict[str, Any]) -> None:
    """Section 3, and the settings propagation of section 4 measured on the last latency run's processor."""
    args = bench.args
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


if __name__ == "__main__":
    sys.exit(main())
