#!/usr/bin/env python3
"""Settings bootstrap at fleet scale: process start -> /readyz 200 and RSS, this code against another.

One settings topic (the bench's 1-5-id set, `bench/kafka/settings.py`'s generator) is preloaded once;
then `access-eval run` is started from each code tree in turn (`--tree NAME=PATH`, e.g. a `git archive`
snapshot of main as the "before"), interleaved run by run so the shared machine's speed changes hit
every tree alike. Per run: time from process start to /readyz 200, peak RSS (VmHWM) and RSS once ready,
the processor's CPU time, the machine's 1-minute load. **Check** (every run): the processor's log says
it bootstrapped exactly the preloaded number of accounts with nothing rejected. Medians per tree are printed.

`--snapshot` adds the restart with local state (`--state-dir`): one cold start with a state directory
writes the snapshot (its encode time, the main thread's only cost, and its fsync time are printed),
then the case "this+snapshot" restarts from it, interleaved with the others. **Check**: its log says
the snapshot was loaded with every account, and the bootstrap counts as above.

    .venv/bin/python bench/bench_bootstrap.py --records 1000000 --runs 3 --tree before=/tmp/main-snapshot
    .venv/bin/python bench/bench_bootstrap.py --records 1000000 --runs 3 --snapshot
    .venv/bin/python bench/bench_bootstrap.py --bootstrap-servers HOST:PORT --settings-topic NAME ...  # preloaded
"""

from __future__ import annotations

import argparse
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
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.kafka.common import free_port, machine_facts, proc_status_kb, say  # noqa: E402
from bench.kafka.latency import wait_ready  # noqa: E402
from bench.kafka.procs import Bench, Proc  # noqa: E402
from bench.kafka.topics import preload  # noqa: E402
from bench.kafka.workload import settings_docs  # noqa: E402
from processor import local  # noqa: E402
from processor.local.workload import Workload  # noqa: E402


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--records", type=int, default=1_000_000, help="settings records (accounts) to bootstrap")
    p.add_argument("--allowlist-max", type=int, default=5, help="allowlist ids per record: 1..this")
    p.add_argument("--partitions", type=int, default=3)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--tree", action="append", default=[], metavar="NAME=PATH",
                   help="another code tree to measure too (this checkout is always 'this')")
    p.add_argument("--extra", action="append", default=[], help="extra flag for every processor")
    p.add_argument("--snapshot", action="store_true", help="also restart from a local snapshot (--state-dir)")
    p.add_argument("--bootstrap-servers", help="use this broker instead of starting one")
    p.add_argument("--settings-topic", help="with --bootstrap-servers: an already preloaded settings topic (its "
                   "NAME.attempts/.evals/.dlq exist too) of --records records; nothing is preloaded")
    p.add_argument("--timeout", type=float, default=900, help="seconds a bootstrap may take")
    p.add_argument("--json", type=Path, help="also write the figures here")
    args = p.parse_args(argv)
    if args.settings_topic and not args.bootstrap_servers:
        p.error("--settings-topic names a topic of an existing broker: give --bootstrap-servers too")
    return args


def load1() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def start(bench: Bench, tree: Path, topic: str, extra: list[str]) -> Proc:
    """`access-eval run` from `tree` (its own code on PYTHONPATH), reading `topic` as the settings topic."""
    group = bench.fresh("boot")
    port = free_port()
    argv = [sys.executable, "-m", "processor", "run", "--bootstrap-servers", bench.bootstrap,
            "--metrics-port", str(port), "--metrics-host", "127.0.0.1", "--group-id", group,
            "--settings-topic", topic, "--attempts-topic", f"{topic}.attempts", "--eval-topic", f"{topic}.evals",
            "--dlq-topic", f"{topic}.dlq", "--transactional-id", group, "--log-level", "INFO", *extra]
    log = bench.tmp / f"{group}.log"
    env = {**os.environ, "PYTHONPATH": str(tree)}
    with log.open("wb") as fh:
        popen = subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT, cwd=tree, env=env)
    proc = Proc(popen, port, log)
    bench.procs.append(proc)
    return proc


