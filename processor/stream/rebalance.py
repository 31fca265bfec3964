"""The group's rebalance callbacks: what `run` does when partitions are assigned, revoked or lost.

Assigned partitions start where `Transaction.start_offsets` says (assigned explicitly, not by the
client's own read); revoked ones commit the open work first, so their next owner starts after it;
lost ones abort it, since another member may own them already. Each callback also moves the settings
history's stream-time bookkeeping (SPEC §5) and the readiness count of partitions owned.
"""

from __future__ import annotations

import logging
from typing import Any

from confluent_kafka import TopicPartition

from processor.core.settings import SettingsHistory
from processor.health import Health
from processor.logs import kv
from processor.stream.transaction import Transaction

log = logging.getLogger("access_eval.pipeline")


class Membership:
    """This member's partitions and group metadata, kept from the callbacks: consumer.assignment()
    raises while close() destroys the handle, and close() serves the last revoke (the 60-minute soak's
    exit 1); both calls also hold the GIL while they wait (`Transaction.group_metadata`)."""

    def __init__(self, history: SettingsHistory, health: Health) -> None:
        self.history = history
        self.health = health
        #: the open unit of work, once the clients exist (`Processor.open_clients`)
        self.txn: Transaction | None = None
        self.owned: set[tuple[str, int]] = set()
        #: revoke and lost callbacks so far: the loop drops a fetch during which one ran
        self.moves = 0

    def on_assign(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        """Start the new partitions at the offsets the transaction reads, assigned explicitly; without
        them (stopping) the client reads the committed offsets itself."""
        self._hold(partitions)
        self._group(consumer)
        starts = self.txn.start_offsets(partitions) if self.txn is not None and partitions else None
        if starts is not None:
            consumer.incremental_assign(starts)
        at = {tp.partition: "beginning" if tp.offset < 0 else tp.offset for tp in starts or []}
        log.info("partitions assigned", extra=kv(partitions=[p.partition for p in partitions], starts=at))

    def on_revoke(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        """Commit what was done before the partitions move, so the next owner starts after it."""
        self.moves += 1
        self._group(consumer)
        txn = self.txn
        if txn is not None:
            if txn.open:
                txn.guarded(txn.commit, "commit")
            txn.forget(partitions)
        self._release(partitions)
        log.info("partitions revoked", extra=kv(partitions=[p.partition for p in partitions]))

    def on_lost(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        """Lost partitions may already be owned by someone else: our open work must not commit."""
        self.moves += 1
        self._group(consumer)
        txn = self.txn
        if txn is not None and txn.open:
            txn.abort()
            txn.rewind()
        if txn is not None:
            txn.forget(partitions)
        self._release(partitions)
        log.warning("partitions lost", extra=kv(partitions=[p.partition for p in partitions]))

    def _group(self, consumer: Any) -> None:
        """The group metadata the transaction's offsets go with, read where the generation changes:
        here, at a rebalance, not per commit (`Transaction.group_metadata` says why)."""
        if self.txn is not None:
            try:
                self.txn.group_metadata = consumer.consumer_group_metadata()
            except RuntimeError:  # "not available": the next commit reads it itself
                self.txn.group_metadata = None

    def _hold(self, partitions: list[TopicPartition]) -> None:
        # Versions are pruned below the minimum stream time over the partitions held (SPEC §5).
        self.history.assign((tp.topic, tp.partition) for tp in partitions)
        self.owned.update((tp.topic, tp.partition) for tp in partitions)
        self.health.set_assigned(len(self.owned))

    def _release(self, partitions: list[TopicPartition]) -> None:
        self.history.release((tp.topic, tp.partition) for tp in partitions)
        self.owned.difference_update((tp.topic, tp.partition) for tp in partitions)
        self.health.set_assigned(len(self.owned))
