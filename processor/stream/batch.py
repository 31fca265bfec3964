"""One batch of attempts: validate, evaluate, encode, produce (the hot path of `run`).

Everything per attempt happens here and nowhere else: decode at the boundary (invalid input goes to
the DLQ with its reason), evaluate with the pure core at the attempt's event time, encode the eval
event and produce it into the open transaction, keyed by the target account (SPEC §2). The batch
hands the transaction its last offsets and its outcome counts once, not per attempt.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from typing import Any

from confluent_kafka import KafkaError, Message

from processor.codec.avro import EvalCodec
from processor.config import RunConfig
from processor.core.attempts import InvalidAttempt, parse_attempt
from processor.core.conflicts import AttemptIdConflicts
from processor.core.evaluator import assess_at
from processor.core.policy import Verdict
from processor.core.settings import SettingsHistory
from processor.logs import kv
from processor.metrics import Metrics
from processor.stream.transaction import Transaction

log = logging.getLogger("access_eval.pipeline")

#: The dead-letter reason of an attempt whose evaluation raised (the detail names the exception type).
INTERNAL_ERROR = "internal_error"
#: Every Nth attempt's event age feeds the histogram (keeps the hot path lean).
AGE_SAMPLE_EVERY = 64


class Batch:
    """The per-attempt work of `run`, applied to one consumed batch at a time."""

    def __init__(
        self, cfg: RunConfig, history: SettingsHistory, codec: EvalCodec, metrics: Metrics, txn: Transaction
    ) -> None:
        self.cfg = cfg
        self.history = history
        self.codec = codec
        self.metrics = metrics
        self.txn = txn
        #: attempts evaluated by this instance (not counting dead letters)
        self.seen = 0
        #: attempt ids reused with other content (best effort, bounded; contract §7.1)
        self.conflicts = AttemptIdConflicts()
        self._max_record_bytes = int(cfg.kafka_properties().get("message.max.bytes", 1_000_000))  # librdkafka's

    def process(self, msgs: list[Message]) -> None:
        """Evaluate `msgs` into the open transaction (opened here if none is)."""
        started = time.perf_counter()
        txn = self.txn
        txn.begin()
        producer = txn.producer
        produce: Any = producer.produce
        history = self.history
        tally = txn.tally
        encode = self.codec.encode_evaluation
        eval_topic = self.cfg.eval_topic
        headers = self.codec.headers
        now_ms = int(time.time() * 1000)
        max_future = self.cfg.max_future_ms
        max_bytes = self.cfg.max_attempt_bytes
        # Per-account metric labels are opt-in: other accounts are tallied as "" so the tally keeps a
        # handful of keys instead of one per account (Metrics.commit ignores accounts not labelled).
        labelled = self.metrics.account_labels
        last: dict[tuple[str, int], Message] = {}  # the batch's last message per partition -> offsets
        newest: dict[Any, int] = {}  # the batch's newest event time per partition -> stream time
        counts: defaultdict[tuple[Verdict, str, str], int] = defaultdict(int)  # -> the tally, once per batch
        seen = self.seen
        for m in msgs:
            err = m.error()
            if err is not None:
                if err.code() != KafkaError._PARTITION_EOF:
                    log.warning("consumer error", extra=kv(error=err.str()))
                continue
            tp: Any = (m.topic(), m.partition())
            last[tp] = m
            try:
                attempt = parse_attempt(m.value(), now_ms, max_future_ms=max_future, max_bytes=max_bytes)
                verdict, version, exact = assess_at(history, attempt)
                value = encode(attempt, verdict, version, exact, now_ms) if verdict.emit else None
            except InvalidAttempt as bad:
                self._dead_letter(m, bad)
                tally.add_invalid(bad.reason)
                continue
            except Exception as exc:  # a record that breaks evaluation must not stop the stream (SPEC §7)
                log.error("evaluating an attempt failed; dead-lettered",
                          extra=kv(partition=m.partition(), offset=m.offset(), error=repr(exc)))
                self._dead_letter(m, InvalidAttempt(INTERNAL_ERROR, type(exc).__name__))
                tally.add_invalid(INTERNAL_ERROR)
                continue
            if attempt.event_ms > newest.get(tp, -1):
                newest[tp] = attempt.event_ms
            a = attempt.data
            account = a["account_id"]
            counts[verdict, a["identity"]["type"], account if account in labelled else ""] += 1
            seen += 1
            if not seen % AGE_SAMPLE_EVERY:
                tally.observe_age(now_ms / 1000 - attempt.event_ms / 1000)
            if value is not None:
                if self.conflicts.observe(attempt):
                    self.metrics.attempt_id_conflict()
                try:
                    produce(eval_topic, value, account.encode(), headers=headers)
                except BufferError:
                    self._produce(eval_topic, account.encode(), value, headers)
        for (verdict, itype, label), n in counts.items():
            tally.add(verdict.outcome, itype, verdict.state, label, n)
        offsets = txn.offsets
        for tp, m in last.items():
            offsets[tp] = m.offset() + 1  # type: ignore[operator]
        # Stream time per input partition (SPEC §5), after the batch: its attempts were evaluated
        # against the versions kept before it, whatever the order of partitions within it.
        history.observe_batch(newest)
        self.seen = seen
        producer.poll(0)
        self.metrics.observe_batch(time.perf_counter() - started, len(msgs))

    def _produce(self, topic: str, key: bytes | None, value: bytes | None, headers: Any) -> None:
        producer = self.txn.producer
        while True:
            try:
                producer.produce(topic, value, key, headers=headers)
                return
            except BufferError:
                producer.poll(0.05)  # local queue full: let deliveries drain

    def _dead_letter(self, m: Message, bad: InvalidAttempt) -> None:
        headers = list(m.headers() or [])
        headers += [
            ("error.reason", bad.reason.encode()),
            ("error.detail", bad.detail[:2000].encode("utf-8", "replace")),
            ("source.topic", (m.topic() or "").encode()),
            ("source.partition", str(m.partition()).encode()),
            ("source.offset", str(m.offset()).encode()),
        ]
        key, value = m.key(), m.value()
        # A value the producer cannot send (message.max.bytes) would fail the transaction on every retry:
        # forward its head instead, and the size; the original stays at source.topic/partition/offset.
        # (A header's repr is at least as long as its bytes: a safe over-estimate.)
        room = self._max_record_bytes - len(key or b"") - 512 - sum(len(str(h)) for h in headers)
        if value is not None and len(value) > room:
            headers.append(("error.value.truncated", str(len(value)).encode()))
            value = value[: max(room - 64, 0)]
        self._produce(self.cfg.dlq_topic, key, value, headers)
