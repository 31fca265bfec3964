#!/usr/bin/env python
"""Benchmark of `access-eval report`: the fleet view and one account's report over a large eval topic.

Preloads an eval topic (12 partitions, as production's; `--partitions`) with N eval events (default
1,000,000: 10,000 accounts in monitor x 50 external accounts each, two identities per external
account, event times over the past 25 days)
and a settings topic with the 10,000 accounts, then times the real CLI as a subprocess:

1. `report --all-accounts --format json` (one pass, every account): events/s read and aggregated,
   and the peak RSS of the report process;
2. `report --account A --format json` (the same pass, other accounts' records skipped by key);
   both with the default readers (one process per core, at most one per partition), with
   `--readers 1`, and from each `--tree NAME=PATH` (e.g. the code before), interleaved, `--runs`
   times (default 3; the run with the median wall time is reported);
3. in process, the pure part: `WouldBeDenies.add_event` over the same events as decoded dicts
   (no Kafka, no decoding), `EvalCodec.decode` (the full record) and `ReportFields.decode` (the
   fields the report reads, what `report` uses) alone, so the bottleneck is visible.

Wall-clock and CPU seconds are both printed: on a shared machine the CPU time of the report process
(all its threads) is the comparable figure; the 1-minute load is printed with them.

Targets (issue "Readiness you can see"): >= 100,000 events/s read and aggregated, RSS <= 300 MB.
`--quick` is a small version (20,000 events) that checks the figures are right and prints them.

    .venv/bin/python bench/bench_report.py [--quick] [--bootstrap-servers HOST:PORT] [--runs 3]
        [--tree before=PATH] [--partitions 12] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402

from bench.kafka.common import free_port, say  # noqa: E402
from processor.codec.avro import EvalCodec  # noqa: E402
from processor.codec.eval_fields import ReportFields  # noqa: E402
from processor.core.would_be_denies import Window, WouldBeDenies  # noqa: E402
from processor.local import broker as local  # noqa: E402
from processor.local.publish import produce  # noqa: E402

DAY = 86_400_000
FULL = {"events": 1_000_000, "accounts": 10_000, "externals": 50}
QUICK = {"events": 20_000, "accounts": 200, "externals": 50}


def acct(i: int) -> str:
    return f"{i:08x}{'a' * 24}"


def ext(a: int, j: int) -> str:
    return f"{a:08x}{j:04x}{'e' * 20}"


def events(n: int, accounts: int, externals: int, now: int) -> Iterator[dict[str, Any]]:
    """n would-be denies (and every 10th a permit) cycling over accounts x externals, 2 identities each."""
    for i in range(n):
        a, j = i % accounts, (i // accounts) % externals
        permit = i % 10 == 9
        yield {
            "id": str(uuid.UUID(int=i + 1)), "action": "iam-access-management.account-settings.eval",
            "eventTime": now - (i * 7919) % (25 * DAY), "attemptId": f"bench-{i}",
            "initiator": {"id": f"iam-{a}-{j}-{i % 2}", "typeURI": "user", "name": None,
                          "authnAccountId": ext(a, j), "host": {"address": None, "agent": "bench"}},
            "target": {"accountId": acct(a), "id": None, "serviceName": None, "action": "svc.read"},
            "responseData": {"decision": "Permit" if permit else "Deny", "isEnforced": False, "state": "monitor",
                             "allowlisted": permit,
                             "settingsVersion": {"effectiveTime": None, "topic": None, "partition": None,
                                                 "offset": None, "exact": True}},
            "outcome": "success" if permit else "failure", "severity": "normal",
            "reason": {"reasonCode": 403, "reasonType": "bench"},
            "observer": {"name": "access-eval", "version": "bench", "evaluatedAt": now},
            "truncated": False,
        }


def preload(bootstrap: str, size: dict[str, int], now: int, partitions: int = 12) -> tuple[str, str]:
    tag = uuid.uuid4().hex[:8]
    settings, evals = f"bench-report-{tag}.settings", f"bench-report-{tag}.evals"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(settings, 1, 1, config={"cleanup.policy": "compact"}),
                                   NewTopic(evals, partitions, 1, config={"retention.ms": "-1"})])
    for f in futures.values():
        f.result(30)
    queue = {"queue.buffering.max.messages": 500_000}
    doc = {"updated_at": "2020-01-01T00:00:00Z", "external_account_identity_interaction":
           {"identity_types": {"user": {"state": "monitor", "external_allowed_accounts": []}}}}
    produce(bootstrap, settings, ((acct(a).encode(), json.dumps({"account_id": acct(a), **doc}).encode())
                                  for a in range(size["accounts"])), bulk=True, config=queue)
    codec = EvalCodec()
    started = time.monotonic()
    produce(bootstrap, evals, ((e["target"]["accountId"].encode(), codec.encode(e))
                               for e in events(size["events"], size["accounts"], size["externals"], now)),
            bulk=True, config=queue)
    say(f"preloaded {size['events']:,} eval events in {time.monotonic() - started:.1f} s")
    return settings, evals


def tree_processes(pid: int) -> list[int]:
    """`pid` and its descendants (the reader processes of `--readers`)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for t in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (t / "children").read_text().split()]
        except OSError:
            pass
    return out


