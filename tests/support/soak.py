"""A randomized fault soak of `access-eval run`: every fault at once, for as long as you like, checked
to the last event at the end. `scripts/soak --duration 2h` (or `make soak`); `tests/soak/test_soak.py`
runs a short one in `make test`. docs/guarantees.md ("Soak") says what it proves.

It drives, against the three-node local cluster behind Toxiproxy (soak_world), for `--duration`:
attempts at `--rate` per second and settings churn (soak_traffic), `--processors` instances of one
consumer group (soak_world.Fleet), and the nemesis (soak_nemesis); then heals everything, waits
until every attempt is committed and runs the one checker (soak_check). Output in `--out`:
timeline.jsonl, summary.txt, plot.svg (and plot.png when chromium is installed). Exit 0: pass.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.cluster.test_cluster import running_cluster
from tests.support.processor_harness import wait_all_committed
from tests.support.soak_check import FINAL, RECOVERY_LIMIT_S, Verdict, check
from tests.support.soak_nemesis import KINDS, Nemesis
from tests.support.soak_report import Timeline, fault_counts, plot, recovery, summary
from tests.support.soak_traffic import Churn, Ledger, Tail, Traffic, now_ms
from tests.support.soak_world import SCRAPE_S, Fleet, heal_cluster, soak_topics, wait_fleet_ready


@dataclass
class Options:
    duration_s: float
    seed: int
    out: Path
    rate: float = 100.0
    processors: int = 3
    partitions: int = 6
    out_of_order: bool = True
    kinds: dict[str, int] = field(default_factory=lambda: dict(KINDS))
    mean_gap_s: float = 6.0
    png: bool = True


@dataclass
class Result:
    verdict: Verdict
    summary: str
    figures: dict[str, Any]
    faults: list[dict[str, Any]]
    out: Path

    @property
    def ok(self) -> bool:
        return self.verdict.ok


def parse_duration(text: str) -> float:
    """"90s", "5m", "2h", "1h30m" or plain seconds."""
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    parts = re.findall(r"(\d+(?:\.\d+)?)([hms])", text)
    if not parts or "".join(a + b for a, b in parts) != text:
        raise argparse.ArgumentTypeError(f"--duration {text!r}: use e.g. 90s, 5m, 2h, 1h30m")
    return sum(float(n) * {"h": 3600, "m": 60, "s": 1}[u] for n, u in parts)


class Sampler(threading.Thread):
    """Every SCRAPE_S: scrape every processor; every second: attempts sent; crashes noticed."""

    def __init__(self, fleet: Fleet, ledger: Ledger, nemesis: Nemesis, timeline: Timeline) -> None:
        super().__init__(name="sampler", daemon=True)
        self.fleet, self.ledger, self.nemesis, self.timeline = fleet, ledger, nemesis, timeline
        self.sent: dict[int, int] = {}
        self.committed: dict[int, int] = {}  # attempts committed per second, from every life's counters
        self.crashes: list[str] = []
        self.stop = threading.Event()

    def run(self) -> None:
        last_second, last_sent, last_committed = -1, 0, 0.0
        while not self.stop.wait(SCRAPE_S):
            self.fleet.scrape_all()
            with self.nemesis.lock:
                crashed = [life for life in self.fleet.exited_by_itself() if life.instance not in self.nemesis.busy]
            for life in crashed:
                self.crashes.append(f"{life.instance}#{life.number} exited by itself with {life.rc}")
                self.timeline.write("crash", instance=life.instance, rc=life.rc, log=str(life.proc.log_path))
                self.fleet.start(life.instance)
            second = int(self.fleet.now())
            if second != last_second:
                sent = self.ledger.attempts_sent
                committed = sum(life.committed for life in self.fleet.lives)
                self.sent[second], self.committed[second] = sent - last_sent, int(committed - last_committed)
                last_second, last_sent, last_committed = second, sent, committed


def _settle(fleet: Fleet, nemesis: Nemesis, info: Any, topics: Any, timeline: Timeline) -> None:
    """Every fault healed, every instance running and resumed, every attempt committed."""
    heal_cluster(info)
    for name in fleet.names:
        fleet.resume(name)
        if fleet.running(name) is None:
            fleet.start(name)
    wait_fleet_ready(fleet)
    timeline.write("healed")
    wait_all_committed(topics.bootstrap, topics.group, topics.attempts, timeout=600)
    fleet.scrape_all()
    timeline.write("all committed")


def _stop_all(sampler: Sampler | None, nemesis: Nemesis, fleet: Fleet) -> None:
    """Every processor killed, on a failure too. Nothing may start one after the kill: the sampler
    restarts a life that exited and the nemesis one it stopped (a failed settle left three orphans)."""
    if sampler is not None:
        sampler.stop.set()
        sampler.join(30)
    if nemesis.is_alive():
        nemesis.finish(timeout=60)
    fleet.kill_all()


def _recoveries(nemesis: Nemesis, fleet: Fleet, until: float, verdict: Verdict) -> list[dict[str, Any]]:
    """Each fault's row with its recovery time; a fault not recovered from within the limit fails the soak."""
    rows = []
    for f in nemesis.faults:
        rec = recovery(f, fleet.rises, until, RECOVERY_LIMIT_S)
        rows.append({**f.row(), "recovery_s": rec})
        if rec is None and f.affected and f.end is not None and until - f.end > RECOVERY_LIMIT_S:
            verdict.problems.append(f"fault #{f.id} {f.kind}: {f.affected} did not commit within "
                                    f"{RECOVERY_LIMIT_S:.0f} s of its end")
    return rows


