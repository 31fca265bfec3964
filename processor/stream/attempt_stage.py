"""The attempt stage of `run`: validate, evaluate, encode, produce (the hot path).

Everything per attempt happens here and nowhere else: decode at the boundary (invalid input goes to
the DLQ with its reason), evaluate with the pure core at the attempt's event time, encode the eval
event and produce it into the open transaction, keyed by the target account (SPEC §2). Each consumed
batch hands the transaction its last offsets and its outcome counts once, not per attempt; the stage
asks the transaction for all three (`produce`, `store_offsets`, `tally`) and never writes its state.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import defaultdict
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message

from processor.codec.avro import EvalCodec
from processor.config import ConfigError
from processor.core.attempts import InvalidAttempt, parse_attempt
from processor.core.conflicts import AttemptIdConflicts
from processor.core.evaluator import assess_at
from processor.core.policy import Verdict
from processor.core.settings import SettingsHistory
from processor.kafka.errors import PRODUCER_STATE_ERRORS
from processor.logs import kv
from processor.metrics import Metrics
from processor.metrics.tally import Tally
from processor.stream.transaction import Transaction

log = logging.getLogger("access_eval.pipeline")

#: The dead-letter reason of an attempt whose evaluation raised (the detail names the exception type).
INTERNAL_ERROR = "internal_error"
#: Every Nth attempt's event age feeds the histogram (keeps the hot path lean).
AGE_SAMPLE_EVERY = 64
#: produce() failing this many times with one error for one record: the record's fault, not a passing one.
MAX_PRODUCE_FAILURES = 3
#: librdkafka's message.max.bytes when the Kafka properties do not set it.
DEFAULT_MAX_RECORD_BYTES = 1_000_000
#: Bytes of a record besides key, value and headers (librdkafka's framing is ~70), and of the marker headers.
DEAD_LETTER_OVERHEAD = 512
MARK_HEADERS_BYTES = 256


class AttemptStage:
    """The per-attempt work of `run`, handed one consumed batch at a time.

    A stage, not a batch: one instance lives as long as the processor's clients, takes every batch in
    turn, and keeps what spans batches: the running count of evaluated attempts, the memory of attempt
    ids seen (conflicts, contract §7.1), and the produce failures per record (`_refused`). It is given
    the values it uses, not the whole RunConfig (whose Kafka properties re-read a file and the environment).
    """

    def __init__(
        self,
        history: SettingsHistory,
        codec: EvalCodec,
        metrics: Metrics,
        txn: Transaction,
        *,
        eval_topic: str,
        dlq_topic: str,
        max_future_ms: int,
        max_attempt_bytes: int,
        max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
    ) -> None:
        self.history = history
        self.codec = codec
        self.metrics = metrics
        self.txn = txn
        self.eval_topic = eval_topic
        self.dlq_topic = dlq_topic
        self.max_future_ms = max_future_ms
        self.max_attempt_bytes = max_attempt_bytes
        #: the producer's message.max.bytes: a dead letter is cut to fit it (`fit_dead_letter`)
        self.max_record_bytes = max_record_bytes
        #: attempts evaluated by this instance (not counting dead letters)
        self.seen = 0
        #: attempt ids reused with other content (best effort, bounded; contract §7.1)
        self.conflicts = AttemptIdConflicts()
        #: (topic, partition, offset, error code, dead letter?) -> produce() failures so far (`_refused`)
        self._refusals: dict[tuple[Any, ...], int] = {}

    def process(self, msgs: list[Message]) -> None:
        """Evaluate `msgs` into the open transaction (opened here if none is)."""
        started = time.perf_counter()
        txn = self.txn
        txn.begin()
        produce = txn.produce
        history = self.history
        encode = self.codec.encode_evaluation
        eval_topic, headers = self.eval_topic, self.codec.headers
        now_ms = int(time.time() * 1000)
        max_future, max_bytes = self.max_future_ms, self.max_attempt_bytes
        # Per-account metric labels are opt-in: other accounts are tallied as "" so the tally keeps a
        # handful of keys instead of one per account (Metrics.commit ignores accounts not labelled).
        labelled = self.metrics.account_labels
        tally = Tally()  # this batch's; handed to the transaction once, at the end
        last: dict[tuple[str, int], Message] = {}  # the batch's last message per partition -> offsets
        newest: dict[Any, int] = {}  # the batch's newest event time per partition -> stream time
        counts: defaultdict[tuple[Verdict, str, str], int] = defaultdict(int)  # -> the tally, once per batch
        seen = self.seen
        for m in msgs:
            err = m.error()
            if err is not None:
                _consumer_error(err)
                continue
            tp: Any = (m.topic(), m.partition())
            last[tp] = m
            try:
                attempt = parse_attempt(m.value(), now_ms, max_future_ms=max_future, max_bytes=max_bytes)
                verdict, version, exact = assess_at(history, attempt)
                value = encode(attempt, verdict, version, exact, now_ms) if verdict.emit else None
            except InvalidAttempt as bad:
                self._reject(m, bad, tally)
                continue
            except Exception as exc:  # a record that breaks evaluation must not stop the stream (SPEC §7)
                self._reject(m, _internal_error(m, exc), tally)
                continue
            a = attempt.data
            account = a["account_id"]
            if value is not None:
                if self.conflicts.observe(attempt):
                    self.metrics.attempt_id_conflict()
                try:
                    produce(eval_topic, value, account.encode(), headers)
                except KafkaException as exc:  # librdkafka refused this record: bounded (`_refused`)
                    self._refused(m, exc)
                    tally.add_invalid(INTERNAL_ERROR)
                    continue
            if attempt.event_ms > newest.get(tp, -1):
                newest[tp] = attempt.event_ms
            counts[verdict, a["identity"]["type"], account if account in labelled else ""] += 1
            seen += 1
            if not seen % AGE_SAMPLE_EVERY:
                tally.observe_age(now_ms / 1000 - attempt.event_ms / 1000)
        self._hand_over(last, newest, counts, tally)
        self.seen = seen
        txn.poll()
        self.metrics.observe_batch(time.perf_counter() - started, len(msgs))

    def _hand_over(self, last: dict[tuple[str, int], Message], newest: dict[Any, int],
                   counts: dict[tuple[Verdict, str, str], int], tally: Tally) -> None:
        """The batch's offsets and counts to the transaction, once; then the stream time it reached."""
        self.txn.store_offsets({tp: m.offset() + 1 for tp, m in last.items()})  # type: ignore[operator]
        for (verdict, itype, label), n in counts.items():
            tally.add(verdict.outcome, itype, verdict.state, label, n)
        self.txn.tally(tally)
        # Stream time per input partition (SPEC §5), after the batch: its attempts were evaluated
        # against the versions kept before it, whatever the order of partitions within it.
        self.history.observe_batch(newest)

    def _reject(self, m: Message, bad: InvalidAttempt, tally: Tally) -> None:
        """An attempt that cannot be evaluated: to the DLQ with its reason, counted as invalid."""
        self._dead_letter(m, bad)
        tally.add_invalid(bad.reason)

    def _refused(self, m: Message, exc: KafkaException, *, dead_letter: bool = False) -> None:
        """produce() raised for the record of `m` (not the queue: that is BufferError). Below the bound
        the error propagates: the transaction aborts and the record is read again (a passing state of
        the producer). The same error for the same record MAX_PRODUCE_FAILURES times is the record's:
        it is dead-lettered as internal_error and its partition moves on, instead of rewinding forever.
        Errors of the producer itself (fatal, fenced, out of a transaction) are the transaction's
        failure policy's and are never counted here."""
        err: KafkaError = exc.args[0]
        if err.fatal() or err.code() in PRODUCER_STATE_ERRORS:
            raise exc
        where = (m.topic(), m.partition(), m.offset(), err.code(), dead_letter)
        failures = self._refusals.get(where, 0) + 1
        if failures < MAX_PRODUCE_FAILURES:
            if len(self._refusals) >= 10_000:  # bounded: a long outage of many records starts counting again
                self._refusals.clear()
            self._refusals[where] = failures
            raise exc
        self._refusals.pop(where, None)
        log.error("producing for an attempt failed repeatedly; dead-lettered as internal_error",
                  extra=kv(partition=m.partition(), offset=m.offset(), failures=failures, error=err.str()))
        if dead_letter:  # its dead letter is what fails: a minimal one, or a clear exit
            self._last_resort(m, err)
        else:
            self._dead_letter(m, InvalidAttempt(INTERNAL_ERROR, f"produce failed: {err.str()}"))

    def _last_resort(self, m: Message, err: KafkaError) -> None:
        """A dead letter without the original key, headers and value (all stay at the source coordinates)."""
        key = m.key()
        headers = self._added_headers(m, InvalidAttempt(INTERNAL_ERROR, f"dead letter refused: {err.str()}"))
        try:
            self.txn.produce(self.dlq_topic, None, None if key is None else _digest(key), headers)
        except KafkaException as exc:
            raise ConfigError(
                f"cannot write even a minimal dead letter to --dlq-topic {self.dlq_topic!r} "
                f"(ACCESS_EVAL_DLQ_TOPIC) for the attempt at partition {m.partition()} offset {m.offset()}: "
                f"{exc.args[0].str()}; check that topic and its producer limits") from None

    @staticmethod
    def _added_headers(m: Message, bad: InvalidAttempt) -> list[tuple[str, bytes]]:
        return [
            ("error.reason", bad.reason.encode()),
            ("error.detail", bad.detail[:2000].encode("utf-8", "replace")),
            ("source.topic", (m.topic() or "").encode()),
            ("source.partition", str(m.partition()).encode()),
            ("source.offset", str(m.offset()).encode()),
        ]

    def _dead_letter(self, m: Message, bad: InvalidAttempt) -> None:
        key, value, headers = fit_dead_letter(
            m.key(), m.value(), list(m.headers() or []),  # type: ignore[arg-type]  # a list from a consumer
            self._added_headers(m, bad), self.max_record_bytes
        )
        try:
            self.txn.produce(self.dlq_topic, value, key, headers)
        except KafkaException as exc:
            self._refused(m, exc, dead_letter=True)


