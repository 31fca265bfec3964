"""`kafka.heap`: the memory a bootstrap freed goes back to the system (bench/README.md, "Fleet scale").

Measured in a fresh interpreter, so the test process's own heap does not blur the figures.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

#: Like a bootstrap: many values above Python's small-object allocator (from malloc), a few of them kept
#: and spread over the heap so its top can never shrink by itself, the rest freed.
SCRIPT = """
import gc, json
from processor.kafka import heap
def rss_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024
on = heap.bootstrapping()
values = [bytes(1000) + i.to_bytes(4, "little") for i in range(200_000)]
kept = values[::64]
del values
freed = rss_mb()
settled = heap.settle()
print(json.dumps({"on": on, "settled": settled, "freed": freed, "after": rss_mb(), "frozen": gc.get_freeze_count(),
                  "kept": len(kept)}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator: Linux only")
def test_settle_gives_the_freed_heap_back_and_freezes_the_table() -> None:
    out = subprocess.run([sys.executable, "-c", SCRIPT], cwd=REPO, capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": str(REPO)})
    got = json.loads(out.stdout)
    assert got["on"] and got["settled"]  # glibc here (the image and CI are glibc)
    assert got["freed"] - got["after"] > 100, got  # ~200 MB allocated, 1/64 kept: most of it given back
    assert got["frozen"] > 0
