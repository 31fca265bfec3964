"""A scripted, deterministic, in-memory stand-in for the Kafka clients of `access-eval run`.

One `Cluster` holds the attempts topic (input), the output topics (eval events + dead letters, with
transactional visibility: `committed_outputs()` is the read_committed view), the group's committed
offsets, partition ownership, and transactional ids with their epochs (fencing). `FakeConsumer`
(tests/support/fake_consumer.py) and `FakeProducer` are the clients the real `Processor` gets through
`consumer_factory`/`producer_factory`.
Every nondeterministic choice (how many fetched messages a consume call returns, whether a pending
rebalance callback fires in this consume call) comes from the cluster's seeded `random.Random`, so a
schedule is reproduced by its seed. Faults are queued per client and call name and fire at the next call.

The harness also records what no real broker tells the application, but the invariants need:
`violations` (offsets sent for a partition the application was told it no longer owns, ...).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from confluent_kafka import KafkaError, KafkaException, TopicPartition

if TYPE_CHECKING:
    from tests.support.fake_consumer import FakeConsumer

ATTEMPTS = "attempts"
EVALS = "evals"
DLQ = "dlq"
OFFSET_INVALID = -1001


class Clock:
    """Monotonic, wall and sleep in one fake: `sleep` advances time instead of waiting."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept = 0.0

    def monotonic(self) -> float:
        return self.now

    def perf_counter(self) -> float:
        return self.now

    def time(self) -> float:
        return 1_780_000_000.0 + self.now

    def sleep(self, seconds: float) -> None:
        self.now += max(seconds, 0.0)
        self.slept += max(seconds, 0.0)

    def advance(self, seconds: float) -> None:
        self.now += seconds


def kerr(kind: str, what: str = "injected") -> KafkaException:
    """A KafkaException of one of the kinds the transactional API raises."""
    if kind == "retriable":
        return KafkaException(KafkaError(KafkaError._TIMED_OUT, f"{what}: timed out", retriable=True))
    if kind == "abortable":
        return KafkaException(KafkaError(KafkaError._TIMED_OUT, f"{what}: needs abort", txn_requires_abort=True))
    if kind == "fatal":
        return KafkaException(KafkaError(KafkaError._FATAL, f"{what}: fatal", fatal=True))
    if kind == "fenced":
        return KafkaException(KafkaError(KafkaError._FENCED, f"{what}: producer fenced", fatal=True))
    if kind == "state":
        return KafkaException(KafkaError(KafkaError._STATE, f"{what}: operation not valid in this state"))
    if kind == "nonretriable":
        return KafkaException(KafkaError(KafkaError.INVALID_CONFIG, f"{what}: invalid"))
    raise ValueError(kind)


class Hung(Exception):
    """Raised by a fake transactional call to make `FakeCaller` report it hung (after or before it took effect)."""


class FakeCaller:
    """Synchronous stand-in for producer._Caller: a call raising `Hung` counts as one that never returned."""

    def call(self, fn: Callable[[], Any], limit_s: float) -> bool:
        try:
            fn()
        except Hung:
            return False
        return True


@dataclass
class Record:
    topic: str
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]
    state: str = "pending"  # pending | committed | aborted

    def source(self) -> tuple[int, int]:
        """(partition, offset) of the attempt this output is for."""
        if self.topic == DLQ:
            h = dict(self.headers)
            return int(h["source.partition"]), int(h["source.offset"])
        p, o = (self.value or b"").decode().split(":")
        return int(p), int(o)


@dataclass
class Txn:
    records: list[Record] = field(default_factory=list)
    offsets: dict[int, int] = field(default_factory=dict)
    owner: Any = None  # the FakeConsumer the offsets were sent for
    metadata: str | None = None  # of the offsets sent
    started: float = 0.0  # begin_transaction, on the cluster's clock (transaction.timeout.ms runs from here)


class FakeMessage:
    __slots__ = ("_h", "_k", "_o", "_p", "_t", "_v")

    def __init__(self, topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None,
                 headers: list[tuple[str, bytes]] | None = None) -> None:
        self._t, self._p, self._o, self._k, self._v, self._h = topic, partition, offset, key, value, headers

    def topic(self) -> str:
        return self._t

    def partition(self) -> int:
        return self._p

    def offset(self) -> int:
        return self._o

    def key(self) -> bytes | None:
        return self._k

    def value(self) -> bytes | None:
        return self._v

    def headers(self) -> list[tuple[str, bytes]] | None:
        return self._h

    def error(self) -> None:
        return None

    def timestamp(self) -> tuple[int, int]:
        return (1, 0)

    def __repr__(self) -> str:
        return f"<msg {self._p}:{self._o}>"