def _consumer_error(err: KafkaError) -> None:
    """A consumer event in the batch (not a record): the end of a partition is routine, the rest is logged."""
    if err.code() != KafkaError._PARTITION_EOF:
        log.warning("consumer error", extra=kv(error=err.str()))


def _internal_error(m: Message, exc: Exception) -> InvalidAttempt:
    """Evaluating the attempt of `m` raised: logged, and dead-lettered as internal_error (not a crash)."""
    log.error("evaluating an attempt failed; dead-lettered",
              extra=kv(partition=m.partition(), offset=m.offset(), error=repr(exc)))
    return InvalidAttempt(INTERNAL_ERROR, type(exc).__name__)


def _digest(key: bytes) -> bytes:
    return hashlib.sha256(key).hexdigest().encode()


def _header_bytes(headers: list[tuple[str, Any]]) -> int:
    """An over-estimate of the headers' wire size (name, value and up to 16 bytes of framing each)."""
    return sum(len(n.encode()) + len(v or b"") + 16 for n, v in headers)


def fit_dead_letter(
    key: bytes | None, value: bytes | None, original: list[tuple[str, Any]], added: list[tuple[str, bytes]],
    max_bytes: int,
) -> tuple[bytes | None, bytes | None, list[tuple[str, Any]]]:
    """The dead letter as sent: unchanged when it fits the producer's message.max.bytes; otherwise a key
    over a quarter of the room is replaced by its SHA-256 (hex), original headers past a quarter of the
    room are dropped (the first ones kept, in order), and the value is cut to what is left. Each change
    is recorded in a header (contract §8); the original stays at source.topic/partition/offset. Without
    this, a record the broker accepted on the attempts topic (its limit is larger) could never be
    dead-lettered, and its partition would be rewound forever."""
    room = max_bytes - DEAD_LETTER_OVERHEAD - _header_bytes(added)
    if len(key or b"") + len(value or b"") + _header_bytes(original) <= room:
        return key, value, original + added
    room -= MARK_HEADERS_BYTES
    marks: list[tuple[str, bytes]] = []
    if key is not None and len(key) > room // 4:
        marks.append(("error.key.hashed", str(len(key)).encode()))
        key = _digest(key)
    kept: list[tuple[str, Any]] = []
    for h in original:
        if _header_bytes([*kept, h]) > room // 4:
            marks.append(("error.headers.dropped", str(len(original) - len(kept)).encode()))
            break
        kept.append(h)
    room -= len(key or b"") + _header_bytes(kept)
    if value is not None and len(value) > room:
        marks.append(("error.value.truncated", str(len(value)).encode()))
        value = value[: max(room, 0)]
    return key, value, kept + added + marks
