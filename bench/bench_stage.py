#!/usr/bin/env python3
"""The hot path in process, this code against another: CPU per attempt of the real `AttemptStage.process`.

The reference mix (`bench/kafka/workload.py`) is preloaded once on a broker. Then, per code tree (this
checkout is always `this`; `--tree NAME=PATH` adds others, e.g. a `git archive` snapshot of main), a
child process from that tree bootstraps the settings from the topic with the processor's own table,
reads `--attempts` attempts into batches of up to 5,000, and runs the real `AttemptStage.process` over
them `--rounds` times, exactly-once, committing every 10 batches. Trees alternate child by child
(`--reps` each), so the shared machine's speed changes hit every tree alike. Per child: the main
thread's CPU time per attempt of each round and the minimum (the least disturbed round); per tree the
median of those minima. **Check** (every child): every attempt was evaluated in every round
(`AttemptStage.seen`), none dead-lettered, and the settings table holds every preloaded account.

Why beside `bench_kafka.py`: a drain through Kafka mixes the stage with fetching, committing and the
broker's share of the same two CPUs, and moves ±10% run to run here; the stage alone shows a change
of a few percent. No mode asserts a time.

    .venv/bin/python bench/bench_stage.py --tree before=/tmp/main-snapshot
    .venv/bin/python bench/bench_stage.py --bootstrap-servers HOST:PORT --attempts 200000 --rounds 3 --reps 3
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
#: The code measured: a child runs this file with the tree to measure here, so that the tree's
#: `processor` is imported, not this checkout's.
TREE = Path(os.environ.get("BENCH_STAGE_TREE", str(REPO)))
if str(TREE) not in sys.path:
    sys.path.insert(0, str(TREE))

#: Batches between commits in the child (the processor commits by time; the stage does not care).
COMMIT_EVERY = 10


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--attempts", type=int, default=200_000, help="attempts read into memory and processed")
    p.add_argument("--rounds", type=int, default=3, help="passes over them per child")
    p.add_argument("--reps", type=int, default=3, help="children per tree, alternated")
    p.add_argument("--tree", action="append", default=[], metavar="NAME=PATH",
                   help="another code tree to measure too (this checkout is always 'this')")
    p.add_argument("--bootstrap-servers", help="use this broker instead of starting one")
    p.add_argument("--quick", action="store_true",
                   help="the quick mix, 5,000 attempts, one round, one child per tree: correctness only (CI)")
    p.add_argument("--json", type=Path, help="also write the figures here")
    p.add_argument("--child", nargs=6, metavar=("BOOTSTRAP", "SETTINGS", "ATTEMPTS", "SCRATCH", "DLQ", "ACCOUNTS"),
                   help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.attempts, args.rounds, args.reps = min(args.attempts, 5_000), 1, 1
    return args


def child(args: argparse.Namespace) -> int:
    """In a tree's own process: bootstrap, read the attempts, time the stage; one JSON line on stdout."""
    from confluent_kafka import Consumer, TopicPartition

    import processor
    from processor.codec.avro import EvalCodec
    from processor.config import RunConfig
    from processor.health import Health
    from processor.metrics import Metrics
    from processor.native import core_build
    from processor.stream.loop import Processor

    boot, settings_topic, attempts_topic, scratch, dlq, accounts = args.child
    tag = uuid.uuid4().hex[:8]
    cfg = RunConfig(bootstrap_servers=boot, group_id=f"bench-stage-{tag}", settings_topic=settings_topic,
                    attempts_topic=attempts_topic, eval_topic=scratch, dlq_topic=dlq,
                    transactional_id=f"bench-stage-{tag}")
    proc = Processor(cfg, Metrics(), Health(), EvalCodec())
    proc.table.start()
    proc.table.catch_up()
    reader = Consumer({"bootstrap.servers": boot, "group.id": f"bench-stage-reader-{tag}",
                       "enable.auto.commit": False})
    partitions = reader.list_topics(attempts_topic, timeout=10).topics[attempts_topic].partitions
    reader.assign([TopicPartition(attempts_topic, p, 0) for p in partitions])
    batches: list[list[Any]] = []
    got = 0
    while got < args.attempts:
        msgs = [m for m in reader.consume(min(5000, args.attempts - got), 1.0) if m.error() is None]
        if msgs:
            batches.append(msgs)
            got += len(msgs)
    reader.close()
    txn = proc.open_clients()
    stage = proc.stage
    assert stage is not None
    proc.consumer.assign([TopicPartition(attempts_topic, p, 0) for p in partitions])
    gc.collect()
    gc.freeze()  # as the processor does after its bootstrap
    rounds = []
    for _ in range(args.rounds):
        c0 = time.thread_time()
        for i, msgs in enumerate(batches):
            stage.process(msgs)
            if i % COMMIT_EVERY == COMMIT_EVERY - 1:
                txn.commit()
        if txn.open:
            txn.commit()
        rounds.append((time.thread_time() - c0) / got * 1e6)
    complete = stage.seen == args.rounds * got and len(proc.history) == int(accounts)
    proc.consumer.close()
    txn.flush(30)
    proc.table.close()
    code = str(Path(processor.__file__).parent)
    print(json.dumps({"core": core_build(), "code": code, "attempts": got, "accounts": len(proc.history),
                      "us_per_attempt": [round(r, 3) for r in rounds], "correct": complete}), flush=True)
    return 0 if complete else 1


