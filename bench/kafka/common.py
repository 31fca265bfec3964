"""Shared by every section: sizes (full, --quick), logging, statistics and CPU/RSS readings from /proc."""

from __future__ import annotations

import os
import statistics
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import confluent_kafka

from bench.sysinfo import machine
from processor.local import broker as local
from processor.local.process import free_port as free_port  # the one free_port, re-exported for the bench

#: The repository (processes run from it) and the entry script (re-run as `--worker`).
REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "bench" / "bench_kafka.py"

#: Outcomes that produce an eval event (a `permit` only when the account is in `monitor`).
EMITTING = ("would_be_deny", "enforced_deny")

FULL = {
    "attempts": 1_000_000,
    "accounts": 100_000,
    "huge_allowlists": 3,  # accounts 0..8 that are restricted get 10,000-id allowlists: 6 accounts
    "latency_seconds": 60.0,
    "latency_warmup_seconds": 10.0,
    "settings_records": 1_000_000,
    "changes": 20,
    "runs": 3,
    "stage_attempts": 200_000,
}
QUICK = {
    "attempts": 20_000,
    "accounts": 2_000,
    "huge_allowlists": 1,
    "latency_seconds": 5.0,
    "latency_warmup_seconds": 2.0,
    "settings_records": 20_000,
    "changes": 5,
    "runs": 1,
    "stage_attempts": 20_000,
}


def say(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def median(xs: Iterable[float | None]) -> float | None:
    known = [x for x in xs if x is not None]
    return statistics.median(known) if known else None


def num(x: float | None) -> str:
    return "n/a" if x is None else f"{x:,.0f}"


def percentile(sorted_xs: list[float], q: float) -> float:
    if not sorted_xs:
        return float("nan")
    i = min(len(sorted_xs) - 1, max(0, round(q * (len(sorted_xs) - 1))))
    return sorted_xs[i]


# --- /proc ---------------------------------------------------------------------------------------

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float | None:
    """utime + stime of a process (including its threads), from /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def machine_cpu_seconds() -> float:
    """CPU seconds all processes of the machine used so far (busy time of /proc/stat)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / CLK_TCK


def proc_status_kb(pid: int, key: str) -> int | None:
    """A `VmHWM:`-style field of /proc/PID/status in kB (VmHWM is the peak resident set size)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def machine_facts() -> dict[str, Any]:
    return {
        **machine(),
        "kafka": local.KAFKA_VERSION,
        "confluent_kafka": confluent_kafka.__version__,
        "librdkafka": confluent_kafka.libversion()[0],
    }
