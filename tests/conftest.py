"""Shared pytest fixtures: one real Kafka broker per test session, and unique topics per test.

Kept generic on purpose: fixtures for other real services (Prometheus, helm) live in their own
modules. Tests that use `kafka` (directly or through `topics`) are marked `kafka` automatically,
so `pytest -m "not kafka"` runs without a JVM.

    from tests.support.kafka_harness import wait_until

    @pytest.mark.kafka
    def test_something(kafka, topics):
        topics.create(partitions=3)
        ...  # kafka.bootstrap, topics.settings / attempts / evals / dlq, topics.group
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, Verbosity, settings

# tests/ is a package (every folder has an __init__.py): modules are `tests.<dir>.test_x`, so equal
# basenames in two folders never clash, and helpers are imported by their full name,
# `from tests.support.kafka_harness import ...` (pytest puts the checkout on sys.path: pythonpath).
from processor.local import BrokerInfo, LocalKafkaError, start, stop
from tests.support.kafka_harness import Topics, free_port, start_watchdog, wait_until

__all__ = ["Topics", "wait_until"]

# Hypothesis profiles, chosen with HYPOTHESIS_PROFILE (scripts/test selects `ci`). No profile has a
# deadline: a slow moment on a shared 2-CPU machine is not a failure (tests/core/test_hot_path.py measures
# speed with its own conditions, not with Hypothesis' 200 ms default).
settings.register_profile("dev", max_examples=100, deadline=None)
settings.register_profile("ci", max_examples=500, deadline=None, derandomize=True, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("thorough", max_examples=5000, deadline=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow], verbosity=Verbosity.normal)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))

#: Skips that do not make a `scripts/test` run red: platform facts, never missing tools or packages.
ALLOWED_SKIP_REASONS = ("needs named pipes",)
_ALLOW_MISSING = "ACCESS_EVAL_ALLOW_MISSING_TOOLS"
_skips: list[tuple[str, str]] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped and not hasattr(report, "wasxfail"):
        reason = str(report.longrepr[2]) if isinstance(report.longrepr, tuple) else str(report.longrepr)
        if not any(allowed in reason for allowed in ALLOWED_SKIP_REASONS):
            _skips.append((report.nodeid, reason))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Under scripts/test (ACCESS_EVAL_ALLOW_MISSING_TOOLS unset) any skip outside the allowlist turns the
    session red: a green run must never mean "checked nothing"."""
    if _skips and os.environ.get(_ALLOW_MISSING, "") != "1" and exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int) -> None:
    if _skips and os.environ.get(_ALLOW_MISSING, "") != "1":
        terminalreporter.section("skipped tests make this run FAIL", sep="=", red=True)
        for nodeid, reason in _skips:
            terminalreporter.line(f"SKIPPED {nodeid}: {reason}")
        terminalreporter.line(f"(allowed reasons: {ALLOWED_SKIP_REASONS}; {_ALLOW_MISSING}=1 lets skips pass)")


_START_ATTEMPTS = 3  # a randomly picked free port can be taken by someone else before the JVM binds it


#: Run order by the services a test needs: none first (fast feedback), the slow system tests last.
_SLOW_MARKERS = ("faults", "cluster", "image", "k8s", "wheel")


def _stage(item: pytest.Item) -> int:
    if any(item.get_closest_marker(m) for m in _SLOW_MARKERS):
        return 2
    return 1 if item.get_closest_marker("kafka") or item.get_closest_marker("prometheus") else 0


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that needs the broker, so `-m kafka` / `-m "not kafka"` select correctly, then
    order the run: tests that need no service first, then the broker's, then the slow system tests."""
    for item in items:
        if "kafka" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.kafka)
    items.sort(key=_stage)  # stable: the file order stays within each stage


@pytest.fixture(scope="session")
def kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerInfo]:
    """One real broker for the whole session, started with the same code as `access-eval local start`
    (random free ports, data in a tmp dir), always stopped at the end even when tests fail."""
    data_dir = tmp_path_factory.mktemp("kafka")
    info: BrokerInfo | None = None
    for attempt in range(1, _START_ATTEMPTS + 1):
        port = free_port()
        try:
            info = start(port=port, data_dir=data_dir, controller_port=free_port(exclude=[port]))
            break
        except LocalKafkaError as exc:
            stop(data_dir)
            if attempt == _START_ATTEMPTS or "in use" not in str(exc):
                pytest.fail(f"could not start the test Kafka broker: {exc}", pytrace=False)
    assert info is not None
    watchdog = start_watchdog(os.getpid(), data_dir)
    try:
        yield info
    finally:
        try:
            stop(data_dir)
        finally:
            watchdog.terminate()
            watchdog.wait(timeout=10)


@pytest.fixture
def topics(kafka: BrokerInfo, request: pytest.FixtureRequest) -> Iterator[Topics]:
    """Unique topic names (`settings`, `attempts`, `evals`, `dlq`) and group id (`group`) for one
    test; call `topics.create(partitions=N)` to create them. Created topics are deleted afterwards."""
    names = Topics.for_test(kafka.bootstrap, request.node.name)
    yield names
    names.delete()