def run_child(tree: Path, argv: list[str]) -> dict[str, Any]:
    env = {**os.environ, "BENCH_STAGE_TREE": str(tree)}
    out = subprocess.run([sys.executable, str(Path(__file__).resolve()), *argv], cwd=tree, env=env,
                         capture_output=True, text=True, timeout=1800)
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        raise SystemExit(f"the child in {tree} wrote no result (exit {out.returncode}): {out.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(lines[-1])
    result["exit_code"] = out.returncode
    return result


def measure(args: argparse.Namespace, bootstrap: str, tmp: Path) -> dict[str, Any]:
    """Preload the mix once, then the children of every tree in turn, `--reps` times."""
    from bench.bench_kafka import parse_args as bench_args
    from bench.kafka.common import say
    from bench.kafka.procs import Bench
    from bench.kafka.topics import delete_topics
    from bench.kafka.workload import prepare

    quick = ["--quick"] if args.quick else []
    bench = Bench(bench_args(["--bootstrap-servers", bootstrap, "--only", "stages", *quick]), bootstrap, tmp,
                  f"bench.stage.{uuid.uuid4().hex[:8]}", None)
    trees = [("this", REPO)] + [(t.split("=", 1)[0], Path(t.split("=", 1)[1]).resolve()) for t in args.tree]
    try:
        mixed, _ = prepare(bench)
        scratch = bench.topic(bench.fresh("stage-evals"), bench.args.partitions)
        argv = ["--attempts", str(args.attempts), "--rounds", str(args.rounds), "--child", bootstrap,
                bench.settings_topic, bench.attempts_topic, scratch, bench.dlq_topic, str(len(mixed.settings))]
        runs: list[dict[str, Any]] = []
        for rep in range(args.reps):
            for name, tree in trees:
                r = run_child(tree, argv)
                r.update(tree=name, rep=rep, load=round(os.getloadavg()[0], 2))
                runs.append(r)
                say(f"{name} ({r['core']}): {r['us_per_attempt']} µs/attempt, min {min(r['us_per_attempt'])}, "
                    f"correct {r['correct']}, load {r['load']}")
    finally:
        delete_topics(bootstrap, bench.created)
    return {"runs": runs, "trees": {name: str(tree) for name, tree in trees}}


def summary(result: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for name in result["trees"]:
        minima = [min(r["us_per_attempt"]) for r in result["runs"] if r["tree"] == name]
        out[name] = {"median_of_minima_us": round(statistics.median(minima), 2), "minima_us": minima}
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        return child(args)
    from bench.kafka.common import free_port, machine_facts, say
    from processor import local

    tmp = Path(tempfile.mkdtemp(prefix="access-eval-bench-stage-"))
    bootstrap = args.bootstrap_servers
    try:
        if bootstrap is None:
            info = local.start(port=free_port(), data_dir=tmp / "kafka", controller_port=free_port(), progress=say)
            bootstrap = info.bootstrap
        result = measure(args, bootstrap, tmp)
    finally:
        if args.bootstrap_servers is None:
            local.stop(tmp / "kafka")
        shutil.rmtree(tmp, ignore_errors=True)
    result.update(machine=machine_facts(), summary=summary(result),
                  correct=all(r["correct"] and r["exit_code"] == 0 for r in result["runs"]))
    for name, s in result["summary"].items():
        print(f"{name:>10}: {s['median_of_minima_us']:.2f} µs/attempt (minima {s['minima_us']})")
    print(f"all checks passed: {result['correct']}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0 if result["correct"] else 1


if __name__ == "__main__":
    sys.exit(main())
