"""Helpers for tests that run against the real local Kafka broker (see conftest.py for the fixtures).

Import from test modules as ``from tests.support.kafka_harness import wait_until``. Run as a script,
this module is the watchdog that stops a test broker whose pytest process died without running its
fixture teardown (SIGKILL, pytest-timeout's thread method).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from processor.local.process import free_port as free_port  # the one free_port, re-exported for the tests

T = TypeVar("T")

# The topic defaults of SPEC §2, used as suffixes so a test's topics read like the real ones.
SETTINGS_SUFFIX = "iam.account-settings"
ATTEMPTS_SUFFIX = "iam.access-attempts"
EVALS_SUFFIX = "iam.access-evaluations"
DLQ_SUFFIX = "iam.access-attempts.dlq"


def wait_until(
    predicate: Callable[[], T | None],
    timeout: float,
    message: str,
    interval: float = 0.05,
) -> T:
    """Poll `predicate` until it returns something truthy and return that; fail after `timeout` s.

    Tests wait on an observable condition with a deadline instead of sleeping and hoping. The
    predicate is always called at least once, and once more at the deadline.
    """
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            value = predicate()
        except AssertionError as exc:  # predicates may assert to explain what is not there yet
            last_error, value = exc, None
        if value:
            return value
        if time.monotonic() >= deadline:
            detail = f" (last: {last_error})" if last_error else ""
            raise AssertionError(f"timed out after {timeout:g} s waiting for: {message}{detail}")
        time.sleep(min(interval, max(0.0, deadline - time.monotonic())))


def _load_prctl() -> Any:
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):  # not Linux
        return None


# Resolved in the parent: after fork() the child only makes one foreign call, no dlopen/dlsym.
_PRCTL = _load_prctl()
_PR_SET_PDEATHSIG = 1


def die_with_parent(signum: int) -> Callable[[], None]:
    """A preexec_fn: the child gets `signum` when the test process dies (Linux; best effort elsewhere),
    so a server started by a test never outlives it."""

    def preexec() -> None:
        if _PRCTL is not None:
            _PRCTL(_PR_SET_PDEATHSIG, int(signum))

    return preexec


def _slug(text: str, limit: int = 40) -> str:
    """A topic-name-safe rendering of a test name (Kafka allows [a-zA-Z0-9._-])."""
    return re.sub(r"[^a-zA-Z0-9_-]+", "_", text).strip("_")[:limit] or "test"


@dataclass
class Topics:
    """Unique topic names and a unique group id for one test, plus `create()` to make them.

    Names are ``test.<test name>.<random>.<SPEC default>`` so leftovers are easy to attribute.
    """

    bootstrap: str
    settings: str
    attempts: str
    evals: str
    dlq: str
    group: str
    created: list[str] = field(default_factory=list)

    @classmethod
    def for_test(cls, bootstrap: str, test_name: str) -> Topics:
        prefix = f"test.{_slug(test_name)}.{uuid.uuid4().hex[:8]}"
        return cls(
            bootstrap=bootstrap,
            settings=f"{prefix}.{SETTINGS_SUFFIX}",
            attempts=f"{prefix}.{ATTEMPTS_SUFFIX}",
            evals=f"{prefix}.{EVALS_SUFFIX}",
            dlq=f"{prefix}.{DLQ_SUFFIX}",
            group=f"{prefix}.group",
        )

    @property
    def names(self) -> list[str]:
        return [self.settings, self.attempts, self.evals, self.dlq]

    def admin(self) -> Any:
        """A confluent-kafka AdminClient on the test broker."""
        from confluent_kafka.admin import AdminClient

        return AdminClient({"bootstrap.servers": self.bootstrap})

    def create(
        self,
        partitions: int = 3,
        *,
        settings_partitions: int = 1,
        settings_config: dict[str, str] | None = None,
        config: dict[str, str] | None = None,
        only: Iterable[str] | None = None,
        timeout: float = 30.0,
    ) -> Topics:
        """Create the topics and wait until the broker reports every partition with a leader.

        settings: compacted (`cleanup.policy=compact`, as SPEC §2 requires), `settings_partitions`
        partitions; attempts, evals, dlq: `partitions` partitions. `config` / `settings_config` add
        topic configs; `only` restricts creation to some of the names. Returns self for chaining.
        """
        # documented home of NewTopic; the stubs only declare it in cimpl
        from confluent_kafka.admin import NewTopic  # type: ignore[attr-defined]

        wanted = list(only) if only is not None else self.names
        unknown = [name for name in wanted if name not in self.names]
        if unknown:
            raise ValueError(f"not one of this test's topics: {unknown}")
        new_topics = []
        for name in wanted:
            if name == self.settings:
                cfg = {"cleanup.policy": "compact", **(settings_config or {})}
                new_topics.append(NewTopic(name, num_partitions=settings_partitions, config=cfg))
            else:
                new_topics.append(NewTopic(name, num_partitions=partitions, config=dict(config or {})))
        admin = self.admin()
        futures = admin.create_topics(new_topics, operation_timeout=timeout, request_timeout=timeout)
        for name, future in futures.items():
            future.result(timeout=timeout)
            self.created.append(name)
        expected = {t.topic: t.num_partitions for t in new_topics}

        def all_there() -> bool:
            metadata = admin.list_topics(timeout=5)
            for name, count in expected.items():
                topic = metadata.topics.get(name)
                if topic is None or topic.error is not None or len(topic.partitions) != count:
                    return False
                if any(p.leader < 0 or p.error is not None for p in topic.partitions.values()):
                    return False
            return True

        wait_until(all_there, timeout, f"topics {sorted(expected)} to exist with leaders")
        return self

    def delete(self, timeout: float = 10.0) -> None:
        """Best-effort removal of what `create` made, so a long session does not pile up topics."""
        if not self.created:
            return
        futures = self.admin().delete_topics(list(self.created), operation_timeout=timeout)
        for future in futures.values():
            with contextlib.suppress(Exception):  # a leftover topic in a throwaway broker is harmless
                future.result(timeout=timeout)
        self.created.clear()


def start_watchdog(owner_pid: int, data_dir: Path) -> subprocess.Popen[bytes]:
    """Start a detached process that stops the broker of `data_dir` if `owner_pid` dies first.

    Fixture teardown is the normal path; this only covers a test process killed outright, which
    would otherwise leave a 512 MB JVM running for good.
    """
    return subprocess.Popen(
        [sys.executable, "-m", "tests.support.kafka_harness", "--watchdog", str(owner_pid), str(data_dir)],
        cwd=Path(__file__).resolve().parents[2],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def _owner_alive(owner_pid: int) -> bool:
    if os.getppid() != owner_pid:  # reparented: the owner is gone
        return False
    try:
        os.kill(owner_pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _watchdog(owner_pid: int, data_dir: Path) -> int:
    from processor.local.broker import STATE_FILE, stop

    while _owner_alive(owner_pid):
        # stopped normally: nothing left to guard (a cluster's dir has cluster.json, its nodes their own state)
        if not (data_dir / STATE_FILE).exists() and not (data_dir / "cluster.json").exists():
            return 0
        time.sleep(0.5)
    stop(data_dir)
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--watchdog":
        raise SystemExit(_watchdog(int(sys.argv[2]), Path(sys.argv[3])))
    print(f"usage: {sys.argv[0]} --watchdog OWNER_PID DATA_DIR", file=sys.stderr)
    raise SystemExit(2)
