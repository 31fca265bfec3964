"""`access-eval run`: the stream processor (imperative shell around the pure evaluation).

consume a batch -> make sure the settings view is fresh -> evaluate -> produce eval events / DLQ
records inside a Kafka transaction together with the consumed offsets -> commit -> move counters.
"""

from __future__ import annotations

import gc
import logging
import queue
import signal
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from types import FrameType
from typing import Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from processor.codec.avro import EvalCodec
from processor.config import ConfigError, RunConfig
from processor.core.attempts import InvalidAttempt, parse_attempt
from processor.core.evaluator import assess
from processor.core.policy import Verdict
from processor.core.settings import SettingsHistory
from processor.health import Health
from processor.kafka.admin import AUTH_ERRORS
from processor.kafka.table import SettingsTable
from processor.logs import kv, redact
from processor.metrics import Metrics, Tally

log = logging.getLogger("access_eval.pipeline")

#: Every Nth attempt's event age feeds the histogram (keeps the hot path lean).
AGE_SAMPLE_EVERY = 64
#: A transactional call blocked this long (the broker went away mid-call) makes the instance unready.
BLOCKED_UNREADY_S = 5.0
#: Timeout given to librdkafka's transactional calls, and the hard limit after which a call that ignored
#: it counts as hung (confluentinc/librdkafka#5456, #5511: send_offsets_to_transaction can block forever
#: once the group coordinator went away, e.g. across a broker restart).
TXN_CALL_TIMEOUT_S = 10.0
TXN_CALL_HUNG_S = 20.0


