"""`Transaction.store_offsets` (issue 26): the offsets of an open transaction only increase per partition.

An offset that does not increase is refused with an error naming the partition and both offsets, as
quixstreams' checkpoint refuses one: committing it would re-read work already done, or stand for a
rewind the transaction never saw. In a correct run it cannot fire: the explorer (tests/support/eos_world.py)
reports a refusal as a violation over its 11,000 schedules; here a loop bug that keeps the offsets of
aborted work shows the refusal does fire, and the explorer reports it.
"""

from __future__ import annotations

from typing import Any

import pytest

from processor.health import Health
from processor.metrics import Metrics
from processor.stream import transaction as transaction_mod
from processor.stream.context import RunContext
from processor.stream.transaction import NonIncreasingOffset, Transaction
from tests.support.eos_world import Violation, World, explore

P0, P1 = ("attempts", 0), ("attempts", 1)


class _Producer:
    """Enough of TxnProducer for an at-least-once transaction that never reaches Kafka."""

    failed_deliveries = 0

    def __init__(self) -> None:
        self.produced: list[tuple[str, bytes | None, bytes | None]] = []

    def produce(self, topic: str, value: bytes | None, key: bytes | None, *_: Any, **__: Any) -> None:
        self.produced.append((topic, value, key))

    def poll(self, timeout: float = 0) -> int:
        return 0


def _txn() -> Transaction:
    txn = Transaction(_Producer(), None, Metrics(), RunContext(Health()), exactly_once=False)  # type: ignore[arg-type]
    txn.begin()
    return txn


@pytest.mark.parametrize("offset", [5, 4, 0])
def test_an_offset_that_does_not_increase_is_refused(offset: int) -> None:
    txn = _txn()
    txn.store_offsets({P0: 5})
    with pytest.raises(NonIncreasingOffset, match=rf"refusing offset {offset} for attempts\[0\].*holds 5"):
        txn.store_offsets({P0: offset})
    assert txn.offsets == {P0: 5}


def test_a_refused_batch_stores_none_of_its_offsets() -> None:
    """All or nothing: a batch whose offset for one partition is refused leaves the others as they were."""
    txn = _txn()
    txn.store_offsets({P0: 5, P1: 3})
    with pytest.raises(NonIncreasingOffset):
        txn.store_offsets({P1: 9, P0: 2})
    assert txn.offsets == {P0: 5, P1: 3}


def test_increasing_offsets_are_stored_per_partition() -> None:
    txn = _txn()
    txn.store_offsets({P0: 5})
    txn.store_offsets({P1: 1})  # another partition starts anywhere
    txn.store_offsets({P0: 6, P1: 2})
    assert txn.offsets == {P0: 6, P1: 2}


def test_after_an_abort_the_re_read_offsets_are_taken_again() -> None:
    """The rewind after an abort re-reads the aborted work: the same offsets again, in a new transaction."""
    txn = _txn()
    txn.store_offsets({P0: 5})
    txn.abort()
    txn.begin()
    txn.store_offsets({P0: 5})
    assert txn.offsets == {P0: 5}


def test_the_offsets_are_read_only_from_outside() -> None:
    txn = _txn()
    txn.store_offsets({P0: 5})
    with pytest.raises(TypeError):
        txn.offsets[P0] = 1  # type: ignore[index]
    assert txn.offsets == {P0: 5}


def test_a_loop_bug_keeping_aborted_offsets_is_refused_and_the_explorer_reports_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The refusal can fire: with the offsets of aborted work kept (a bug: the abort clears them), the
    re-read after the rewind hands the open transaction offsets it already holds, and it refuses them."""
    real_discard = Transaction._discard

    def discard_keeping_offsets(self: Transaction) -> None:
        kept = dict(self.offsets)
        real_discard(self)
        self._offsets.update(kept)

    monkeypatch.setattr(transaction_mod.Transaction, "_discard", discard_keeping_offsets)
    found = explore(frozenset({"txn", "seek"}), n=150, seed=1000)
    assert found is not None, "150 schedules with aborts, and the kept offsets were never refused"
    _count, seed, w = found
    with pytest.raises(Violation, match="refusing offset"):
        World(seed, w.kinds, w.delivery, w.real_metrics).run(40)
