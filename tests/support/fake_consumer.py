"""The fake group member of `tests/support/fake_kafka.py`'s `Cluster`: what the real `Processor` gets as
its consumer. Rebalance callbacks fire inside whichever consume call the cluster's seeded choice picks."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, KafkaError, KafkaException, TopicPartition

from tests.support.fake_kafka import ATTEMPTS, OFFSET_INVALID, Cluster, FakeMessage, kerr


class FakeConsumer:
    """The group member: `consume` first serves pending rebalance events (callbacks) when the schedule says so."""

    def __init__(self, cluster: Cluster, conf: dict[str, Any]) -> None:
        self.cluster = cluster
        self.conf = conf
        self.assigned: dict[int, int] = {}  # partition -> position (the application's view)
        self.events: list[tuple[str, list[int]]] = []
        self.callbacks: dict[str, Callable[..., None]] = {}
        self.faults: dict[str, list[str]] = {}
        self.closed = False
        self.live = True
        self.explicit: dict[int, int] | None = None  # offsets the assign callback gave (`incremental_assign`)
        self.generation = 0  # the group generation this member is in: each rebalance callback starts a new one
        self.in_callback = False
        cluster.consumers.append(self)

    def _fault(self, name: str) -> None:
        queue = self.faults.get(name)
        if queue:
            raise kerr(queue.pop(0), name)

    def subscribe(self, topics: list[str], on_assign: Any = None, on_revoke: Any = None, on_lost: Any = None) -> None:
        self.callbacks = {"assign": on_assign, "revoke": on_revoke, "lost": on_lost}

    def _blocking_call(self, name: str) -> None:
        """confluent-kafka's assignment() and consumer_group_metadata() wait for librdkafka's main thread
        while holding the GIL (every thread stops meanwhile; a 60-minute soak life froze so): the
        processor makes them only inside a rebalance callback, where the group is being served."""
        if not self.in_callback:
            self.cluster.violations.append(f"{name}() outside a rebalance callback (holds the GIL while it waits)")

    def assignment(self) -> list[TopicPartition]:
        self._blocking_call("assignment")
        return [TopicPartition(ATTEMPTS, p) for p in sorted(self.assigned)]

    def fire_events(self) -> None:
        while self.events:
            kind, parts = self.events.pop(0)
            tps = [TopicPartition(ATTEMPTS, p) for p in parts]
            self.generation += 1
            self.in_callback = True
            try:
                self._fire(kind, parts, tps)
            finally:
                self.in_callback = False

    def _fire(self, kind: str, parts: list[int], tps: list[TopicPartition]) -> None:
        if kind == "assign":
            self.explicit = None
            self.callbacks["assign"](self, tps)
            for p in parts:
                self.assigned[p] = self._start(p)
        elif kind == "revoke":
            self.callbacks["revoke"](self, tps)
            for p in parts:
                self.assigned.pop(p, None)
                if self.cluster.owner.get(p) is self:
                    self.cluster.owner[p] = None
        else:  # lost: the group already gave the partitions away
            self.callbacks["lost"](self, tps)
            for p in parts:
                self.assigned.pop(p, None)

    def incremental_assign(self, tps: list[TopicPartition]) -> None:
        """Called by the assign callback: the partitions start at these offsets (no read of its own)."""
        self.explicit = {tp.partition: 0 if tp.offset == OFFSET_BEGINNING else tp.offset for tp in tps}

    def _start(self, p: int) -> int:
        """A newly assigned partition's position: the callback's explicit offset, else the client's own
        read of the committed offset, which an armed `assign_read` fault turns into "none" (from the
        beginning): what the 60-minute soak of seed 20261208 saw a partition do."""
        if self.explicit is not None:
            return self.explicit[p]
        queue = self.faults.get("assign_read")
        if queue:
            queue.pop(0)
            return 0
        return self.cluster.committed.get(p, 0)

    def _take(self, k: int) -> list[FakeMessage]:
        """Up to `k` next messages of the assigned partitions (a prefix of each), advancing positions."""
        cl = self.cluster
        out: list[FakeMessage] = []
        for p in sorted(self.assigned):
            while len(out) < k and self.assigned[p] < len(cl.input[p]):
                o = self.assigned[p]
                key, value = cl.input[p][o]
                out.append(FakeMessage(ATTEMPTS, p, o, key, value, cl.input_headers.get((p, o))))
                self.assigned[p] = o + 1
        return out

    def consume(self, num_messages: int = 1, timeout: float = -1) -> list[FakeMessage]:
        """What librdkafka's consume() may do: serve pending rebalance callbacks before collecting, or in
        the middle of collecting (its queue serving calls them inline and goes on), and return what it
        collected before them too, also messages of a partition the callback just revoked or lost."""
        cl = self.cluster
        fire_at: int | None = None
        if self.events and cl.rng.random() < cl.fire_probability:
            fire_at = cl.rng.randint(0, num_messages) if cl.rng.random() < cl.mid_fetch_probability else 0
        avail = sum(len(cl.input[p]) - pos for p, pos in self.assigned.items())
        lo = 1 if timeout > 0 else 0  # what a fetch returns: a random size (0 possible without waiting)
        n = cl.rng.randint(lo, max(lo, min(num_messages, avail)))
        out: list[FakeMessage] = []
        if fire_at is not None:
            out = self._take(min(fire_at, n))
            self.fire_events()
        out += self._take(n - len(out))
        if not out:  # waits out the timeout (real time also moves on by a little: no float stand-still)
            cl.clock.advance(max(timeout, 0.0005))
        return out

    def committed(self, partitions: list[TopicPartition], timeout: float = -1) -> list[TopicPartition]:
        self._fault("committed")
        cl = self.cluster
        return [
            TopicPartition(tp.topic, tp.partition, cl.committed.get(tp.partition, OFFSET_INVALID),
                           metadata=cl.committed_metadata.get(tp.partition) or "")
            for tp in partitions
        ]

    def seek(self, tp: TopicPartition) -> None:
        self._fault("seek")
        if tp.partition not in self.assigned:
            raise kerr("state", "seek")
        self.assigned[tp.partition] = 0 if tp.offset == OFFSET_BEGINNING else tp.offset

    def consumer_group_metadata(self) -> FakeGroupMetadata:
        self._blocking_call("consumer_group_metadata")
        return FakeGroupMetadata(self, self.generation)

    def check_owned(self, parts: list[int], what: str) -> None:
        """Offsets for a partition the application was told it no longer owns are a violation; for one the
        group took away without telling it yet (lost), the broker refuses (generation fencing)."""
        for p in parts:
            if p not in self.assigned:
                self.cluster.violations.append(f"{what}: offsets committed for partition {p}, not owned")
            elif self.cluster.owner.get(p) is not self:
                raise KafkaException(
                    KafkaError(KafkaError.ILLEGAL_GENERATION, f"{what}: not a member", txn_requires_abort=True)
                )

    def commit(self, offsets: list[TopicPartition] | None = None, asynchronous: bool = True) -> None:
        self._fault("commit")
        parts = {tp.partition: tp.offset for tp in offsets or []}
        self.check_owned(list(parts), "consumer.commit")
        self.cluster.committed.update(parts)
        self.cluster.committed_metadata.update(dict.fromkeys(parts))

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        mine = sorted(self.assigned)
        if mine and self.callbacks.get("revoke"):  # close() serves the last revoke: a callback too
            self.in_callback = True
            try:
                self.callbacks["revoke"](self, [TopicPartition(ATTEMPTS, p) for p in mine])
            finally:
                self.in_callback = False
        for p in mine:
            if self.cluster.owner.get(p) is self:
                self.cluster.owner[p] = None
        self.assigned.clear()
        self.events.clear()
        self.live = False


class FakeGroupMetadata:
    """What consumer_group_metadata() returns: the member and its generation at the call. Offsets sent
    with an older generation than the member's are refused, as the broker refuses them (KIP-447)."""

    def __init__(self, consumer: FakeConsumer, generation: int) -> None:
        self.consumer = consumer
        self.generation = generation

    def check_owned(self, parts: list[int], what: str) -> None:
        if self.generation != self.consumer.generation:
            raise KafkaException(KafkaError(KafkaError.ILLEGAL_GENERATION,
                                            f"{what}: generation {self.generation} is not the group's",
                                            txn_requires_abort=True))
        self.consumer.check_owned(parts, what)
