"""When the open transaction commits (`Transaction.due`): at `--commit-interval-ms` of age while attempts
keep coming, from half of it once the input is drained. At half load the loop drains between fetches,
and its attempts waited up to the whole interval for nothing but the commit (bench/README.md, p99)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from processor.health import Health
from processor.metrics import Metrics
from processor.metrics.tally import Tally
from processor.stream import transaction as transaction_mod
from processor.stream.context import RunContext
from processor.stream.transaction import Transaction
from tests.stream.test_pipeline import attempt, doc
from tests.support.kafka_harness import Topics, wait_until
from tests.support.processor_harness import committed_offsets, produce, settings_record, start_processor


class _Producer:
    failed_deliveries = 0

    def poll(self, timeout: float = 0) -> int:
        return 0


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> _Clock:
    c = _Clock()
    monkeypatch.setattr(transaction_mod.time, "monotonic", c.monotonic)
    return c


def _open(clock: _Clock) -> Transaction:
    txn = Transaction(_Producer(), None, Metrics(), RunContext(Health()), exactly_once=False)  # type: ignore[arg-type]
    txn.begin()
    assert txn.started == clock.now
    return txn


@pytest.mark.parametrize(
    ("age", "drained", "due"),
    [
        (0.0, False, False), (0.375, True, False),  # younger than half: never
        (0.5, True, True), (0.875, True, True),  # drained, from half on
        (0.5, False, False), (0.875, False, False),  # attempts keep coming: the whole interval
        (1.0, False, True), (1.0, True, True),
    ],
)
def test_due_at_the_interval_or_at_half_of_it_once_drained(clock: _Clock, age: float, drained: bool, due: bool) -> None:
    txn = _open(clock)
    clock.now += age
    assert txn.due(1.0, 100, drained=drained) is due  # binary fractions: exact ages


def test_no_open_transaction_is_never_due(clock: _Clock) -> None:
    txn = _open(clock)
    txn.open = False
    clock.now += 10
    assert not txn.due(0.050, 100, drained=True)


def test_a_large_tally_is_due_at_once(clock: _Clock) -> None:
    txn = _open(clock)
    tally = Tally()
    for i in range(3):
        tally.add("permit", "user", "monitor", f"acct-{i}", 1)
    txn.tally(tally)
    assert txn.due(0.050, 3) and not txn.due(0.050, 4)


@pytest.mark.kafka
def test_a_drained_transaction_commits_at_half_the_interval(topics: Topics, tmp_path: Path) -> None:
    """One attempt, then nothing: its transaction commits from 3 s of age with a 6 s interval, not at 6 s
    (before the change: at 6 s). Never before 3 s: the transaction opens after the attempt is produced."""
    topics.create(partitions=1)
    produce(topics.bootstrap, topics.settings, [settings_record(doc("a", "monitor", []))])
    p = start_processor(topics, tmp_path, "--commit-interval-ms", "6000")
    try:
        p.wait_ready()
        sent = time.monotonic()
        produce(topics.bootstrap, topics.attempts, [attempt(1, "a", "b", int(time.time() * 1000))])

        def committed() -> Any:
            return committed_offsets(topics.bootstrap, topics.group, topics.attempts).get(0, -1) >= 1

        wait_until(committed, 30, "the attempt's offset committed", interval=0.05)
        took = time.monotonic() - sent
        assert 3.0 <= took < 5.5, f"committed {took:.2f} s after the attempt was produced"
        assert p.metric("access_eval_transactions_total", result="committed") == 1
    finally:
        assert p.terminate() == 0, p.log()