def _figures(opts: Options, ledger: Ledger, tail: Tail, nemesis: Nemesis, rows: list[dict[str, Any]],
             elapsed: float) -> dict[str, Any]:
    lat = [s.latency_max_ms for s in tail.seconds.values() if s.latency_max_ms]
    rec = [r["recovery_s"] for r in rows if r.get("recovery_s") is not None]
    return {"duration_s": opts.duration_s, "elapsed_s": round(elapsed, 1), "rate_per_s": opts.rate,
            "processors": opts.processors, "attempts_sent": ledger.attempts_sent,
            "settings_records": len(ledger.settings), "settings_changes": dict(ledger.changes),
            "out_of_order_churn": opts.out_of_order, "faults": fault_counts(nemesis.faults),
            "worst_recovery_s": max(rec, default=None), "max_e2e_latency_s": round(max(lat, default=0) / 1000, 2),
            "max_settings_propagation_s": round(max(tail.propagation_ms.values(), default=0) / 1000, 2),
            "settings_versions_seen": len(tail.propagation_ms)}


def run(opts: Options) -> Result:
    print(f"soak seed {opts.seed} (replay with --seed {opts.seed})", flush=True)
    opts.out.mkdir(parents=True, exist_ok=True)
    clock, epoch_ms = time.monotonic(), now_ms()
    timeline = Timeline(opts.out / "timeline.jsonl", clock)
    timeline.write("start", seed=opts.seed, duration_s=opts.duration_s, rate=opts.rate, processors=opts.processors,
                   out_of_order=opts.out_of_order, kinds=opts.kinds)
    with running_cluster(opts.out / "cluster") as info:
        topics = soak_topics(info, opts.partitions)
        ledger = Ledger()
        traffic = Traffic(topics, ledger, opts.rate, opts.seed, timeline)
        churn = Churn(topics, ledger, traffic, opts.seed, opts.out_of_order, timeline)
        churn.initial(traffic.initial)
        fleet = Fleet(topics, info, opts.out, opts.processors, clock)
        nemesis = Nemesis(fleet, info, opts.seed, timeline, opts.kinds, opts.mean_gap_s)
        sampler: Sampler | None = None
        try:
            for name in fleet.names:
                fleet.start(name)
            wait_fleet_ready(fleet)
            tail, sampler = Tail(topics, ledger, clock), Sampler(fleet, ledger, nemesis, timeline)
            for t in (tail, sampler, traffic, churn, nemesis):
                t.start()
            load_end = fleet.now() + opts.duration_s  # the duration is the load's, after the cluster start
            timeline.write("load started")
            while fleet.now() < load_end:
                time.sleep(min(5.0, max(0.1, load_end - fleet.now())))  # the soak's length itself
                timeline.write("progress", sent=ledger.attempts_sent, faults=len(nemesis.faults))
            nemesis.finish()
            churn.stop.set()
            churn.join(120)
            traffic.stop.set()
            traffic.join(320)
            timeline.write("load stopped")
            _settle(fleet, nemesis, info, topics, timeline)
            time.sleep(2.0)  # let the tail reader see the last commits before it stops (figures only)
            tail.stop.set()
            sampler.stop.set()
            for t in (tail, sampler):
                t.join(30)
            until = fleet.now()
            exits = list(nemesis.term_exits)
            for name in fleet.names:
                life = fleet.stop(name, signal.SIGTERM)
                if life is not None:
                    life.how = FINAL
                    exits.append(life)
            verdict = check(topics, ledger.history(), [x.summary() for x in fleet.lives], exits, nemesis.faults,
                            epoch_ms, until, dict(ledger.churn), fleet.rises)
        finally:
            _stop_all(sampler, nemesis, fleet)
        verdict.problems += traffic.failures + churn.failures + sampler.crashes + fleet.frozen
        rows = _recoveries(nemesis, fleet, until, verdict)
        figures = _figures(opts, ledger, tail, nemesis, rows, until)
    return _write(opts, verdict, figures, rows, tail, sampler, nemesis, fleet)


