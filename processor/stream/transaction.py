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
from collections.abc import Callable
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, KafkaError, KafkaException, TopicPartition

from processor.config import ConfigError
from processor.health import Health
from processor.kafka.admin import AUTH_ERRORS
from processor.logs import kv
from processor.metrics import Metrics, Tally
from processor.stream.producer import TxnProducer

log = logging.getLogger("access_eval.pipeline")


class Transaction:
    def __init__(
        self,
        producer: TxnProducer,
        consumer: Any,
        metrics: Metrics,
        health: Health,
        *,
        exactly_once: bool,
        on_fatal: Callable[[ConfigError], None],
        stopping: Callable[[], bool],
        stop_deadline: Callable[[], float],
    ) -> None:
        self.producer = producer
        self.consumer = consumer
        self.metrics = metrics
        self.health = health
        self.exactly_once = exactly_once
        self._on_fatal = on_fatal
        self._stopping = stopping
        self._stop_deadline = stop_deadline
        #: next offset to consume per (topic, partition), for the batches since the last commit
        self.offsets: dict[tuple[str, int], int] = {}
        self.tally = Tally()
        self.open = False
        self.started = 0.0

    def begin(self) -> None:
        """Open a transaction unless one is open (a transaction spans batches until it is due)."""
        if self.open:
            return
        if self.exactly_once:
            self.producer.begin()
        self.open = True
        self.started = time.monotonic()

    def due(self, interval_s: float, max_tally: int) -> bool:
        return self.open and (time.monotonic() - self.started >= interval_s or len(self.tally) >= max_tally)

    def forget(self, partitions: list[TopicPartition]) -> None:
        """Partitions revoked after a commit: their offsets are no longer ours to send."""
        for tp in partitions:
            self.offsets.pop((tp.topic, tp.partition), None)

    # -- the steps ---------------------------------------------------------------------------------

    def commit(self) -> None:
        started = time.perf_counter()
        offsets = [TopicPartition(t, p, o) for (t, p), o in self.offsets.items()]
        if self.exactly_once:
            if offsets:
                self.producer.send_offsets(offsets, self.consumer.consumer_group_metadata())
            self.producer.commit()
        else:
            remaining = self.producer.flush(30)
            if remaining:
                raise KafkaException(KafkaError(KafkaError._TIMED_OUT, "produce flush timed out", retriable=True))
            if offsets:
                self.consumer.commit(offsets=offsets, asynchronous=False)
        self.open = False
        self.offsets.clear()
        self.metrics.commit(self.tally)
        self.tally.clear()
        self.metrics.transaction("committed")
        self.metrics.observe_commit(time.perf_counter() - started)
        self.health.set_problem(None)

    def abort(self) -> None:
        if self.exactly_once:
            try:
                self.producer.abort()
            except KafkaException as exc:
                # Still open, or the producer is unusable: a new producer fences it and aborts the transaction.
                log.error("abort_transaction failed; replacing the producer", extra=kv(error=exc.args[0].str()))
                self.producer.replace()
        self._discard()

    def rewind(self) -> None:
        """After an abort, continue from the last committed offsets (what the aborted work re-reads)."""
        assignment = self.consumer.assignment()
        if not assignment:
            return
        while True:  # continuing from the current position instead would skip the aborted work
            try:
                committed = self.consumer.committed(assignment, timeout=10)
                break
            except KafkaException as exc:
                if self._stopping():
                    return  # nothing more is committed by this instance: the next owner re-reads it
                self.health.set_problem("cannot read committed offsets: " + exc.args[0].str())
                self.health.mark_progress()
                log.warning("cannot read committed offsets to rewind to; retrying", extra=kv(error=exc.args[0].str()))
                time.sleep(1.0)  # retry backoff
        for tp in committed:
            tp.offset = tp.offset if tp.offset >= 0 else OFFSET_BEGINNING
            try:
                self.consumer.seek(tp)
            except KafkaException as exc:
                log.warning("seek failed", extra=kv(partition=tp.partition, error=exc.args[0].str()))

    def _discard(self) -> None:
        self.open = False
        self.offsets.clear()
        self.tally.clear()
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
                    self._on_fatal(ConfigError(f"Kafka authorization failed: {err.str()}"))
                    return
                if name == "commit" and err.retriable() and not err.txn_requires_abort() and not err.fatal():
                    if time.monotonic() > min(deadline or float("inf"), self._stop_deadline()):
                        return
                    self.health.mark_progress()  # waiting out a broker outage is healthy; readiness says why
                    self.health.set_problem("commit failing: " + err.str())
                    time.sleep(backoff)  # retry backoff
                    backoff = min(backoff * 2, 5.0)
                    continue
                self.health.set_problem("transaction aborted: " + err.str())
                if err.fatal():
                    self._discard()
                    self.producer.replace()
                elif self.open:
                    self.abort()
                self.rewind()
                return
