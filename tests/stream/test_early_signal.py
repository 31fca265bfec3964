"""A SIGTERM that reaches the executable while it is still importing its commands (processor.signals).

A rolling restart or a rebalance storm can stop a process within a second of its start; importing the
commands takes about 2 s on a loaded node. Before `processor.launch` held the signal, such a process
died of the default action (exit -15, seen in the rebalance storm) instead of stopping cleanly.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.support.kafka_harness import wait_until

REPO = Path(__file__).resolve().parents[2]
SIGTERM_BIT = 1 << (signal.SIGTERM - 1)


def _catches_sigterm(pid: int) -> bool:
    """True once the process has a handler for SIGTERM (SigCgt in /proc/PID/status)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    caught = next(line for line in status.splitlines() if line.startswith("SigCgt:"))
    return bool(int(caught.split()[1], 16) & SIGTERM_BIT)


def _modules_loaded(pid: int) -> bool:
    """True once the commands' heavy imports (confluent_kafka's C extension) are mapped in."""
    try:
        return "cimpl" in Path(f"/proc/{pid}/maps").read_text()
    except FileNotFoundError:
        return True


def _start(*args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-m", "processor", *args], cwd=REPO, env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
    )


def _stop_while_importing() -> tuple[bool, int | None, str]:
    """Start `run`, SIGTERM it once it holds the signal: (signal sent before the heavy imports, exit, stderr)."""
    proc = _start("run", "--bootstrap-servers", "127.0.0.1:1", "--metrics-port", "0")
    try:
        # The window between the hold and the heavy imports is short (24-57 ms measured on the test machine,
        # compiled core or not): a poll every 50 ms (the default) missed it in 5 tries in a CI run.
        wait_until(lambda: _catches_sigterm(proc.pid), 30, "the executable to hold SIGTERM", interval=0.001)
        loaded_before_signal = _modules_loaded(proc.pid)
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    return not loaded_before_signal, proc.returncode, err


def test_run_stopped_while_importing_exits_0_without_a_traceback() -> None:
    # On a loaded machine the poll may see the signal held only after the imports (CI, 1 of 1,341):
    # such a try does not test the window, so up to 5 tries; every try must stop cleanly.
    tries = []
    for _ in range(5):
        tries.append(_stop_while_importing())
        if tries[-1][0]:
            break
    assert any(in_window for in_window, _, _ in tries), "the signal came after the imports in 5 tries"
    for _, code, err in tries:
        assert code == 0, err
        assert "Traceback" not in err


def test_a_tool_stopped_while_importing_still_stops() -> None:
    """The other commands get the default action back: the held SIGTERM is delivered, not swallowed."""
    proc = _start("tail", "--bootstrap-servers", "127.0.0.1:1", "--timeout", "30")
    started = time.monotonic()
    try:
        # The window between the hold and the heavy imports is short (24-57 ms measured on the test machine,
        # compiled core or not): a poll every 50 ms (the default) missed it in 5 tries in a CI run.
        wait_until(lambda: _catches_sigterm(proc.pid), 30, "the executable to hold SIGTERM", interval=0.001)
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == -signal.SIGTERM
    assert time.monotonic() - started < 30, "the held signal was swallowed until the tool gave up"
