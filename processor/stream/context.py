"""What the parts of `run` share about the run itself: its health, the stop request and its deadline,
and the fatal error that ends it.

One small object, as quixstreams' `ProcessingContext`, instead of a fan of callables (`on_fatal`,
`stopping`, `stop_deadline`) leading from `Transaction` back into `Processor`: the loop owns it, the
transaction reads the deadline and reports a fatal error through it, and neither reaches into the other.
It holds no clock: the loop and the transaction compare the deadline with their own (a test's fake one).
"""

from __future__ import annotations

from processor.config import ConfigError
from processor.health import Health


class RunContext:
    """The state of one `run` that its loop and its transaction both read."""

    __slots__ = ("fatal", "health", "stop_deadline", "stopping")

    def __init__(self, health: Health) -> None:
        self.health = health
        #: a stop was requested (signal, end of a test): finish the batch, commit, leave the group
        self.stopping = False
        #: monotonic time by which the stop must be done (retries give up past it); inf until a stop
        self.stop_deadline = float("inf")
        #: the misconfiguration that ends the run (exit 2 or 3), if any
        self.fatal: ConfigError | None = None

    def fail(self, error: ConfigError) -> None:
        """End the run with `error` (the loop stops at its next turn and names the setting to fix)."""
        self.fatal = error

