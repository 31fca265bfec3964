"""The open unit of work of `run` and its failure policy, in one object.

A transaction holds what the batches since the last commit consumed (offsets per partition) and
decided (the tally), next to the records they produced into the producer's Kafka transaction. It
commits all three together — offsets into the transaction, then the transaction, then the Prometheus
counters (SPEC §8: counters move only for committed work) — or aborts them together and rewinds the
consumer to the committed offsets, so the aborted work is read again. The loop only hands it offsets.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, KafkaError, KafkaException, TopicPartition

from processor.config import ConfigError
from processor.errors import AccessEvalError
from processor.kafka.errors import ACL_HINT, AUTH_ERRORS, FENCED_ERRORS
from processor.logs import kv
from processor.metrics import Metrics
from processor.metrics.tally import Tally
from processor.stream.context import RunContext
from processor.stream.producer import TxnProducer

log = logging.getLogger("access_eval.pipeline")

#: Fenced again within this window after re-creating the producer: another live instance shares the id.
FENCED_WINDOW_S = 600.0

#: librdkafka's RD_KAFKA_PARTITION_UA: the partitioner chooses (by key).
PARTITION_UNASSIGNED = -1


class SharedTransactionalId(ConfigError):
    """Two live instances use one transactional id: they would fence each other forever (exit 2)."""


class NonIncreasingOffset(AccessEvalError, RuntimeError):
    """A batch's offset for a partition is not past what the open transaction holds: a bug, never a
    passing state, so it stops the process (exit 1) before the offsets are committed."""


class Transaction:
    """The open unit of work. Its offsets and tally are its own: the attempt stage asks (`produce`,
    `store_offsets`, `tally`), the loop reads (`offsets`, `open`), and only the transaction changes them."""

    def __init__(
        self, producer: TxnProducer, consumer: Any, metrics: Metrics, context: RunContext, *, exactly_once: bool,
        owned: set[tuple[str, int]] | None = None,
    ) -> None:
        self.producer = producer
        self.consumer = consumer
        self.metrics = metrics
        self.context = context
        self.exactly_once = exactly_once
        #: the partitions this member owns, kept by the rebalance callbacks (`Membership`): what a rewind seeks
        self.owned: set[tuple[str, int]] = set() if owned is None else owned
        #: the member's group metadata (generation, member id) as of the last rebalance callback, which
        #: sets it: the offsets are sent with it. Not read per commit: confluent-kafka's
        #: consumer_group_metadata() and assignment() wait for librdkafka's main thread while holding the
        #: GIL, which stops every thread (HTTP, signals) while they wait; a soak life froze that way
        #: (docs/guarantees.md, Soak). A generation older than the group's is refused by the broker
        #: (the commit aborts and its work is redone), never accepted.
        self.group_metadata: Any = None
        #: next offset to consume per (topic, partition), for the batches since the last commit
        self._offsets: dict[tuple[str, int], int] = {}
        #: what those batches decided, counted into Prometheus only when they commit
        self._tally = Tally()
        self.open = False
        self.started = 0.0
        self._offsets_sent = False  # send_offsets done for the open transaction: a retry only re-commits
        self._committing = False  # commit_transaction was called: its outcome may be unknown after a failure
        self._token = ""  # the metadata of the offsets sent with the open transaction (`commit`)
        self._fenced_at: list[float] = []
        #: a rewind could not complete (stopping meanwhile): nothing may commit past the aborted work
        self.rewind_incomplete = False
        #: partitions known to have a committed offset (committed by us, or read): for them "no committed
        #: offset" (-1001) is a transient answer, never a reason to rewind to the beginning
        self._has_committed: set[tuple[str, int]] = set()
        #: commits whose outcome could not be read before the shutdown deadline (not counted)
        self.unknown_outcomes = 0
        #: rewinds so far: the loop drops what it fetched before one that happened during its fetch
        self.rewinds = 0

    def begin(self) -> None:
        """Open a transaction unless one is open (a transaction spans batches until it is due)."""
        if self.open:
            return
        if self.exactly_once:
            self.producer.begin()
        else:
            self.producer.failed_deliveries = 0
        self._offsets_sent = False
        self._committing = False
        self.open = True
        self.started = time.monotonic()

    def due(self, interval_s: float, max_tally: int) -> bool:
        return self.open and (time.monotonic() - self.started >= interval_s or len(self._tally) >= max_tally)

    # -- what the open transaction holds: asked for, never written from outside ------------------

    @property
    def offsets(self) -> Mapping[tuple[str, int], int]:
        """The next offset to consume per partition, to commit with the open transaction (read-only)."""
        return MappingProxyType(self._offsets)

    def produce(self, topic: str, value: bytes | None, key: bytes | None, headers: Any) -> None:
        """Produce one record into the open transaction. A full local queue (BufferError) is not the
        record's fault: wait for deliveries to drain it and try again. Any other refusal (KafkaException)
        propagates to the caller, who knows the record."""
        producer = self.producer
        while True:
            try:
                # All eight arguments by position (librdkafka's order: partition unassigned, no
                # per-record callback, no timestamp): a keyword makes the client look up each of its
                # eight names in a dict, ~0.1-0.4 µs per record (bench/README.md, "Hot path, fourth pass").
                producer.produce(topic, value, key, PARTITION_UNASSIGNED, None, None, 0, headers)
                return
            except BufferError:
                producer.poll(0.05)  # local queue full: let deliveries drain

    def poll(self) -> None:
        """Serve the producer's delivery reports without waiting (once per batch)."""
        self.producer.poll(0)

    def flush(self, timeout_s: float) -> int:
        """Wait for what was produced to be delivered (at stop); the records still queued after it."""
        return self.producer.flush(timeout_s)

    def blocked_for(self) -> float:
        """Seconds the transactional call in flight has been blocked (0 when none is); the watchdog's."""
        return self.producer.blocked_for()

    def store_offsets(self, offsets: Mapping[tuple[str, int], int]) -> None:
        """Record the next offset to consume per partition for work produced into the open transaction.

        An offset that does not increase for its partition within the transaction is refused, as
        quixstreams' checkpoint refuses one: committing it would re-read work already done (or, after
        a rewind nobody recorded, skip work). The loop's rewinds and rebalances make that impossible
        in a correct run (they close the transaction first, or drop the fetch); this catches the bug
        that would break it before the offsets reach Kafka.
        """
        stored = self._offsets
        for tp, offset in offsets.items():
            previous = stored.get(tp)
            if previous is not None and offset <= previous:
                raise NonIncreasingOffset(
                    f"refusing offset {offset} for {tp[0]}[{tp[1]}]: the open transaction already holds "
                    f"{previous}; offsets must increase within a transaction (a rewind or rebalance was missed)")
        stored.update(offsets)

    def tally(self, counts: Tally) -> None:
        """Add what a batch decided to the open transaction's counts (committed with it, or dropped)."""
        self._tally.merge(counts)

    def forget(self, partitions: list[TopicPartition]) -> None:
        """Partitions revoked after a commit: their offsets are no longer ours to send."""
        for tp in partitions:
            self._offsets.pop((tp.topic, tp.partition), None)

    # -- the steps ---------------------------------------------------------------------------------

    def commit(self) -> None:
        started = time.perf_counter()
        if self.rewind_incomplete:
            raise KafkaException(KafkaError(KafkaError._STATE, "rewind after an abort incomplete: not committing",
                                            txn_requires_abort=True))
        if self.exactly_once:
            if self._offsets and not self._offsets_sent:
                # A token of this commit in the offsets' metadata: a commit in doubt is judged landed only
                # if the group's offsets carry it (another owner may commit the same offsets meanwhile).
                self._token = f"access-eval:{uuid.uuid4().hex}"
                offsets = [TopicPartition(t, p, o, metadata=self._token) for (t, p), o in self._offsets.items()]
                group = self.group_metadata
                if group is None:  # no rebalance callback ran yet (offsets without one: a test's consumer)
                    group = self.consumer.consumer_group_metadata()
                self.producer.send_offsets(offsets, group)
            self._offsets_sent = True  # a retriable commit failure retries commit_transaction only
            self._committing = True
            self.producer.commit()
        else:
            remaining = self.producer.flush(30)
            if remaining:
                raise KafkaException(KafkaError(KafkaError._TIMED_OUT, "produce flush timed out", retriable=True))
            failed = self.producer.failed_deliveries
            if failed:  # records never written: their offsets must not commit; re-read and produce again
                raise KafkaException(KafkaError(KafkaError._MSG_TIMED_OUT, f"{failed} deliveries failed",
                                                txn_requires_abort=True))
            if self._offsets:
                offsets = [TopicPartition(t, p, o) for (t, p), o in self._offsets.items()]
                self.consumer.commit(offsets=offsets, asynchronous=False)
        self._committed(time.perf_counter() - started)

    def _committed(self, seconds: float) -> None:
        self._has_committed.update(self._offsets)
        self.open = False
        self._offsets_sent = False
        self._committing = False
        self._offsets.clear()
        self.metrics.commit(self._tally)
        self._tally.clear()
        self.metrics.transaction("committed")
        self.metrics.observe_commit(seconds)
        self.context.health.set_problem(None)

    def abort(self, *, exiting: bool = False) -> None:
        """Abort the open transaction. `exiting` (a fatal stop): a failed abort is not retried through a
        new producer; the broker aborts the transaction (transaction.timeout.ms, or the next instance's
        init fences it), and the one error line stays the one naming what to fix."""
        if self.exactly_once:
            try:
                self.producer.abort()
            except KafkaException as exc:
                if exiting:
                    log.warning("abort_transaction failed at a fatal stop; the broker aborts the transaction",
                                extra=kv(error=exc.args[0].str()))
                    self._discard()
                    return
                # Still open, or the producer is unusable: a new producer fences it and aborts the transaction.
                # A warning: this is handled here; error lines are for what the operator must fix.
                log.warning("abort_transaction failed; replacing the producer", extra=kv(error=exc.args[0].str()))
                self._replace_producer()
                return
        self._discard()

    def _replace_producer(self) -> None:
        """A new producer (same transactional id) ends the open transaction: aborted, unless its commit
        had reached the coordinator (a commit that failed or hung after landing). The group's committed
        offsets tell which: they must equal the ones sent and carry this commit's token (a new owner of
        the partition may have committed the same offsets meanwhile); a landed commit is counted, so
        that counters equal committed work."""
        committing = self.open and self._committing and self._offsets
        self.producer.replace()
        if committing:
            wanted = dict(self._offsets)
            got = self._read_committed([TopicPartition(t, p) for (t, p) in wanted])
            if got is not None and all(wanted.get((tp.topic, tp.partition)) == tp.offset
                                       and tp.metadata == self._token for tp in got):
                log.warning("the commit in doubt had landed; counting it")
                self._committed(0.0)
                return
            if got is None:  # shutdown deadline passed: the counters may miss committed work (never over-count)
                self.unknown_outcomes += 1
                log.error("outcome of a commit unknown at the shutdown deadline; not counted")
        self._discard()

    def _read_committed(self, partitions: list[TopicPartition]) -> list[TopicPartition] | None:
        """The group's committed offsets, retried until read (None past the shutdown deadline). A failed
        read makes the instance unready until a read succeeds: the problem is its own, so the success
        clears it (nothing else may come to commit and clear it: an idle instance stayed unready)."""
        backoff = 0.5
        failed = False
        while True:
            self.context.health.mark_progress()  # each read may take its 10 s: a chain of them is progress
            try:
                committed = list(self.consumer.committed(partitions, timeout=10))
                # A partition's own error comes with offset -1001, which must not read as "nothing
                # committed yet": rewinding to the beginning would redo every input of the partition.
                # Nor may -1001 for a partition known to have a committed offset.
                bad = next((tp for tp in committed if tp.error is not None or (
                    tp.offset < 0 and (tp.topic, tp.partition) in self._has_committed)), None)
                if bad is None:
                    self._has_committed.update((tp.topic, tp.partition) for tp in committed if tp.offset >= 0)
                    if failed:
                        self.context.health.set_problem(None)
                    return committed
                why = bad.error.str() if bad.error is not None else "no committed offset, but one was seen"
                error = f"partition {bad.partition}: {why}"
            except KafkaException as exc:
                error = exc.args[0].str()
            if time.monotonic() > self.context.stop_deadline:  # stopping, and out of time
                return None
            failed = True
            self.context.health.set_problem("cannot read committed offsets: " + error)
            self.context.health.mark_progress()
            log.warning("cannot read committed offsets; retrying", extra=kv(error=error))
            time.sleep(backoff)  # retry backoff
            backoff = min(backoff * 2, 5.0)

    def start_offsets(self, partitions: list[TopicPartition]) -> list[TopicPartition] | None:
        """Where newly assigned partitions start: the group's committed offsets read here, by the rules
        of a rewind (a partition's error, or a pending transactional offset, is retried, never read as
        "nothing committed"), and the beginning only for a partition that never had a commit. The
        loop assigns them explicitly, so the client's own read at assignment is not used: in the
        60-minute soak of seed 20261208 a partition with 29,176 committed started again from the
        beginning right after its previous owner died inside a transaction (docs/guarantees.md, Soak).
        None when stopping before they could be read (nothing more commits then)."""
        committed = self._read_committed(partitions)
        if committed is None:
            return None
        return [TopicPartition(tp.topic, tp.partition, tp.offset if tp.offset >= 0 else OFFSET_BEGINNING)
                for tp in committed]

    def rewind(self) -> None:
        """After an abort, continue from the last committed offsets (what the aborted work re-reads).
        Continuing from the current position instead would skip the aborted work: a failed seek is
        retried; if the instance stops before it succeeds, nothing more commits (`rewind_incomplete`)."""
        self.rewinds += 1
        if not self.owned:
            self.rewind_incomplete = False
            return
        # the committed offsets, or the beginning if never any
        committed = self.start_offsets([TopicPartition(t, p) for t, p in sorted(self.owned)])
        if committed is None:
            self.rewind_incomplete = True
            return
        backoff = 0.2
        for tp in committed:
            while True:
                try:
                    self.consumer.seek(tp)
                    break
                except KafkaException as exc:
                    if (tp.topic, tp.partition) not in self.owned:
                        break  # no longer ours: its next owner starts from the committed offset
                    if time.monotonic() > self.context.stop_deadline:
                        self.rewind_incomplete = True
                        return
                    log.warning("seek failed; retrying", extra=kv(partition=tp.partition, error=exc.args[0].str()))
                    self.context.health.mark_progress()
                    time.sleep(backoff)  # retry backoff
                    backoff = min(backoff * 2, 5.0)
        self.rewind_incomplete = False

    def _discard(self) -> None:
        self.open = False
        self._offsets_sent = False
        self._committing = False
        self._offsets.clear()
        self._tally.clear()
        self.metrics.transaction("aborted")

    # -- the failure policy ------------------------------------------------------------------------

    def guarded(self, step: Callable[[], None], name: str, *, deadline: float | None = None) -> None:
        """Run a step of the transaction (a batch, a commit); on failure abort + rewind, or retry a
        retriable commit until the deadline."""
        backoff = 0.2
        while True:
            try:
                step()
                return
            except KafkaException as exc:
                err: KafkaError = exc.args[0]
                log.warning("transaction step failed", extra=kv(step=name, error=err.str(),
                                                                   retriable=err.retriable(), fatal=err.fatal()))
                if err.code() in AUTH_ERRORS:
                    self.context.fail(
                        ConfigError(f"Kafka authorization failed while running ({err.str()}): {ACL_HINT}"))
                    return
                if name == "commit" and err.retriable() and not err.txn_requires_abort() and not err.fatal():
                    if time.monotonic() > min(deadline or float("inf"), self.context.stop_deadline):
                        return
                    self.context.health.mark_progress()  # waiting out a broker outage is healthy; readiness says why
                    self.context.health.set_problem("commit failing: " + err.str())
                    time.sleep(backoff)  # retry backoff
                    backoff = min(backoff * 2, 5.0)
                    continue
                self.context.health.set_problem("transaction aborted: " + err.str())
                if err.code() in FENCED_ERRORS and not self._timed_out(err) and self._fenced_again():
                    self._discard()
                    self.context.fail(SharedTransactionalId(
                        f"the producer was fenced {len(self._fenced_at)} times within {FENCED_WINDOW_S:g}s: another "
                        f"live instance uses transactional id {self.producer.transactional_id!r}; give each instance "
                        "its own --transactional-id (ACCESS_EVAL_TRANSACTIONAL_ID)"))
                    return
                if err.fatal():
                    self._replace_producer()
                elif self.open:
                    self.abort()
                self.rewind()
                return

    def _timed_out(self, err: KafkaError) -> bool:
        """A fencing of a transaction open longer than transaction.timeout.ms: the coordinator aborted it
        and bumped the epoch itself (the same errors as a second owner's init_transactions). That is not
        evidence of a second owner and does not count toward the shared-id rule; the open work is redone."""
        age = time.monotonic() - self.started
        if not self.open or age < self.producer.timeout_s:
            return False
        log.warning("transaction aborted by the broker after transaction.timeout.ms; redoing its work",
                    extra=kv(open_s=round(age, 1), transaction_timeout_s=self.producer.timeout_s, error=err.str()))
        return True

    def _fenced_again(self) -> bool:
        """Record a fencing; True when it is not the first within the window (a replacement would fence back)."""
        now = time.monotonic()
        self._fenced_at = [t for t in self._fenced_at if now - t < FENCED_WINDOW_S] + [now]
        return len(self._fenced_at) > 1
