"""Issue 23 (stream and lifecycle), on the fake clients of tests/support/fake_kafka.py driving the real `Processor`:
no record can stall a partition (a dead letter always fits; a produce() error that repeats for one record
is bounded), and start-up misconfigurations that would make every transaction time out or read dead
letters back as input are refused; slow calls keep liveness, and a commit whose outcome is in doubt never
counts for the new owner. Start-up and shutdown of `run` on the same fakes: `test_stream_lifecycle.py`."""

from __future__ import annotations

import functools
import hashlib
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException

from processor.health import Health
from processor.stream import producer as producer_mod
from processor.stream.attempt_stage import MAX_PRODUCE_FAILURES
from tests.support.eos_world import World, patched
from tests.support.eos_world import serve as _serve
from tests.support.eos_world import valid_attempt as _valid
from tests.support.fake_consumer import FakeConsumer
from tests.support.fake_kafka import DLQ, EVALS, FakeCaller, FakeProducer


@pytest.mark.parametrize("case", ["key", "headers", "key-headers-value"])
def test_an_oversized_invalid_attempt_is_dead_lettered_and_every_partition_moves_on(case: str) -> None:
    """Issue 23, poison pill: an invalid attempt whose key (or headers) is ~1 MB. The broker took it on the
    attempts topic; its dead letter as it is would exceed message.max.bytes. It must still be sent, fitted
    (key hashed, headers dropped, value truncated, each recorded in a header), and both partitions commit."""
    big = b"k" * 1_000_000
    key = big if "key" in case else b"acct"
    headers = [(f"h{i}", b"v" * 20_000) for i in range(60)] if "headers" in case else [("trace", b"t-1")]
    value = b"{not json" + (b" " * 900_000 if "value" in case else b"")
    w = World(0, frozenset())
    with patched(w.clock):
        w.cluster.append(0, key, value, headers)
        w.cluster.append(1, b"acct", _valid(w, 1, 0))
        w.cluster.append(0, b"acct", _valid(w, 0, 1))
        a = _serve(w)
        w.check()
    assert w.cluster.committed == {0: 2, 1: 1}, f"stalled: committed {w.cluster.committed}, rewinds {a.p.txn.rewinds}"
    [dead] = [r for r in w.cluster.committed_outputs() if r.topic == DLQ]
    h = dict(dead.headers)
    assert h["error.reason"] == (b"oversize" if "value" in case else b"bad_json") and h["source.offset"] == b"0"
    assert len(dead.key or b"") + len(dead.value or b"") + sum(len(n) + len(v) for n, v in dead.headers) < 1_000_000
    if "key" in case:
        assert dead.key == hashlib.sha256(big).hexdigest().encode()
        assert h["error.key.hashed"] == b"1000000"
    else:
        assert dead.key == b"acct" and "error.key.hashed" not in h
    if "headers" in case:
        assert int(h["error.headers.dropped"]) > 0
        kept = [n for n, _ in dead.headers if n.startswith("h")]
        assert kept == [f"h{i}" for i in range(len(kept))]  # a prefix of the originals, in order
    else:
        assert h["trace"] == b"t-1" and "error.headers.dropped" not in h
    assert ("error.value.truncated" in h) == ("value" in case)


