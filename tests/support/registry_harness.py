"""A real schema registry for tests: Apicurio Registry started with the code of `access-eval local registry`.

    from tests.support.registry_harness import apicurio  # session fixture, re-exported into the test module

    def test_something(apicurio: RegistryInfo) -> None:
        apicurio.url  # http://127.0.0.1:PORT/apis/ccompat/v7, the value of --schema-registry-url

Java 21+ and the cached application (`scripts/bootstrap --all`) are required: missing, the test fails
(tests/support/required.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from processor.local import registry as local_registry
from processor.local.registry import LocalRegistryError, RegistryInfo
from tests.support.kafka_harness import free_port
from tests.support.required import missing

_START_ATTEMPTS = 3


def start_registry(data_dir: Path, port: int | None = None) -> RegistryInfo:
    """Start one Apicurio Registry from `data_dir` (the caller stops it with `local_registry.stop`)."""
    try:
        local_registry.find_java()
    except LocalRegistryError as exc:
        missing("Java 21+ for Apicurio Registry", str(exc))
    for attempt in range(1, _START_ATTEMPTS + 1):
        chosen = port or free_port()
        try:
            return local_registry.start(port=chosen, data_dir=data_dir,
                                        management_port=free_port(exclude=[chosen]), progress=lambda _m: None)
        except LocalRegistryError as exc:
            local_registry.stop(data_dir)
            if port is not None or attempt == _START_ATTEMPTS or "in use" not in str(exc):
                pytest.fail(f"could not start Apicurio Registry: {exc}", pytrace=False)
    raise AssertionError("unreachable")


@pytest.fixture(scope="session")
def apicurio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryInfo]:
    """One Apicurio Registry for the session (in-memory: tests use their own subjects, i.e. topics)."""
    data_dir = tmp_path_factory.mktemp("registry")
    info = start_registry(data_dir)
    try:
        yield info
    finally:
        local_registry.stop(data_dir)
