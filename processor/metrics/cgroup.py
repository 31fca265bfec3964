"""The container's memory limit, read from the cgroup, so the memory alert needs no copy of it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from pathlib import Path

#: cgroup v2, then v1: where a container's memory limit is read from.
CGROUP_MEMORY_LIMITS = (Path("/sys/fs/cgroup/memory.max"), Path("/sys/fs/cgroup/memory/memory.limit_in_bytes"))


def memory_limit_bytes(paths: Iterable[Path] = CGROUP_MEMORY_LIMITS) -> int:
    """The memory limit of this process's cgroup, 0 for none ("max", v1's near-2^63 "unlimited", no
    cgroup): AccessEvalMemoryNearLimit compares RSS with it, so a limit the chart sets needs no copy."""
    for path in paths:
        try:
            text = path.read_text().strip()
        except OSError:
            continue
        if text == "max":
            return 0
        with contextlib.suppress(ValueError):
            value = int(text)
            return value if 0 < value < 2**60 else 0
    return 0