def cpu_seconds(pid: int) -> float:
    """The process's CPU time so far (user + system, all threads): on a shared machine the wall time
    to ready also counts the time the OS gave other processes."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return round((int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"), 2)


def logged(log: Path, message: str) -> dict[str, Any] | None:
    for line in log.read_text(errors="replace").splitlines():
        if message in line:
            return dict(json.loads(line))
    return None


def bootstrapped(log: Path) -> dict[str, Any]:
    found = logged(log, "settings bootstrapped")
    if found is None:
        raise RuntimeError(f"no 'settings bootstrapped' line in {log}")
    return found


def write_snapshot(bench: Bench, topic: str, state_dir: Path, args: argparse.Namespace) -> dict[str, Any]:
    """A cold start with a state directory: ready, then the snapshot written (its log line's figures)."""
    proc = start(bench, REPO, topic, [*args.extra, "--state-dir", str(state_dir)])
    try:
        wait_ready(proc, args.timeout)
        deadline = time.monotonic() + args.timeout
        while (written := logged(proc.log, "settings snapshot written")) is None:
            proc.check()
            if time.monotonic() > deadline:
                raise RuntimeError(f"no snapshot written (log {proc.log})")
            time.sleep(0.2)
    finally:
        proc.stop()
    out = {k: written[k] for k in ("bytes", "encode_seconds", "encode_cpu_seconds", "sync_seconds")}
    say(f"snapshot written: {out['bytes'] / 1e6:.0f} MB, encode (main thread, before serving) "
        f"{out['encode_seconds']} s wall / {out['encode_cpu_seconds']} s CPU, fsync + rename {out['sync_seconds']} s "
        f"(thread), load {load1()}")
    return out


def one_run(bench: Bench, case: tuple[str, Path, list[str]], topic: str, records: int,
            args: argparse.Namespace) -> dict[str, Any]:
    name, tree, flags = case
    load = load1()
    proc = start(bench, tree, topic, [*args.extra, *flags])
    try:
        ready_s = wait_ready(proc, args.timeout)
        peak = proc_status_kb(proc.popen.pid, "VmHWM") or 0
        rss = proc_status_kb(proc.popen.pid, "VmRSS") or 0
        cpu_s = cpu_seconds(proc.popen.pid)
    finally:
        proc.stop()
    info = bootstrapped(proc.log)
    if info.get("accounts") != records or info.get("rejected") != 0:
        raise RuntimeError(f"{name}: bootstrapped {info.get('accounts')} accounts, {info.get('rejected')} "
                           f"rejected; expected {records} and 0 (log {proc.log})")
    loaded = logged(proc.log, "settings snapshot loaded")
    if "--state-dir" in flags and (loaded is None or loaded.get("accounts") != records):
        raise RuntimeError(f"{name}: the snapshot was not loaded with {records} accounts (log {proc.log})")
    out = {"tree": name, "ready_s": round(ready_s, 2), "cpu_s": cpu_s, "bootstrap_s": info.get("seconds"),
           "peak_rss_mb": round(peak / 1024), "rss_ready_mb": round(rss / 1024), "load1": load}
    if loaded is not None:  # the file read, checked and restored, within the bootstrap
        out |= {"snapshot_load_s": loaded.get("seconds"), "snapshot_load_cpu_s": loaded.get("cpu_seconds")}
    say(f"  {name}: ready in {ready_s:.2f} s, CPU {cpu_s} s (bootstrap {info.get('seconds')} s"
        + (f", snapshot loaded in {loaded.get('seconds')} s / {loaded.get('cpu_seconds')} s CPU" if loaded else "")
        + f"), peak RSS {out['peak_rss_mb']} MB, RSS when ready {out['rss_ready_mb']} MB, load {load}")
    return out


def settings_topic(bench: Bench, args: argparse.Namespace) -> tuple[str, int, int]:
    """(topic, records, bytes): the given preloaded topic, or a new one preloaded with the 1-5-id set."""
    if args.settings_topic:
        return args.settings_topic, args.records, 0
    topic = bench.topic(bench.fresh("settings"), args.partitions, {"cleanup.policy": "compact"})
    for suffix in (".attempts", ".evals", ".dlq"):
        bench.topic(topic + suffix, 1)
    w = Workload(seed=21, accounts=args.records, allowlist_min=1, allowlist_max=args.allowlist_max)
    t0 = time.monotonic()
    n, size = preload(bench.bootstrap, topic, settings_docs(w, "2026-01-01T00:00:00Z"))
    say(f"preloaded {n:,} records, {size / 1e6:.0f} MB in {time.monotonic() - t0:.1f} s")
    return topic, n, size


def measure(bench: Bench, args: argparse.Namespace) -> dict[str, Any]:
    trees = [("this", REPO)] + [(t.split("=", 1)[0], Path(t.split("=", 1)[1]).resolve()) for t in args.tree]
    topic, n, size = settings_topic(bench, args)
    cases: list[tuple[str, Path, list[str]]] = [(name, tree, []) for name, tree in trees]
    written = None
    if args.snapshot:
        state_dir = bench.tmp / "state"
        written = write_snapshot(bench, topic, state_dir, args)
        cases.append(("this+snapshot", REPO, ["--state-dir", str(state_dir)]))
    runs: list[dict[str, Any]] = []
    for i in range(args.runs):
        order = cases if i % 2 == 0 else cases[::-1]  # interleaved: neither case always goes first
        for case in order:
            runs.append({"run": i, **one_run(bench, case, topic, n, args)})
    summary = {}
    for name, _, _ in cases:
        mine = [r for r in runs if r["tree"] == name]
        summary[name] = {k: statistics.median(r[k] for r in mine)
                         for k in ("ready_s", "cpu_s", "peak_rss_mb", "rss_ready_mb", "load1")}
        say(f"{name}: median ready {summary[name]['ready_s']} s, CPU {summary[name]['cpu_s']} s, "
            f"peak RSS {summary[name]['peak_rss_mb']} MB, "
            f"RSS when ready {summary[name]['rss_ready_mb']} MB (runs {[r['ready_s'] for r in mine]} s), "
            f"median load {summary[name]['load1']}")
    return {"records": n, "megabytes": round(size / 1e6), "runs": runs, "median": summary, "snapshot": written,
            "trees": {name: str(tree) for name, tree in trees}}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="access-eval-bootbench-"))
    broker_dir: Path | None = None
    bootstrap = args.bootstrap_servers
    try:
        broker_pid = None
        if bootstrap is None:
            broker_dir = tmp / "kafka"
            info = local.start(port=free_port(), data_dir=broker_dir, controller_port=free_port(), progress=say)
            bootstrap, broker_pid = info.bootstrap, info.pid
        bench = Bench(args, bootstrap, tmp, f"bench.{uuid.uuid4().hex[:8]}", broker_pid)
        try:
            results = {"machine": machine_facts(), **measure(bench, args)}
        finally:
            for p in bench.procs:
                if p.alive():
                    p.stop(30)
    finally:
        if broker_dir is not None:
            local.stop(broker_dir)
        shutil.rmtree(tmp, ignore_errors=True)
    text = json.dumps(results, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