class Cluster:
    def __init__(self, rng: random.Random, clock: Clock, partitions: int = 2) -> None:
        self.rng = rng
        self.clock = clock
        self.partitions = list(range(partitions))
        self.input: dict[int, list[tuple[bytes | None, bytes]]] = {p: [] for p in self.partitions}
        self.input_headers: dict[tuple[int, int], list[tuple[str, bytes]]] = {}
        self.outputs: list[Record] = []
        self.committed: dict[int, int] = {}
        self.committed_metadata: dict[int, str | None] = {}  # the offsets' metadata string, as the group keeps it
        self.owner: dict[int, FakeConsumer | None] = dict.fromkeys(self.partitions)
        self.epochs: dict[str, int] = {}
        self.pending: dict[str, Txn] = {}  # txn id -> the open transaction of its current epoch
        self.violations: list[str] = []
        self.fence_events = 0  # init_transactions that fenced a producer of a live process
        self.consumers: list[FakeConsumer] = []
        self.producers: list[FakeProducer] = []
        self.fire_probability = 0.5
        #: of the consume calls that serve callbacks, the share that serves them mid-collection
        self.mid_fetch_probability = 0.5
        self.timeouts = 0  # transactions the coordinator aborted for transaction.timeout.ms

    # -- input -------------------------------------------------------------------------------------

    def append(self, partition: int, key: bytes | None, value: bytes,
               headers: list[tuple[str, bytes]] | None = None) -> int:
        self.input[partition].append((key, value))
        offset = len(self.input[partition]) - 1
        if headers is not None:
            self.input_headers[partition, offset] = headers
        return offset

    # -- the read_committed view -------------------------------------------------------------------

    def committed_outputs(self) -> list[Record]:
        return [r for r in self.outputs if r.state == "committed"]

    # -- transactions --------------------------------------------------------------------------------

    def init(self, producer: FakeProducer) -> int:
        tid = producer.txn_id
        assert tid is not None
        old = self.pending.pop(tid, None)
        if old is not None:
            self._abort(old)
        epoch = self.epochs.get(tid, 0) + 1
        self.epochs[tid] = epoch
        for other in self.producers:
            if other is not producer and other.txn_id == tid and other.epoch == epoch - 1 and other.live:
                self.fence_events += 1
        return epoch

    def time_out(self, tid: str) -> None:
        """The coordinator aborts a transaction open past transaction.timeout.ms and bumps the epoch."""
        old = self.pending.pop(tid, None)
        if old is not None:
            self._abort(old)
        self.epochs[tid] = self.epochs.get(tid, 0) + 1
        self.timeouts += 1

    def _abort(self, txn: Txn) -> None:
        for r in txn.records:
            if r.state == "pending":
                r.state = "aborted"

    def apply_commit(self, txn: Txn) -> None:
        for r in txn.records:
            r.state = "committed"
        self.committed.update(txn.offsets)
        self.committed_metadata.update(dict.fromkeys(txn.offsets, txn.metadata))


