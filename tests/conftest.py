"""Shared pytest fixtures: one real Kafka broker per test session, and unique topics per test.

Kept generic on purpose: fixtures for other real services (Prometheus, helm) live in their own
modules. Tests that use `kafka` (directly or through `topics`) are marked `kafka` automatically,
so `pytest -m "not kafka"` runs without a JVM.

    from kafka_harness import wait_until

    @pytest.mark.kafka
    def test_something(kafka, topics):
        topics.create(partitions=3)
        ...  # kafka.bootstrap, topics.settings / attempts / evals / dlq, topics.group
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# Test modules import the helpers as `from kafka_harness import ...`, whether or not tests/ becomes
# a package later (with an __init__.py pytest would no longer put this folder on sys.path itself).
_TESTS_DIR = str(Path(__file__).resolve().parent)
if _TESTS_DIR not in sys.path:
    sys.path.insert(0, _TESTS_DIR)

from kafka_harness import Topics, free_port, start_watchdog, wait_until  # noqa: E402

from processor.local import BrokerInfo, LocalKafkaError, start, stop  # noqa: E402

__all__ = ["Topics", "wait_until"]

_START_ATTEMPTS = 3  # a randomly picked free port can be taken by someone else before the JVM binds it


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that needs the broker, so `-m kafka` / `-m "not kafka"` select correctly."""
    for item in items:
        if "kafka" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.kafka)


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