def test_a_produce_error_repeating_for_one_record_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 23: any produce() error that keeps failing one record (here librdkafka refusing its eval
    event) must not rewind that record forever: after MAX_PRODUCE_FAILURES identical failures it is
    dead-lettered as internal_error (the detail names the error) and the partition moves on."""
    real = FakeProducer.produce
    refused: list[int] = []

    def produce(self: FakeProducer, topic: str, value: bytes | None = None, key: bytes | None = None,
                *rest: Any, **kw: Any) -> None:
        if topic == EVALS and value == b"0:1":
            refused.append(1)
            raise KafkaException(KafkaError(KafkaError._INVALID_ARG, "produce: invalid argument"))
        real(self, topic, value, key, *rest, **kw)

    monkeypatch.setattr(FakeProducer, "produce", produce)
    w = World(0, frozenset())
    with patched(w.clock):
        for o in range(3):
            w.cluster.append(0, b"acct", _valid(w, 0, o))
        w.cluster.append(1, b"acct", _valid(w, 1, 0))
        a = _serve(w)
        w.check()
    assert w.cluster.committed == {0: 3, 1: 1}, f"stalled: committed {w.cluster.committed}, rewinds {a.p.txn.rewinds}"
    assert len(refused) == MAX_PRODUCE_FAILURES
    [dead] = [r for r in w.cluster.committed_outputs() if r.topic == DLQ]
    h = dict(dead.headers)
    assert h["error.reason"] == b"internal_error" and h["source.offset"] == b"1"
    assert b"invalid argument" in h["error.detail"]
    assert sorted(r.value or b"" for r in w.cluster.committed_outputs() if r.topic == EVALS) == [b"0:0", b"0:2", b"1:0"]


def test_transient_produce_errors_are_not_dead_lettered(monkeypatch: pytest.MonkeyPatch) -> None:
    """The bound counts identical failures of one record: a failure that does not repeat is retried by
    abort + rewind as before, and the record gets its eval event."""
    real = FakeProducer.produce
    failures = iter([True] * (MAX_PRODUCE_FAILURES - 1))

    def produce(self: FakeProducer, topic: str, value: bytes | None = None, key: bytes | None = None,
                *rest: Any, **kw: Any) -> None:
        if topic == EVALS and value == b"0:0" and next(failures, False):
            raise KafkaException(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE, "produce: too large"))
        real(self, topic, value, key, *rest, **kw)

    monkeypatch.setattr(FakeProducer, "produce", produce)
    w = World(0, frozenset())
    with patched(w.clock):
        w.cluster.append(0, b"acct", _valid(w, 0, 0))
        _serve(w)
        w.check()
    assert [r.topic for r in w.cluster.committed_outputs()] == [EVALS]


def test_a_dead_letter_refused_repeatedly_is_sent_minimal(monkeypatch: pytest.MonkeyPatch) -> None:
    """When the dead letter itself keeps being refused (here: because of an original header), the bound
    sends a minimal one (hashed key, no original headers or value; reason internal_error) and moves on."""
    real = FakeProducer.produce

    def produce(self: FakeProducer, topic: str, value: bytes | None = None, key: bytes | None = None,
                *rest: Any, **kw: Any) -> None:
        headers = rest[4] if len(rest) > 4 else kw.get("headers")  # the client's eighth argument
        if topic == DLQ and any(n == "bad" for n, _ in headers or []):
            raise KafkaException(KafkaError(KafkaError._INVALID_ARG, "produce: invalid header"))
        real(self, topic, value, key, *rest, **kw)

    monkeypatch.setattr(FakeProducer, "produce", produce)
    w = World(0, frozenset())
    with patched(w.clock):
        w.cluster.append(0, b"acct", b"{not json", [("bad", b"x")])
        w.cluster.append(0, b"acct", _valid(w, 0, 1))
        _serve(w)
        w.check()
    assert w.cluster.committed.get(0) == 2
    [dead] = [r for r in w.cluster.committed_outputs() if r.topic == DLQ]
    h = dict(dead.headers)
    assert h["error.reason"] == b"internal_error" and b"invalid header" in h["error.detail"]
    assert dead.value is None and dead.key == hashlib.sha256(b"acct").hexdigest().encode() and "bad" not in h


def test_a_chain_of_slow_successful_calls_keeps_liveness(monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 23: a commit that hangs (given up after TXN_CALL_HUNG_S = 20 s), the replacement producer's
    init_transactions taking its whole 30 s, then two committed(timeout=10) reads (is the commit in doubt
    landed? where to rewind?) each taking 10 s: all successful, about 70 s in all. /livez (60 s bound)
    must stay 200 throughout: every long wait marks progress."""
    w = World(0, frozenset())
    health = Health(idle_deadline_s=60.0, clock=w.clock.monotonic)
    gaps: list[str] = []

    def check(what: str) -> None:
        live, body = health.liveness()
        if not live:
            gaps.append(f"{what}: {body['reasons']}")

    class SlowCaller(FakeCaller):
        def call(self, fn: Any, limit_s: float) -> bool:
            returned = super().call(fn, limit_s)
            if not returned:
                w.clock.advance(limit_s)  # the caller waited the whole hard limit
                check("after the hung call")
            return returned

    real_init, real_committed = FakeProducer.init_transactions, FakeConsumer.committed
    slow = {"on": False}

    def init_transactions(self: FakeProducer, timeout: float = -1) -> None:
        if slow["on"]:
            w.clock.advance(timeout)
            check("init_transactions")
        real_init(self, timeout)

    def committed(self: FakeConsumer, partitions: Any, timeout: float = -1) -> Any:
        if slow["on"]:
            w.clock.advance(timeout)
            check("committed")
        return real_committed(self, partitions, timeout)

    monkeypatch.setattr(FakeProducer, "init_transactions", init_transactions)
    monkeypatch.setattr(FakeConsumer, "committed", committed)
    with patched(w.clock):
        monkeypatch.setattr(producer_mod, "_Caller", SlowCaller)
        monkeypatch.setattr(w, "start", functools.partial(_start_with_health, w, health))
        w.cluster.append(0, b"acct", _valid(w, 0, 0))
        a = _serve(w, turns=1)
        for _ in range(5):
            if a.p.txn is not None and a.p.txn.open:
                break
            w.turn(a)
        assert a.p.txn is not None and a.p.txn.open
        a.producer.faults["commit"] = ["hung_landed"]
        slow["on"] = True
        started = w.clock.now
        w.clock.advance(1.0)  # the commit is due
        w.turn(a)
        slow["on"] = False
        assert w.clock.now - started >= 70, w.clock.now - started
        w.check()
    assert not gaps, gaps
    assert w.cluster.committed.get(0) == 1