class FakeProducer:
    """Transactional (with `transactional.id` in conf) or plain idempotent producer."""

    def __init__(self, cluster: Cluster, conf: dict[str, Any]) -> None:
        self.cluster = cluster
        self.conf = conf
        self.txn_id: str | None = conf.get("transactional.id")
        self.on_delivery: Callable[..., None] | None = conf.get("on_delivery")
        self.epoch = 0
        self.state = "init"  # init | ready | in_txn | committing | abortable | fatal
        self.txn: Txn | None = None
        self.queue: list[Record] = []  # at-least-once: produced, not yet delivered
        self.faults: dict[str, list[str]] = {}
        self.live = True
        self.timeout_s = int(conf.get("transaction.timeout.ms", 60_000)) / 1000
        self.max_bytes = int(conf.get("message.max.bytes", 1_000_000)) - 100  # framing (librdkafka: ~60+ bytes)
        cluster.producers.append(self)

    def _fault(self, name: str) -> str | None:
        queue = self.faults.get(name)
        if not queue:
            return None
        kind = queue.pop(0)
        if kind in ("retriable", "abortable", "fatal", "nonretriable"):
            if kind == "abortable":
                self.state = "abortable"
            if kind == "fatal":
                self.state = "fatal"
            raise kerr(kind, name)
        return kind  # handled by the call (hung, landed, bug, ...)

    def _check_fenced(self, what: str) -> None:
        txn, tid = self.txn, self.txn_id
        if (tid is not None and txn is not None and self.cluster.pending.get(tid) is txn
                and self.cluster.clock.now - txn.started > self.timeout_s):
            self.cluster.time_out(tid)
        if self.state == "fatal":
            raise kerr("fatal", what)
        if self.txn_id is not None and self.epoch != self.cluster.epochs.get(self.txn_id):
            self.state = "fatal"
            raise kerr("fenced", what)

    def init_transactions(self, timeout: float = -1) -> None:
        self._fault("init")
        self.epoch = self.cluster.init(self)
        self.state = "ready"

    def begin_transaction(self) -> None:
        self._check_fenced("begin_transaction")
        self._fault("begin")
        if self.state != "ready":
            raise kerr("state", "begin_transaction")
        self.state = "in_txn"
        self.txn = Txn(started=self.cluster.clock.now)
        assert self.txn_id is not None
        self.cluster.pending[self.txn_id] = self.txn

    def produce(self, topic: str, value: bytes | None = None, key: bytes | None = None, partition: int = -1,
                callback: Any = None, on_delivery: Any = None, timestamp: int = 0, headers: Any = None,
                **_kw: Any) -> None:
        """The real client's signature, in its order (the transaction passes all eight by position)."""
        if self._fault("produce") == "bug":
            raise RuntimeError("injected bug in produce")
        # librdkafka refuses in produce() a record larger than message.max.bytes (key + value + headers
        # + framing); the attempts topic's broker limit (max.message.bytes) is larger, so such input exists.
        size = len(key or b"") + len(value or b"") + sum(len(n) + len(v or b"") for n, v in headers or [])
        if size > self.max_bytes:
            raise KafkaException(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE, "Broker: Message size too large"))
        rec = Record(topic, key, value, list(headers or []))
        if self.txn_id is None:
            self.queue.append(rec)
            return
        if self.state not in ("in_txn", "abortable", "fatal"):
            raise kerr("state", "produce outside a transaction")
        if self.state == "in_txn" and self.txn is not None and self.epoch == self.cluster.epochs.get(self.txn_id):
            self.txn.records.append(rec)
            self.cluster.outputs.append(rec)
        # else: a fenced or failed producer's records never reach the log

    def poll(self, timeout: float = 0) -> int:
        return self._deliver()

    def flush(self, timeout: float = -1) -> int:
        self._deliver()
        return 0

    def _deliver(self) -> int:
        n = 0
        while self.queue:
            rec = self.queue.pop(0)
            if self._fault("deliver") == "fail":
                if self.on_delivery is not None:
                    self.on_delivery(KafkaError(KafkaError._MSG_TIMED_OUT, "delivery failed"), None)
                continue
            rec.state = "committed"
            self.cluster.outputs.append(rec)
            n += 1
        return n

    def send_offsets_to_transaction(self, offsets: list[TopicPartition], meta: Any, timeout: float = -1) -> None:
        self._check_fenced("send_offsets_to_transaction")
        kind = self._fault("send_offsets")
        if kind == "hung":
            self.state = "abortable"
            raise Hung
        if self.state != "in_txn":
            raise kerr("state", "send_offsets_to_transaction")
        assert self.txn is not None
        parts = {tp.partition: tp.offset for tp in offsets}
        try:
            meta.check_owned(list(parts), "send_offsets_to_transaction")
        except KafkaException:
            self.state = "abortable"
            raise
        self.txn.offsets.update(parts)
        self.txn.metadata = offsets[0].metadata if offsets else None

    def commit_transaction(self, timeout: float = -1) -> None:
        self._check_fenced("commit_transaction")
        if self.state == "committed_pending_ack":  # a retry after a commit that landed
            self.state = "ready"
            return
        kind = self._fault("commit")
        if self.state not in ("in_txn", "committing"):
            raise kerr("state", "commit_transaction")
        assert self.txn is not None and self.txn_id is not None
        if kind in ("hung", "timeout"):  # did not reach the coordinator
            self.state = "committing"
            if kind == "hung":
                raise Hung
            raise kerr("retriable", "commit_transaction")
        self.cluster.apply_commit(self.txn)
        self.cluster.pending.pop(self.txn_id, None)
        if kind in ("hung_landed", "timeout_landed"):  # landed; the answer was lost
            self.state = "committed_pending_ack"
            if kind == "hung_landed":
                raise Hung
            raise kerr("retriable", "commit_transaction")
        self.state = "ready"
        self.txn = None

    def abort_transaction(self, timeout: float = -1) -> None:
        self._check_fenced("abort_transaction")
        kind = self._fault("abort")
        if kind == "hung":
            raise Hung
        if self.state in ("committing", "committed_pending_ack"):
            raise kerr("state", "abort_transaction")
        if self.state not in ("in_txn", "abortable", "ready"):
            raise kerr("state", "abort_transaction")
        if self.txn is not None:
            self.cluster._abort(self.txn)
            assert self.txn_id is not None
            if self.cluster.pending.get(self.txn_id) is self.txn:
                del self.cluster.pending[self.txn_id]
        self.txn = None
        self.state = "ready"