def proc_kb(pid: int, field: str) -> int:
    try:
        line = next(x for x in Path(f"/proc/{pid}/status").read_text().splitlines() if x.startswith(field))
        return int(line.split()[1])
    except (OSError, StopIteration):
        return 0


def timed_report(bootstrap: str, settings: str, evals: str, which: list[str], tree: Path = REPO) -> dict[str, Any]:
    """The real CLI (from `tree`) as a child process: wall time, CPU time and peak memory of it and
    its reader processes, and its JSON."""
    out = Path(tempfile.mkstemp(suffix=".json")[1])
    argv = [sys.executable, "-m", "processor", "report", "--bootstrap-servers", bootstrap, "--eval-topic", evals,
            "--settings-topic", settings, "--format", "json", "--output", str(out), "--timeout", "60", *which]
    started = time.monotonic()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.Popen(argv, cwd=tree, stderr=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(tree)})
    # Peak memory of the report and its reader processes: each process's own high-water mark (VmHWM,
    # reset by exec; wait4's ru_maxrss would report the forking parent's size), summed (an upper bound:
    # the peaks need not coincide), and the largest sum of their current RSS seen every 50 ms.
    hwm: dict[int, int] = {}
    peak_sum_kb = 0
    while True:
        pids = tree_processes(proc.pid)
        rss = 0
        for p in pids:
            hwm[p] = max(hwm.get(p, 0), proc_kb(p, "VmHWM:"))
            rss += proc_kb(p, "VmRSS:")
        peak_sum_kb = max(peak_sum_kb, rss)
        pid, status, _ = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        time.sleep(0.05)
    wall = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)  # the child and its reaped reader processes
    assert status == 0, proc.stderr.read().decode() if proc.stderr else status
    report = json.loads(out.read_text())
    out.unlink()
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return {"seconds": wall, "cpu_seconds": cpu, "peak_rss_mb": sum(hwm.values()) / 1024,
            "peak_rss_sampled_mb": peak_sum_kb / 1024, "processes": len(hwm), "report": report,
            "peak_rss_each_mb": [round(v / 1024) for v in hwm.values()],
            "load_1min": os.getloadavg()[0]}


def pure(size: dict[str, int], now: int) -> dict[str, float]:
    """add_event over decoded-shape dicts (generation timed separately and subtracted), and decode alone."""
    n = size["events"]
    gen_start = time.process_time()
    for _ in events(n, size["accounts"], size["externals"], now):
        pass
    gen = time.process_time() - gen_start
    window = Window(now - 30 * DAY, now)
    agg = WouldBeDenies(window, accounts={acct(a) for a in range(size["accounts"])})
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.process_time()
    for e in events(n, size["accounts"], size["externals"], now):
        agg.add_event(e)
    total = time.process_time() - t0
    rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    codec = EvalCodec()
    sample = [codec.encode(e) for e in events(min(n, 100_000), size["accounts"], size["externals"], now)]
    t1 = time.process_time()
    for b in sample:
        codec.decode(b)
    dec = (time.process_time() - t1) / len(sample)
    fields = ReportFields(codec)
    t2 = time.process_time()
    for b in sample:
        fields.decode(b)
    fields_dec = (time.process_time() - t2) / len(sample)
    t3 = time.process_time()
    for b in sample:
        fields.flat(b)
    flat_dec = (time.process_time() - t3) / len(sample)
    assert sum(t.would_be_denies for t in agg.accounts.values()) == n - n // 10
    return {"aggregate_events_per_s": n / max(total - gen, 1e-9), "decode_us": dec * 1e6,
            "report_fields_decode_us": fields_dec * 1e6, "report_fields_flat_us": flat_dec * 1e6,
            "aggregate_rss_growth_mb": (rss1 - rss0) / 1024, "seen_ids_mb": agg.seen.nbytes / 2**20}