def _start_with_health(w: World, health: Health, txn_id: str = "tx-0") -> Any:
    """World.start, with the Health the test watches."""
    proc = World.start(w, txn_id)
    proc.p.context.health = health  # the processor's and its transaction's
    return proc


def test_a_hung_commit_is_not_counted_for_the_new_owners_equal_commit(monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 23: A's commit hangs without landing; while A replaces its producer, the partition moves to B,
    which processes the same attempts and commits the same offsets. A used to judge its commit landed
    because the group's offsets equal the ones it wanted, and count the batch: counted twice. The
    offsets now carry a per-commit token in their metadata, so A sees the commit was not its own."""
    w = World(0, frozenset())
    real_committed = FakeConsumer.committed
    moved: list[int] = []
    with patched(w.clock):
        for o in range(3):
            w.cluster.append(0, b"acct", _valid(w, 0, o))
        a = _serve(w, turns=1)
        for _ in range(10):  # (seed 0: a batch size and commit interval that leave the 3 in one open transaction)
            if a.p.txn is not None and a.p.txn.offsets == {("attempts", 0): 3}:
                break
            w.turn(a)
        assert a.p.txn is not None and a.p.txn.offsets == {("attempts", 0): 3} and not w.cluster.committed
        b = w.start("tx-b")

        def committed(self: FakeConsumer, partitions: Any, timeout: float = -1) -> Any:
            if self is a.consumer and not moved:  # A's session expired meanwhile: B owns partition 0 now
                moved.append(1)
                w.cluster.owner[0] = b.consumer
                b.consumer.events.append(("assign", [0]))
                for _ in range(50):
                    w.turn(b)
                    w.clock.advance(0.05)
                    if w.cluster.committed.get(0) == 3:
                        break
                assert w.cluster.committed.get(0) == 3
            return real_committed(self, partitions, timeout)

        monkeypatch.setattr(FakeConsumer, "committed", committed)
        a.producer.faults["commit"] = ["hung"]
        w.clock.advance(1.0)
        w.turn(a)
        assert moved
        w.check()  # counters of A and B together equal the committed input


class _PartitionError:
    def str(self) -> str:
        return "Broker: Coordinator load in progress"


class _Committed:
    """A TopicPartition as consumer.committed() returns it: with a per-partition error, offset -1001."""

    def __init__(self, partition: int, offset: int, error: object = None) -> None:
        self.topic, self.partition, self.offset, self.error = "attempts", partition, offset, error


def test_a_committed_read_with_a_partition_error_is_retried_not_taken_as_the_beginning() -> None:
    """The 60-minute soak re-emitted inputs hundreds of seconds old (30,227 duplicates) after broker
    failovers and rolling restarts. One way there: committed() reports a partition's own error with
    offset -1001 and no exception, and rewind read -1001 as "nothing committed" and sought to the
    beginning of the partition. A partition error is now a failed read, retried."""
    from processor.stream.context import RunContext
    from processor.stream.transaction import Transaction

    answers = [[_Committed(0, -1001, _PartitionError()), _Committed(1, 7)], [_Committed(0, 42), _Committed(1, 7)]]
    seeks: list[tuple[int, int]] = []

    class Consumer:
        def committed(self, partitions: list[object], timeout: float = -1) -> list[_Committed]:
            return answers.pop(0)

        def seek(self, tp: _Committed) -> None:
            seeks.append((tp.partition, tp.offset))

    class Health:
        def mark_progress(self) -> None: ...
        def set_problem(self, problem: str | None) -> None: ...

    txn = Transaction.__new__(Transaction)
    txn.consumer, txn.context, txn.rewinds = Consumer(), RunContext(Health()), 0  # type: ignore[arg-type]
    txn._has_committed, txn.owned = set(), {("attempts", 0), ("attempts", 1)}
    txn.rewind()
    assert seeks == [(0, 42), (1, 7)]
    assert not answers and txn.rewind_incomplete is False

    # "No committed offset" (-1001, no error) for a partition whose committed offset was seen: transient.
    answers += [[_Committed(0, -1001), _Committed(1, 7)], [_Committed(0, 43), _Committed(1, 7)]]
    seeks.clear()
    txn.rewind()
    assert seeks == [(0, 43), (1, 7)]
    assert not answers


def test_a_committed_read_that_succeeds_after_a_timeout_leaves_the_instance_ready() -> None:
    """The 3-minute soak (beside a 60-minute one, load 13-15): a rewind's committed() timed out once,
    the retry read the offsets, and the instance stayed unready for 180 s ("cannot read committed
    offsets: ... Timed out") because no more input came to commit and clear it. The read's own problem
    ends with the read."""
    from processor.stream.context import RunContext
    from processor.stream.transaction import Transaction

    answers: list[Any] = ["timeout", [_Committed(0, 42)]]

    class Consumer:
        def committed(self, partitions: list[object], timeout: float = -1) -> list[_Committed]:
            answer = answers.pop(0)
            if answer == "timeout":
                raise KafkaException(KafkaError(KafkaError._TIMED_OUT, "Failed to get committed offsets: Timed out"))
            return list(answer)

        def seek(self, tp: _Committed) -> None: ...

    health = Health()
    health.set_bootstrapped(True)
    health.set_assigned(1)
    txn = Transaction.__new__(Transaction)
    txn.consumer, txn.context, txn.rewinds = Consumer(), RunContext(health), 0  # type: ignore[arg-type]
    txn._has_committed, txn.owned = set(), {("attempts", 0)}
    txn.rewind()
    assert not answers and txn.rewind_incomplete is False
    ready, body = health.readiness()
    assert ready, body
