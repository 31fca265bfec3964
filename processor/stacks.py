"""Every thread's stack on request: SIGUSR1 while the process runs, SIGUSR2 once it froze.

A stack dump reads other threads' frames. It is safe only while no other thread runs Python, that is,
while the dumping thread holds the GIL; a dump from a C signal handler (`faulthandler.register`) reads
them while they change, and crashed a live processor with SIGSEGV in a CI run (tested by
`test_sigusr1_on_a_busy_process_never_crashes_it`). So SIGUSR1 dumps from Python with the GIL held: a
dedicated thread waits for it (`sigwait`, the signal blocked in every thread started after
`on_request` begins), so a main thread blocked in a long Kafka call does not delay the dump. A
process frozen by a thread that holds the GIL inside a C call cannot answer that way; there no
thread runs Python, so the C dump is safe, and SIGUSR2 gives it (docs/configuration.md, Signals).
Stdlib only: every layer may read it.
"""

from __future__ import annotations

import contextlib
import faulthandler
import signal
import sys
import threading
from collections.abc import Iterator
from typing import Any, TextIO

#: Dumps safely, from a thread that holds the GIL; the process goes on.
DUMP = signal.SIGUSR1
#: Dumps from C without the GIL: for a process that stopped answering (a thread holds the GIL).
FROZEN_DUMP = signal.SIGUSR2
#: The first and last lines of a SIGUSR1 dump, so a reader (the soak) sees that the process answered.
HEADER = "access-eval: every thread's stack (SIGUSR1)"
FOOTER = "access-eval: end of the stacks"


def dump(out: TextIO) -> None:
    """Write every thread's stack; the caller holds the GIL (any Python code does). A closed or broken
    output is no reason to disturb the process: nothing is written then."""
    with contextlib.suppress(OSError, ValueError):
        out.write(HEADER + "\n")
        out.flush()
        faulthandler.dump_traceback(out, all_threads=True)
        out.write(FOOTER + "\n")
        out.flush()


class _Answerer:
    """The thread that waits for SIGUSR1 and dumps; `close` wakes it to end."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.closing = False
        self.thread = threading.Thread(target=self._serve, name="access-eval-stacks", daemon=True)

    def _serve(self) -> None:
        while True:
            signal.sigwait({DUMP})
            if self.closing:
                return
            dump(self.out)

    def close(self) -> None:
        self.closing = True
        if self.thread.ident is not None and self.thread.is_alive():
            signal.pthread_kill(self.thread.ident, DUMP)
            self.thread.join(5.0)


def _with_fd(out: TextIO) -> TextIO:
    """faulthandler writes to a file descriptor: a replaced stderr without one (pytest's capture) gives
    way to the process's own."""
    try:
        out.fileno()
    except (OSError, ValueError):  # io.UnsupportedOperation is both
        return sys.__stderr__ or out
    return out


@contextlib.contextmanager
def on_request(out: TextIO | None = None) -> Iterator[None]:
    """Answer SIGUSR1 and SIGUSR2 with every thread's stack while the block runs (main thread only).

    SIGUSR1 is blocked in the calling thread, so every thread it starts inside the block (librdkafka's
    block all signals themselves) leaves the signal to the answerer. A thread started before may still
    receive it: then Python's own handler dumps, in the main thread, also with the GIL held."""
    target = _with_fd(out if out is not None else sys.stderr)
    answerer = _Answerer(target)
    previous: Any = signal.signal(DUMP, lambda _n, _f: dump(target))
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, {DUMP})
    faulthandler.register(FROZEN_DUMP, file=target, all_threads=True)
    try:
        answerer.thread.start()
        yield
    finally:
        answerer.close()
        faulthandler.unregister(FROZEN_DUMP)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        signal.signal(DUMP, previous)