def _write(opts: Options, verdict: Verdict, figures: dict[str, Any], rows: list[dict[str, Any]], tail: Tail,
           sampler: Sampler, nemesis: Nemesis, fleet: Fleet) -> Result:
    text = summary(opts.seed, figures, rows, verdict)
    with (opts.out / "timeline.jsonl").open("a") as fh:
        for r in rows:
            fh.write(json.dumps({"what": "fault-summary", **r}) + "\n")
        for life in fleet.lives:
            fh.write(json.dumps({"what": "life", **life.summary()}, default=str) + "\n")
        fh.write(json.dumps({"what": "result", "ok": verdict.ok, "figures": figures, "diffs": verdict.diffs,
                             "diff_kinds": dict(verdict.diff_kinds), "problems": verdict.problems}, default=str) + "\n")
    (opts.out / "summary.txt").write_text(text + "\n")
    plot(opts.out / "plot.svg", tail.seconds, {"attempts sent": sampler.sent, "attempts committed": sampler.committed},
         nemesis.faults, figures["elapsed_s"], opts.seed)
    if opts.png:
        render_png(opts.out / "plot.svg")
    print(text, flush=True)
    return Result(verdict, text, figures, rows, opts.out)


def render_png(svg: Path) -> Path | None:
    """plot.png next to the SVG, with headless chromium when installed."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        return None
    height = re.search(r'height="(\d+)"', svg.read_text())
    png = svg.with_suffix(".png")
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", f"--screenshot={png}",
                    f"--window-size=1200,{height.group(1) if height else 900}", svg.resolve().as_uri()],
                   capture_output=True, timeout=120, check=False)
    return png if png.exists() else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=parse_duration, default=parse_duration("5m"), help="e.g. 5m, 2h")
    parser.add_argument("--seed", type=int, default=None, help="replay a run (default: random, printed)")
    parser.add_argument("--rate", type=float, default=100.0, help="attempts per second (default 100)")
    parser.add_argument("--processors", type=int, default=3, choices=[2, 3])
    parser.add_argument("--out", type=Path, default=None, help="output dir (default var/soak/<seed>)")
    parser.add_argument("--no-out-of-order", action="store_true", help="no out-of-order updated_at churn")
    parser.add_argument("--faults", default=",".join(KINDS), help=f"comma-separated kinds from {','.join(KINDS)}")
    args = parser.parse_args(argv)
    kinds = [k for k in args.faults.split(",") if k]
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        parser.error(f"--faults: unknown kinds {unknown}")
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1_000_000)
    out = args.out or Path("var") / "soak" / str(seed)
    result = run(Options(args.duration, seed, out, args.rate, args.processors, out_of_order=not args.no_out_of_order,
                         kinds={k: KINDS[k] for k in kinds}))
    print(f"output: {out}/summary.txt, timeline.jsonl, plot.svg", flush=True)
    return 0 if result.ok else 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
