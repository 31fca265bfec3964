"""The machine a benchmark ran on, recorded with its figures (shared by bench_core and bench_kafka)."""

from __future__ import annotations

import contextlib
import os
import platform
from pathlib import Path
from typing import Any


def _first(path: str, prefix: str) -> str | None:
    with contextlib.suppress(OSError):
        for line in Path(path).read_text().splitlines():
            if line.startswith(prefix):
                return line.split(":", 1)[1].strip()
    return None


def machine() -> dict[str, Any]:
    """CPU count and model, RAM, Python, kernel and the 1-minute load when the benchmark started."""
    mem = _first("/proc/meminfo", "MemTotal:")
    load = None
    with contextlib.suppress(OSError):
        load = Path("/proc/loadavg").read_text().split()[0]
    return {
        "nproc": os.cpu_count(),
        "cpu": _first("/proc/cpuinfo", "model name") or "unknown",
        "ram_gb": round(int(mem.split()[0]) / 1024 / 1024, 1) if mem else None,
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "kernel": platform.release(),
        "loadavg_1m_at_start": load,
    }