class Processor:
    """One consumer-group member: global settings table + transactional consume->produce loop."""

    def __init__(self, cfg: RunConfig, metrics: Metrics, health: Health, codec: EvalCodec | None = None) -> None:
        self.cfg = cfg
        self.metrics = metrics
        self.health = health
        self.codec = codec or EvalCodec()
        self.props = cfg.kafka_properties()
        self.history = SettingsHistory(retention_ms=cfg.settings_retention_ms)
        self.table = SettingsTable(self.props, cfg.settings_topic, self.history, metrics)
        self.eos = cfg.delivery == "exactly-once"
        self.stopping = False
        self.stop_deadline = float("inf")
        self.fatal: ConfigError | None = None
        self.tally = Tally()
        self.offsets: dict[tuple[str, int], int] = {}
        self.in_txn = False
        self.txn_started = 0.0
        self.consumer: Consumer | None = None
        self.producer: Producer | None = None
        self._seen = 0
        self._dlq_headers_cache: dict[str, bytes] = {}
        self._unreachable = False  # a connection problem was seen; a broker round trip clears it
        self._next_probe = 0.0
        self._blocked_since: float | None = None  # when the transactional call in flight began
        self._txn_caller = _Caller()
        self._max_record_bytes = int(self.props.get("message.max.bytes", 1_000_000))  # librdkafka's default

    # -- lifecycle ---------------------------------------------------------------------------------

    def install_signal_handlers(self) -> None:
        def stop(signum: int, _frame: FrameType | None) -> None:
            log.info("signal received; finishing the batch", extra=kv(signal=signal.Signals(signum).name))
            self.request_stop()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)

    def request_stop(self) -> None:
        """Finish the batch, commit, leave the group; retries stop at the shutdown deadline."""
        if not self.stopping:
            self.stop_deadline = time.monotonic() + self.cfg.shutdown_timeout_s
            self.stopping = True

    def bootstrap(self) -> None:
        """Read the settings topic up to the end offsets it had at start-up, before serving."""
        started = time.monotonic()
        self.table.start()
        self.table.refresh_targets()
        while not self.table.caught_up():
            if self.stopping:
                return
            self.table.poll(0.1)
            # The settings view is long-lived and acyclic: moving it out of the collector's generations
            # keeps every later collection from rescanning it (bootstrap of 1M records ~20% faster).
            gc.freeze()
        self.metrics.set_bootstrap_complete(True)
        self.metrics.set_settings_size(len(self.history), self.history.versions)
        self.health.set_bootstrapped(True)
        log.info(
            "settings bootstrapped",
            extra=kv(
                topic=self.cfg.settings_topic,
                accounts=len(self.history),
                versions=self.history.versions,
                rejected=self.history.rejected,
                seconds=round(time.monotonic() - started, 3),
            ),
        )

    def run(self) -> int:
        """Serve until stopped; 0 on a clean stop, 3 on unrecoverable misconfiguration."""
        log.info("starting", extra=kv(config=redact(self.props), delivery=self.cfg.delivery, group=self.cfg.group_id))
        self.bootstrap()
        if self.stopping:
            self.table.close()
            return 0
        self.producer = self._new_producer()
        self.consumer = self._new_consumer()
        threading.Thread(target=self._watch_blocked, name="access-eval-txn-watch", daemon=True).start()
        self.consumer.subscribe(
            [self.cfg.attempts_topic], on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost
        )
        try:
            self._loop()
        finally:
            self._shutdown()
        if self.fatal is not None:
            log.error(str(self.fatal))
            return 3
        return 0

    def _loop(self) -> None:
        assert self.consumer is not None
        staleness_s = self.cfg.staleness_ms / 1000
        commit_s = self.cfg.commit_interval_ms / 1000
        batch = self.cfg.batch_size
        while not self.stopping and self.fatal is None:
            self.health.mark_progress()
            # What is already fetched, without waiting: consume(n, timeout) waits until n messages
            # or the timeout, so a partly filled batch used to sit for the whole 100 ms.
            msgs = self.consumer.consume(batch, 0)
            if not msgs:  # idle: wait for the next message (not a full batch), at most until commit time
                wait = 0.1 if not self.in_txn else min(0.1, max(0.0, self.txn_started + commit_s - time.monotonic()))
                msgs = self.consumer.consume(1, wait)
                if msgs:
                    msgs += self.consumer.consume(batch - 1, 0)
            self.table.poll(0)
            if msgs:
                if not self._ensure_fresh(staleness_s):
                    break  # stopping: this batch is not committed, so its partitions' next owner re-reads it
                self._guarded(self._process, msgs)
            if self.in_txn and (time.monotonic() - self.txn_started >= commit_s or len(self.tally) >= 10 * batch):
                self._guarded(self._commit)
            if self._unreachable and time.monotonic() >= self._next_probe:
                self._probe_kafka()

    def _probe_kafka(self) -> None:
        """After a connection problem, one broker round trip (the settings topic's end offsets) that
        succeeds makes the instance ready again, also when no attempts arrive to commit."""
        self._next_probe = time.monotonic() + 1.0
        try:
            self.table.refresh_targets(timeout_s=2.0)
        except KafkaException:
            return
        self._unreachable = False
        self.health.set_problem(None)
        log.info("kafka reachable again")

    def _watch_blocked(self) -> None:
        """librdkafka reports an outage through callbacks served between calls, and a transactional call
        caught by one can block for a minute (socket.timeout.ms): report it meanwhile (daemon thread)."""
        while not self.stopping:
            time.sleep(1.0)  # watchdog period
            since = self._blocked_since
            if since is not None and time.monotonic() - since > BLOCKED_UNREADY_S:
                self._unreachable = True
                self.health.set_problem(f"kafka transaction call blocked for {time.monotonic() - since:.0f} s")

    def _txn_call(self, fn: Callable[..., Any], *args: Any) -> None:
        """A blocking transactional call with a hard limit. One that hangs past it raises a fatal error, so
        `_guarded` replaces the producer: the new one (same transactional.id) fences the hung one and
        aborts its transaction, and the work is redone from the committed offsets."""
        self._blocked_since = time.monotonic()
        try:
            returned = self._txn_caller.call(lambda: fn(*args, TXN_CALL_TIMEOUT_S), TXN_CALL_HUNG_S)
        finally:
            self._blocked_since = None
        if not returned:
            self._txn_caller = _Caller()  # the old one's thread stays blocked in librdkafka
            log.error("transactional call hung past its timeout; replacing the producer",
                      extra=kv(call=fn.__name__, hung_s=TXN_CALL_HUNG_S))
            raise KafkaException(KafkaError(KafkaError._TIMED_OUT, f"{fn.__name__} hung", fatal=True))

    def _ensure_fresh(self, staleness_s: float) -> bool:
        """Bounded staleness. While the settings topic's end cannot be observed (broker outage) the batch
        waits, the instance is unready, and the check is retried; False if asked to stop meanwhile."""
        backoff = 0.2
        while True:
            try:
                self.table.ensure_fresh(staleness_s)
                return True
            except KafkaException as exc:
                if self.stopping or self.fatal is not None:
                    return False
                err = exc.args[0]
                self.health.set_problem("settings topic end offsets unavailable: " + err.str())
                self.health.mark_progress()  # waiting out an outage is not a hung loop
                log.warning("cannot observe the settings topic's end; holding the batch",
                            extra=kv(error=err.str(), retry_in_s=backoff))
                time.sleep(backoff)  # retry backoff
                backoff = min(backoff * 2, 5.0)

    def _shutdown(self) -> None:
        self.request_stop()
        deadline = self.stop_deadline
        if self.in_txn and self.fatal is None:
            self._guarded(self._commit, deadline=deadline)
        if self.in_txn and self.producer is not None:
            self._abort()
        if self.consumer is not None:
            self.consumer.close()  # leaves the group: partitions move to the others now, not after a timeout
        if self.producer is not None:
            self.producer.flush(max(0.0, deadline - time.monotonic()))
        self.table.close()
        self.health.set_assigned(None)
        log.info("stopped", extra=kv(attempts_evaluated=self._seen))

    # -- clients -----------------------------------------------------------------------------------

    def _on_error(self, err: KafkaError) -> None:
        """librdkafka's global errors: transport problems flip readiness, auth problems are fatal."""
        code = err.code()
        if code in AUTH_ERRORS:
            self.fatal = ConfigError(
                f"Kafka authentication/authorization failed ({err.str()}): check sasl.username / sasl.password / "
                "security.protocol (ACCESS_EVAL_KAFKA_SASL_USERNAME, ACCESS_EVAL_KAFKA_SASL_PASSWORD, --kafka-config)"
            )
        elif code in (KafkaError._ALL_BROKERS_DOWN, KafkaError._TRANSPORT, KafkaError._RESOLVE):
            self._unreachable = True
            self.health.set_problem("broker unreachable")
            log.warning("kafka connection problem", extra=kv(error=err.str()))
        elif err.fatal():
            log.error("fatal kafka client error", extra=kv(error=err.str()))

    def _new_producer(self) -> Producer:
        conf: dict[str, Any] = {
            **self.props,
            "enable.idempotence": True,
            "linger.ms": 10,
            "batch.size": 1_000_000,
            "compression.type": "lz4",
            "queue.buffering.max.messages": 1_000_000,
            "error_cb": self._on_error,
            "logger": logging.getLogger("access_eval.librdkafka"),
        }
        if self.eos:
            conf["transactional.id"] = self.cfg.txn_id()
            conf["transaction.timeout.ms"] = 60_000
        producer = Producer(conf)
        if self.eos:
            self._retry_forever(lambda: producer.init_transactions(30), "init_transactions")
        return producer

    def _new_consumer(self) -> Consumer:
        return Consumer(
            {
                # Fetch in chunks of 64 KB or every 20 ms, not one request per produced batch: at 57k
                # attempts/s this took the broker from 1.03 to 0.90 CPUs and commits from 13 to 9 ms
                # (bench/README.md). Both can be overridden like any librdkafka property.
                "fetch.min.bytes": 65_536,
                "fetch.wait.max.ms": 20,
                **self.props,
                "group.id": self.cfg.group_id,
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "auto.offset.reset": "earliest",
                "isolation.level": "read_committed",
                "partition.assignment.strategy": "cooperative-sticky",
                "statistics.interval.ms": 5000,
                "stats_cb": self.metrics.update_from_stats,
                "error_cb": self._on_error,
                "logger": logging.getLogger("access_eval.librdkafka"),
            }
        )

    def _retry_forever(self, fn: Any, what: str) -> None:
        backoff = 0.5
        while True:
            try:
                fn()
                return
            except KafkaException as exc:
                err = exc.args[0]
                if err.fatal() or not err.retriable():
                    raise
                log.warning(f"{what} failed; retrying", extra=kv(error=err.str(), retry_in_s=backoff))
                time.sleep(backoff)  # retry backoff
                backoff = min(backoff * 2, 10.0)

    # -- rebalancing -------------------------------------------------------------------------------

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.health.set_assigned(len(consumer.assignment()) + len(partitions))
        log.info("partitions assigned", extra=kv(partitions=[p.partition for p in partitions]))

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Commit what was done before the partitions move, so the next owner starts after it."""
        if self.in_txn:
            self._guarded(self._commit)
        for tp in partitions:
            self.offsets.pop((tp.topic, tp.partition), None)
        remaining = max(0, len(consumer.assignment()) - len(partitions))
        self.health.set_assigned(remaining)
        log.info("partitions revoked", extra=kv(partitions=[p.partition for p in partitions]))

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Lost partitions may already be owned by someone else: our open work must not commit."""
        if self.in_txn:
            self._abort()
            self._rewind()
        self.health.set_assigned(0)
        log.warning("partitions lost", extra=kv(partitions=[p.partition for p in partitions]))

    # -- the hot path ------------------------------------------------------------------------------

    def _process(self, msgs: list[Message]) -> None:
        assert self.producer is not None
        started = time.perf_counter()
        if self.eos and not self.in_txn:
            self.producer.begin_transaction()
        if not self.in_txn:
            self.in_txn = True
            self.txn_started = time.monotonic()
        produce: Any = self.producer.produce
        history = self.history
        tally = self.tally
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
        counts: defaultdict[tuple[Verdict, str, str], int] = defaultdict(int)  # -> the tally, once per batch
        seen = self._seen
        for m in msgs:
            err = m.error()
            if err is not None:
                if err.code() != KafkaError._PARTITION_EOF:
                    log.warning("consumer error", extra=kv(error=err.str()))
                continue
            last[m.topic(), m.partition()] = m  # type: ignore[index]
            try:
                attempt = parse_attempt(m.value(), now_ms, max_future_ms=max_future, max_bytes=max_bytes)
            except InvalidAttempt as bad:
                self._dead_letter(m, bad)
                tally.add_invalid(bad.reason)
                continue
            verdict, version, exact = assess(history, attempt)
            a = attempt.data
            account = a["account_id"]
            counts[verdict, a["identity"]["type"], account if account in labelled else ""] += 1
            seen += 1
            if not seen % AGE_SAMPLE_EVERY:
                tally.observe_age(now_ms / 1000 - attempt.event_ms / 1000)
            if verdict.emit:
                value = encode(attempt, verdict, version, exact, now_ms)
                try:
                    produce(eval_topic, value, account.encode(), headers=headers)
                except BufferError:
                    self._produce(produce, eval_topic, account.encode(), value, headers)
        for (verdict, itype, label), n in counts.items():
            tally.add(verdict.outcome, itype, verdict.state, label, n)
        offsets = self.offsets
        for tp, m in last.items():
            offsets[tp] = m.offset() + 1  # type: ignore[operator]
        self._seen = seen
        self.producer.poll(0)
        self.metrics.observe_batch(time.perf_counter() - started, len(msgs))

    def _produce(self, produce: Any, topic: str, key: bytes | None, value: bytes | None, headers: Any) -> None:
        while True:
            try:
                produce(topic, value, key, headers=headers)
                return
            except BufferError:
                assert self.producer is not None
                self.producer.poll(0.05)  # local queue full: let deliveries drain

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
        assert self.producer is not None
        self._produce(self.producer.produce, self.cfg.dlq_topic, key, value, headers)

    # -- commit / abort ----------------------------------------------------------------------------

    def _commit(self) -> None:
        assert self.producer is not None and self.consumer is not None
        started = time.perf_counter()
        offsets = [TopicPartition(t, p, o) for (t, p), o in self.offsets.items()]
        if self.eos:
            if offsets:
                self._txn_call(self.producer.send_offsets_to_transaction, offsets,
                               self.consumer.consumer_group_metadata())
            self._txn_call(self.producer.commit_transaction)
        else:
            remaining = self.producer.flush(30)
            if remaining:
                raise KafkaException(KafkaError(KafkaError._TIMED_OUT, "produce flush timed out", retriable=True))
            if offsets:
                self.consumer.commit(offsets=offsets, asynchronous=False)
        self.in_txn = False
        self.offsets.clear()
        self.metrics.commit(self.tally)
        self.tally.clear()
        self.metrics.transaction("committed")
        self.metrics.observe_commit(time.perf_counter() - started)
        self.health.set_problem(None)

    def _abort(self) -> None:
        assert self.producer is not None
        if self.eos:
            try:
                self._txn_call(self.producer.abort_transaction)
            except KafkaException as exc:
                # Still open, or the producer is unusable: a new producer fences it and aborts the transaction.
                log.error("abort_transaction failed; replacing the producer", extra=kv(error=exc.args[0].str()))
                self.producer = self._new_producer()
        self.in_txn = False
        self.offsets.clear()
        self.tally.clear()
        self.metrics.transaction("aborted")

    def _rewind(self) -> None:
        """After an abort, continue from the last committed offsets (what the aborted work re-reads)."""
        assert self.consumer is not None
        assignment = self.consumer.assignment()
        if not assignment:
            return
        while True:  # continuing from the current position instead would skip the aborted work
            try:
                committed = self.consumer.committed(assignment, timeout=10)
                break
            except KafkaException as exc:
                if self.stopping:
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

    def _guarded(self, fn: Any, *args: Any, deadline: float | None = None) -> None:
        """Run a transactional step; on failure abort + rewind (or retry a retriable commit)."""
        backoff = 0.2
        while True:
            try:
                fn(*args)
                return
            except KafkaException as exc:
                err: KafkaError = exc.args[0]
                log.warning("transaction step failed", extra=kv(step=fn.__name__, error=err.str(),
                                                                   retriable=err.retriable(), fatal=err.fatal()))
                if err.code() in AUTH_ERRORS:
                    self.fatal = ConfigError(f"Kafka authorization failed: {err.str()}")
                    return
                if fn == self._commit and err.retriable() and not err.txn_requires_abort() and not err.fatal():
                    if time.monotonic() > min(deadline or float("inf"), self.stop_deadline):
                        return
                    self.health.mark_progress()  # waiting out a broker outage is healthy; readiness says why
                    self.health.set_problem("commit failing: " + err.str())
                    time.sleep(backoff)  # retry backoff
                    backoff = min(backoff * 2, 5.0)
                    continue
                self.health.set_problem("transaction aborted: " + err.str())
                if err.fatal():
                    assert self.producer is not None
                    self.in_txn = False
                    self.tally.clear()
                    self.offsets.clear()
                    self.metrics.transaction("aborted")
                    self.producer = self._new_producer()
                elif self.in_txn:
                    self._abort()
                self._rewind()
                return


class _Caller:
    """Runs blocking calls on one daemon thread, so that the caller can give up on a call that hangs
    (that thread then stays blocked and is abandoned; being a daemon, it does not hold up the exit)."""

    def __init__(self) -> None:
        self._calls: queue.SimpleQueue[tuple[Callable[[], Any], list[BaseException | None], threading.Event]]
        self._calls = queue.SimpleQueue()
        threading.Thread(target=self._serve, name="access-eval-txn-call", daemon=True).start()

    def _serve(self) -> None:
        while True:
            fn, outcome, done = self._calls.get()
            try:
                fn()
                outcome.append(None)
            except BaseException as exc:
                outcome.append(exc)
            done.set()

    def call(self, fn: Callable[[], Any], limit_s: float) -> bool:
        """Run `fn` and re-raise what it raised; False if it has not returned after `limit_s`."""
        outcome: list[BaseException | None] = []
        done = threading.Event()
        self._calls.put((fn, outcome, done))
        if not done.wait(limit_s):
            return False
        if outcome[0] is not None:
            raise outcome[0]
        return True
