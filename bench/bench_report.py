#!/usr/bin/env python
"""Benchmark of `access-eval report`: the fleet view and one account's report over a large eval topic.

Preloads an eval topic with N eval events (default 1,000,000: 10,000 accounts in monitor x 50
external accounts each, two identities per external account, event times over the past 25 days)
and a settings topic with the 10,000 accounts, then times the real CLI as a subprocess:

1. `report --all-accounts --format json` (one pass, every account): events/s read and aggregated,
   and the peak RSS of the report process;
2. `report --account A --format json` (the same pass, other accounts' records skipped by key);
3. in process, the pure part: `WouldBeDenies.add_event` over the same events as decoded dicts
   (no Kafka, no decoding), `EvalCodec.decode` (the full record) and `ReportFields.decode` (the
   fields the report reads, what `report` uses) alone, so the bottleneck is visible.

Wall-clock and CPU seconds are both printed: on a shared machine the CPU time of the report process
(all its threads) is the comparable figure; the 1-minute load is printed with them.

Targets (issue "Readiness you can see"): >= 100,000 events/s read and aggregated, RSS <= 300 MB.
`--quick` is a small version (20,000 events) that checks the figures are right and prints them.

    .venv/bin/python bench/bench_report.py [--quick] [--bootstrap-servers HOST:PORT] [--json PATH]
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


def preload(bootstrap: str, size: dict[str, int], now: int) -> tuple[str, str]:
    tag = uuid.uuid4().hex[:8]
    settings, evals = f"bench-report-{tag}.settings", f"bench-report-{tag}.evals"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(settings, 1, 1, config={"cleanup.policy": "compact"}),
                                   NewTopic(evals, 3, 1, config={"retention.ms": "-1"})])
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


def timed_report(bootstrap: str, settings: str, evals: str, which: list[str]) -> dict[str, Any]:
    """The real CLI as a child process: wall time, peak RSS (wait4), and its JSON."""
    out = Path(tempfile.mkstemp(suffix=".json")[1])
    argv = [sys.executable, "-m", "processor", "report", "--bootstrap-servers", bootstrap, "--eval-topic", evals,
            "--settings-topic", settings, "--format", "json", "--output", str(out), "--timeout", "60", *which]
    started = time.monotonic()
    proc = subprocess.Popen(argv, cwd=REPO, stderr=subprocess.PIPE)
    # The child's own high-water mark (VmHWM, reset by exec). wait4's ru_maxrss is not used: after a
    # fork from this (large) process it reports the parent's size.
    peak_kb = 0
    status_file = Path(f"/proc/{proc.pid}/status")
    while True:
        try:
            line = next(x for x in status_file.read_text().splitlines() if x.startswith("VmHWM:"))
            peak_kb = max(peak_kb, int(line.split()[1]))
        except (OSError, StopIteration):
            pass
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        time.sleep(0.05)
    wall = time.monotonic() - started
    assert status == 0, proc.stderr.read().decode() if proc.stderr else status
    report = json.loads(out.read_text())
    out.unlink()
    # CPU time (all threads of the child, librdkafka's included): comparable on a loaded machine.
    return {"seconds": wall, "cpu_seconds": usage.ru_utime + usage.ru_stime, "peak_rss_mb": peak_kb / 1024,
            "report": report}


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
    assert sum(t.would_be_denies for t in agg.accounts.values()) == n - n // 10
    return {"aggregate_events_per_s": n / max(total - gen, 1e-9), "decode_us": dec * 1e6,
            "report_fields_decode_us": fields_dec * 1e6,
            "aggregate_rss_growth_mb": (rss1 - rss0) / 1024, "seen_ids_mb": agg.seen.nbytes / 2**20}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--bootstrap-servers")
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
        settings, evals = preload(bootstrap, size, now)
        fleet = timed_report(bootstrap, settings, evals, ["--all-accounts"])
        one = timed_report(bootstrap, settings, evals, ["--account", acct(1)])
        p = pure(size, now)
    finally:
        if args.bootstrap_servers is None:
            local.stop(tmp / "kafka")
        shutil.rmtree(tmp, ignore_errors=True)
    n = size["events"]
    denies = n - n // 10
    assert fleet["report"]["would_be_denies"] == denies, fleet["report"]["would_be_denies"]
    assert len(fleet["report"]["accounts"]) == size["accounts"]
    assert one["report"]["would_be_denies"] == sum(1 for i in range(1, n, size["accounts"]) if i % 10 != 9)
    figures = {
        "events": n, "accounts": size["accounts"], "externals_per_account": size["externals"],
        "fleet_seconds": fleet["seconds"], "fleet_events_per_s": n / fleet["seconds"],
        "fleet_cpu_seconds": fleet["cpu_seconds"], "fleet_events_per_cpu_s": n / fleet["cpu_seconds"],
        "fleet_peak_rss_mb": fleet["peak_rss_mb"],
        "account_seconds": one["seconds"], "account_events_per_s": n / one["seconds"],
        "account_cpu_seconds": one["cpu_seconds"], "account_peak_rss_mb": one["peak_rss_mb"],
        "load_1min": os.getloadavg()[0], **p,
    }
    for k, v in figures.items():
        print(f"{k:28} {v:,.2f}" if isinstance(v, float) else f"{k:28} {v:,}")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