def variants(args: argparse.Namespace) -> list[tuple[str, Path, list[str]]]:
    """(name, code tree, extra report flags) of each report measured: this code with its default
    readers and with one reader, and each `--tree` (e.g. the code before, as a `git archive`)."""
    out = [("this", REPO, []), ("this --readers 1", REPO, ["--readers", "1"])]
    for t in args.tree:
        name, _, path = t.partition("=")
        out.append((name, Path(path).resolve(), []))
    return out


def measure(bootstrap: str, settings: str, evals: str, args: argparse.Namespace,
            size: dict[str, int]) -> list[dict[str, Any]]:
    """Every variant's fleet view and one-account report, `--runs` times, interleaved (the order
    reversed every other run, so no variant always goes first); each run's figures printed."""
    runs = []
    for i in range(args.runs):
        order = variants(args) if i % 2 == 0 else variants(args)[::-1]
        for name, tree, extra in order:
            for view, which in (("fleet", ["--all-accounts"]), ("account", ["--account", acct(1)])):
                r = timed_report(bootstrap, settings, evals, which + extra, tree)
                check(r["report"], view, size)
                row = {"run": i, "variant": name, "view": view, "events_per_s": size["events"] / r["seconds"],
                       **{k: v for k, v in r.items() if k != "report"}}
                say(f"run {i} {name:18} {view:8} {row['events_per_s']:>9,.0f} events/s  {r['seconds']:6.1f} s  "
                    f"CPU {r['cpu_seconds']:5.1f} s  peak {r['peak_rss_mb']:5.0f} MB ({r['processes']} processes; "
                    f"sampled {r['peak_rss_sampled_mb']:.0f} MB)  load {r['load_1min']:.1f}")
                runs.append(row)
    return runs


def check(report: dict[str, Any], view: str, size: dict[str, int]) -> None:
    """The report counts exactly the preloaded would-be denies."""
    n = size["events"]
    if view == "fleet":
        assert report["would_be_denies"] == n - n // 10, report["would_be_denies"]
        assert len(report["accounts"]) == size["accounts"]
    else:
        assert report["would_be_denies"] == sum(1 for i in range(1, n, size["accounts"]) if i % 10 != 9)


def medians(runs: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per variant and view: the run with the median wall time (its figures together)."""
    out = {}
    for key in sorted({(r["variant"], r["view"]) for r in runs}):
        mine = sorted((r for r in runs if (r["variant"], r["view"]) == key), key=lambda r: r["seconds"])
        med = mine[len(mine) // 2]
        out[f"{key[0]} / {key[1]}"] = {k: v for k, v in med.items() if k not in ("run", "variant", "view")}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--bootstrap-servers")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--tree", action="append", default=[], metavar="NAME=PATH",
                    help="another code tree to measure too, interleaved (e.g. before=/tmp/snapshot of main)")
    ap.add_argument("--partitions", type=int, default=12,
                    help="of the eval topic (default 12, as production's: 2 or 3 readers split them evenly)")
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    size = QUICK if args.quick else FULL
    tmp = Path(tempfile.mkdtemp(prefix="bench-report-"))
    bootstrap = args.bootstrap_servers
    try:
        if bootstrap is None:
            port = free_port()
            bootstrap = local.start(port=port, data_dir=tmp / "kafka", controller_port=free_port()).bootstrap
        now = int(time.time() * 1000)
        settings, evals = preload(bootstrap, size, now, args.partitions)
        runs = measure(bootstrap, settings, evals, args, size)
        p = pure(size, now)
    finally:
        if args.bootstrap_servers is None:
            local.stop(tmp / "kafka")
        shutil.rmtree(tmp, ignore_errors=True)
    figures = {"events": size["events"], "accounts": size["accounts"], "externals_per_account": size["externals"],
               "partitions": args.partitions, "cpus": os.cpu_count(), "medians": medians(runs), "pure": p, "runs": runs}
    print(f"{size['events']:,} events on {args.partitions} partitions; medians of {args.runs} (by wall time):")
    for name, m in figures["medians"].items():
        print(f"  {name:28} {m['events_per_s']:>9,.0f} events/s  {m['seconds']:6.1f} s  CPU {m['cpu_seconds']:5.1f} s  "
              f"peak RSS {m['peak_rss_mb']:5.0f} MB (sum of {m['processes']} processes' peaks)  "
              f"load {m['load_1min']:.1f}")
    for k, v in p.items():
        print(f"  {k:28} {v:,.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
