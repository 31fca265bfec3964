"""Every thread's stack on request (processor/stacks.py), on a process whose threads are busy in Python.

The first stack dump of `run` was faulthandler's C signal handler: it read the other threads' frames
while they ran, and a CI run's processor died of SIGSEGV on SIGUSR1. The child below churns frames
(recursion, generators, a selector opened and closed, as the HTTP thread does) in three threads while
its main thread sleeps in C without the GIL; the C handler dies there within a few signals."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from processor import stacks
from tests.support.kafka_harness import wait_until

ROOT = Path(__file__).resolve().parent.parent

BUSY = """
import selectors, socket, sys, threading, time
from processor import stacks

def churn():
    def gen(n):
        yield from (gen(n - 1) if n else iter([1]))
    def deep(n):
        return sum(gen(5)) if n == 0 else deep(n - 1) + 1
    while True:
        deep(300)

def select():
    a, _b = socket.socketpair()
    while True:
        with selectors.DefaultSelector() as s:
            s.register(a, selectors.EVENT_READ)
            s.select(0)
            s.unregister(a)

def early():
    while True:
        time.sleep(0.01)

if sys.argv[1] == "before":  # a thread started before the block does not block SIGUSR1
    threading.Thread(target=early, name="started-before", daemon=True).start()
with stacks.on_request():
    for work in (churn, churn, select) if sys.argv[1] == "before" else (churn, churn, select, early):
        threading.Thread(target=work, name=work.__name__, daemon=True).start()
    print("busy", flush=True)
    while True:
        time.sleep(0.001)
"""


def start(tmp_path: Path, code: str, *args: str) -> tuple[subprocess.Popen[bytes], Path]:
    log = tmp_path / "child.log"
    with log.open("wb") as fh:
        proc = subprocess.Popen([sys.executable, "-c", code, *args], stdout=fh, stderr=subprocess.STDOUT, cwd=ROOT)
    wait_until(lambda: "busy" in log.read_text(errors="replace") or proc.poll() is not None, 30, "the child")
    assert proc.poll() is None, log.read_text(errors="replace")
    return proc, log


@pytest.mark.parametrize("threads", ["inside", "before"])
def test_sigusr1_on_a_busy_process_never_crashes_it(tmp_path: Path, threads: str) -> None:
    """`inside`: every thread started in the block, the answerer takes each signal. `before`: a thread
    started before takes them, and Python's handler dumps in the main thread."""
    proc, log = start(tmp_path, BUSY, threads)
    try:
        for sent in range(1, 101):
            os.kill(proc.pid, signal.SIGUSR1)
            wait_until(
                lambda n=sent: proc.poll() is not None or log.read_text(errors="replace").count(stacks.FOOTER) >= n,
                20, f"dump {sent}",
            )
            assert proc.poll() is None, f"died on signal {sent}: {proc.returncode}"
        text = log.read_text(errors="replace")
        # every dump names every thread (deep ones end at faulthandler's 100 frames), the answering one
        # as the current thread: the answerer, or with a thread started before, the main thread
        dumps = [d.split(stacks.FOOTER)[0] for d in text.split(stacks.HEADER)[1:]]
        assert len(dumps) == 100
        odd = [d for d in dumps if d.count("(most recent call first)") != 6 or "Current thread" not in d]
        assert not odd, odd[0]
        assert all("in select" in d and "in early" in d for d in dumps), text[-3000:]
        answerer = "in _serve" if threads == "inside" else "in <lambda>"
        assert all(answerer in d.split("Current thread", 1)[1].split("\n\n", 1)[0] for d in dumps)
    finally:
        proc.kill()
        proc.wait(10)


def test_the_block_restores_the_handler_and_the_mask() -> None:
    before_handler = signal.getsignal(signal.SIGUSR1)
    before_mask = signal.pthread_sigmask(signal.SIG_BLOCK, set())
    with stacks.on_request():
        assert signal.SIGUSR1 in signal.pthread_sigmask(signal.SIG_BLOCK, set())
        assert "access-eval-stacks" in {t.name for t in threading.enumerate()}
    assert signal.getsignal(signal.SIGUSR1) == before_handler
    assert signal.pthread_sigmask(signal.SIG_BLOCK, set()) == before_mask
    assert "access-eval-stacks" not in {t.name for t in threading.enumerate()}


def test_sigusr2_dumps_from_c_a_process_whose_gil_is_held(tmp_path: Path) -> None:
    """The frozen case: a thread holds the GIL inside a C call; SIGUSR1's answerer cannot run, the C
    dump can, and is safe there because no thread runs Python."""
    from tests.soak.test_frozen_stacks import FROZEN  # the soak's frozen child: the same `on_request`

    proc, log = start(tmp_path, FROZEN.replace('print("frozen"', 'print("busy"'))
    try:
        os.kill(proc.pid, signal.SIGUSR1)
        os.kill(proc.pid, stacks.FROZEN_DUMP)
        # the GIL is held: SIGUSR1 waits, the C dump comes first (SIGUSR2 cuts the C call's sleep short,
        # and between two calls the answerer may take the GIL and answer too)
        wait_until(lambda: "in blocked_in_c" in log.read_text(errors="replace").split(stacks.HEADER)[0], 20,
                   "the C dump, before any answer to SIGUSR1")
        assert proc.poll() is None
    finally:
        proc.kill()
        proc.wait(10)


def test_a_closed_output_is_no_reason_to_disturb_the_process(tmp_path: Path) -> None:
    """The handler runs inside whatever the main thread was doing: it must never raise into it."""
    out = (tmp_path / "out").open("w")
    out.close()
    try:
        stacks.dump(out)
    except (OSError, ValueError) as exc:  # before: ValueError, I/O operation on closed file
        pytest.fail(f"the dump raised {exc!r} into the code the signal interrupted")
