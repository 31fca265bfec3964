"""The fault suite's fixtures: the seed printed with every test, and a broker of the suite's own (stopped
and restarted by one test, SASL/PLAIN for the credentials test, a log cleaner that wakes every 200 ms)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.fault_harness import (
    OwnBroker,
)
from tests.support.fault_inputs import (
    SASL_USERS,
    SEED,
)
from tests.support.kafka_harness import Topics


@pytest.fixture(autouse=True)
def _print_fault_seed() -> None:
    """The seed first, so a failing (or hanging) fault test can be replayed: ACCESS_EVAL_FAULT_SEED=<seed>."""
    print(f"\nfault seed {SEED} (replay with ACCESS_EVAL_FAULT_SEED={SEED})", flush=True)


# --------------------------------------------------------------------------------------------------
# A broker of this module's own: stopped and restarted by one test, with a SASL/PLAIN listener for
# the credentials test and a log cleaner that wakes every 200 ms (default 15 s) for the compaction test.



@pytest.fixture(scope="module")
def own_module(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OwnBroker]:
    broker = OwnBroker(tmp_path_factory.mktemp("own-kafka"), sasl_users=SASL_USERS,
                       extra={"log.cleaner.backoff.ms": "200"})
    try:
        broker.start()
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def own(own_module: OwnBroker, request: pytest.FixtureRequest) -> Iterator[tuple[OwnBroker, Topics]]:
    """The module's own broker (restarted if a previous test left it stopped) and fresh topic names on it."""
    if not own_module.running:
        own_module.start()
    names = Topics.for_test(own_module.bootstrap, request.node.name)
    yield own_module, names
    if own_module.running:
        names.delete()
