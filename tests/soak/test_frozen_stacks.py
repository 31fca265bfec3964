"""A processor life that freezes with a thread blocked in C holding the GIL (the third 60-minute soak
of seed 20261208, docs/guarantees.md, Soak) answers nothing, not even SIGTERM; the soak takes its
stacks before it kills it, so the next occurrence names the blocking call."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from processor import stacks
from tests.support.kafka_harness import wait_until
from tests.support.processor_harness import RunningProcessor
from tests.support.soak_world import capture_stacks

#: Answers stack requests as `run` does (processor.stacks), then holds the GIL inside a C call
#: (ctypes.PyDLL does not release it), as a blocking librdkafka call made without releasing it would.
FROZEN = """
import ctypes
from processor import stacks
with stacks.on_request():
    print("frozen", flush=True)
    def blocked_in_c():
        while True:
            ctypes.PyDLL(None).sleep(60)
    blocked_in_c()
"""


def test_stacks_of_a_process_frozen_in_c_name_the_python_call_and_the_c_frames(tmp_path: Path) -> None:
    log = tmp_path / "processor-p0-1.log"
    with log.open("wb") as fh:
        proc = subprocess.Popen([sys.executable, "-c", FROZEN], stdout=fh, stderr=subprocess.STDOUT,
                                cwd=Path(__file__).resolve().parents[2])
    try:
        wait_until(lambda: "frozen" in log.read_text(), 30, "the child to start")
        out = capture_stacks(RunningProcessor(proc, 0, log), "no exit after SIGTERM", answer_s=2.0)
        wait_until(lambda: "blocked_in_c" in log.read_text(), 30, "the Python stacks in the log")
        text = out.read_text()
        assert out == tmp_path / "processor-p0-1.stacks.txt"
        assert f"pid {proc.pid}: no exit after SIGTERM" in text
        assert "SIGUSR1 unanswered in 2 s (the GIL is held); SIGUSR2 sent" in text
        # the C dump came first (SIGUSR2 interrupts the C call's sleep, so SIGUSR1's answer may follow)
        c_dump = log.read_text().split(stacks.HEADER)[0]
        assert "Current thread" in c_dump and "in blocked_in_c" in c_dump, c_dump
        if shutil.which("gdb") is not None:  # the native frames: where the C call blocks
            assert "sleep" in text and "Thread 1" in text, text[-3000:]
        else:
            assert "gdb not installed" in text
        assert proc.poll() is None, "taking the stacks must not end the process"
    finally:
        proc.kill()
        proc.wait(10)
