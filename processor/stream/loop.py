"""`access-eval run`: the stream processor's loop (the imperative shell around the pure evaluation).

bootstrap the settings table -> loop: consume a batch -> make sure the settings view is fresh ->
`AttemptStage.process` (evaluate, produce into the open transaction) -> when due, `Transaction.commit`
(offsets + records + counters together). Rebalances commit (revoke) or abort (lost) the open
transaction (rebalance.py). Signals, clients and the watchdog live here; the per-attempt work in
attempt_stage.py, the commit/abort/rewind policy in transaction.py, the hung-call guard in producer.py.
Size (about 470 lines): the lifecycle's waits (bootstrap, staleness, start-up retries) each honour
stop and mark liveness; they stay beside the loop they guard.
"""

from __future__ import annotations

import functools
import gc
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer

from processor.codec.avro import EvalCodec
from processor.config import ConfigError, RunConfig
from processor.core.settings import SettingsHistory
from processor.errors import EXIT_AUTH, EXIT_FAIL, EXIT_OK, EXIT_USAGE
from processor.health import Health
from processor.kafka import clients
from processor.kafka.errors import AUTH_ERRORS
from processor.kafka.local_state import LocalState
from processor.kafka.table import SettingsTable
from processor.logs import kv, redact
from processor.metrics import Metrics
from processor.native import core_build
from processor.stream.attempt_stage import DEFAULT_MAX_RECORD_BYTES, AttemptStage
from processor.stream.context import RunContext
from processor.stream.producer import BLOCKED_UNREADY_S, ProducerFactory, StopRequested, TxnProducer
from processor.stream.rebalance import Membership
from processor.stream.transaction import SharedTransactionalId, Transaction

log = logging.getLogger("access_eval.pipeline")

#: After a signalled stop, how long past --shutdown-timeout-s the process may take before it exits anyway.
EXIT_GRACE_S = 1.0

ConsumerFactory = Callable[[dict[str, Any]], Any]
TableFactory = Callable[[dict[str, Any], str, SettingsHistory, Metrics, str], Any]


class Processor:
    """One consumer-group member: global settings table + transactional consume->produce loop."""

    def __init__(
        self,
        cfg: RunConfig,
        metrics: Metrics,
        health: Health,
        codec: EvalCodec | None = None,
        *,
        consumer_factory: ConsumerFactory = Consumer,
        producer_factory: ProducerFactory = Producer,
        table_factory: TableFactory = SettingsTable,
    ) -> None:
        self.cfg = cfg
        self.metrics = metrics
        #: health, the stop request and the fatal error, shared with the transaction
        self.context = RunContext(health)
        self.codec = codec or EvalCodec()
        self.props = cfg.kafka_properties()
        self.history = SettingsHistory(retention_ms=cfg.settings_retention_ms)
        self.table = table_factory(self.props, cfg.settings_topic, self.history, metrics, cfg.group_id)
        self.local_state = LocalState(cfg.state_dir, self.props, cfg.settings_topic) if cfg.state_dir else None
        self.eos = cfg.delivery == "exactly-once"
        self._consumer_factory = consumer_factory
        self._producer_factory = producer_factory
        self.consumer: Any = None
        self.txn: Transaction | None = None
        self.stage: AttemptStage | None = None
        self._exit_guard: threading.Thread | None = None
        self._signal_lock = threading.Lock()
        self._wakeup_fd: int | None = None
        self._unreachable = False  # a connection problem was seen; a broker round trip clears it
        self._next_probe = 0.0
        #: the group's callbacks and what they keep (partitions owned, moves so far)
        self.membership = Membership(self.history, health)

    @property
    def health(self) -> Health:
        return self.context.health

    @property
    def stopping(self) -> bool:
        return self.context.stopping

    @property
    def stop_deadline(self) -> float:
        return self.context.stop_deadline

    @property
    def fatal(self) -> ConfigError | None:
        return self.context.fatal

    # -- lifecycle ---------------------------------------------------------------------------------

    def install_signal_handlers(self) -> None:
        """SIGTERM/SIGINT stop the loop. Python runs a handler only between bytecodes of the main thread,
        so while a librdkafka call blocks it (init_transactions waits up to 30 s) the handler waits too,
        and so would the shutdown deadline (soak seed 7: a stop took 30.1 s against a 20 s bound). The
        C-level handler also writes the signal number to a wakeup fd; a thread reading it starts the
        deadline and its guard when the signal arrives."""
        def stop(signum: int, _frame: FrameType | None) -> None:
            log.info("signal received; finishing the batch", extra=kv(signal=signal.Signals(signum).name))
            self._stop_by_signal()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        read_fd, self._wakeup_fd = os.pipe()
        os.set_blocking(self._wakeup_fd, False)
        signal.set_wakeup_fd(self._wakeup_fd, warn_on_full_buffer=False)
        threading.Thread(target=self._watch_signals, args=(read_fd,), name="access-eval-signals", daemon=True).start()

    def release_signal_watch(self) -> None:
        """Undo the wakeup fd (the watcher thread ends with its pipe); `run`'s caller restores the handlers."""
        if self._wakeup_fd is None:
            return
        previous = signal.set_wakeup_fd(-1)
        if previous != self._wakeup_fd:  # someone else's since: leave theirs
            signal.set_wakeup_fd(previous)
        os.close(self._wakeup_fd)
        self._wakeup_fd = None

    def _watch_signals(self, read_fd: int) -> None:
        stops = {int(signal.SIGTERM), int(signal.SIGINT)}
        with os.fdopen(read_fd, "rb", buffering=0) as pipe:
            while received := pipe.read(64):
                if stops.intersection(received):
                    self._stop_by_signal()

    def _stop_by_signal(self) -> None:
        """Idempotent, from the handler or the watcher thread: the first call starts the deadline's guard."""
        with self._signal_lock:
            self.request_stop()
            if self._exit_guard is None:
                self._exit_guard = threading.Thread(target=self._exit_at_deadline, name="access-eval-exit", daemon=True)
                self._exit_guard.start()

    def _exit_at_deadline(self) -> None:
        """A signalled stop ends within --shutdown-timeout-s even when Kafka is unreachable: the steps of
        the shutdown (commit retries, abort, leaving the group, flush) each wait on the broker, so past
        the deadline the process exits without them. Nothing is lost: the open transaction is aborted
        by the broker (its timeout, or the next instance fencing the transactional id) and its input
        offsets were not committed, so the next owner reads them again (contract §8)."""
        time.sleep(max(0.0, self.stop_deadline - time.monotonic()) + EXIT_GRACE_S)
        log.error("shutdown deadline passed (Kafka slow or unreachable); exiting without finishing the shutdown: "
                  "an open transaction is aborted by the broker and its attempts are read again",
                  extra=kv(shutdown_timeout_s=self.cfg.shutdown_timeout_s))
        for handler in logging.getLogger().handlers:
            handler.flush()
        os._exit(EXIT_FAIL)

    def request_stop(self) -> None:
        """Finish the batch, commit, leave the group; retries stop at the shutdown deadline."""
        context = self.context
        if not context.stopping:
            context.stop_deadline = time.monotonic() + self.cfg.shutdown_timeout_s
            context.stopping = True

    def bootstrap(self) -> None:
        """Read the settings topic up to the end offsets it had at start-up, before serving: from the
        offsets of a usable local snapshot (--state-dir), else from the beginning."""
        started = time.monotonic()
        offsets = self._restore_local_state()
        start = self.table.start if offsets is None else functools.partial(self.table.start, offsets=offsets)
        if not self._retrying(start, "settings topic metadata"):
            return
        if not self._retrying(self.table.refresh_targets, "settings topic end offsets"):
            return
        while not self.table.caught_up():
            if self.stopping:
                return
            self.health.mark_progress()  # reading a large settings topic is progress, not a hung loop
            self.table.poll(0.1)
            # The settings view is long-lived and acyclic: moving it out of the collector's generations
            # keeps every later collection from rescanning it (bootstrap of 1M records ~20% faster).
            gc.freeze()
        self.table.settle()  # a restored table too: frozen, and the heap the bootstrap freed given back
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
                from_snapshot=offsets is not None,
                seconds=round(time.monotonic() - started, 3),
            ),
        )
        if self.local_state is not None:  # before the loop: no attempt has touched the table yet
            self.local_state.save(self.history, self.table.position)

    def _restore_local_state(self) -> dict[int, int] | None:
        """The offsets of the snapshot loaded into the (empty) table, or None: none configured, none
        usable, or asked to stop."""
        state = self.local_state
        if state is None:
            return None
        got: list[dict[int, int] | None] = []
        self._retrying(lambda: got.append(state.restore(self.history, self.table)), "settings topic end offsets")
        return got[0] if got else None

    def _retrying(self, fn: Callable[[], Any], what: str) -> bool:
        """Run a start-up broker call, retrying a Kafka error with backoff (the broker may be slow or
        restarting); False if asked to stop meanwhile. Waiting is progress (liveness), not readiness."""
        backoff = 0.5
        failed = False
        while not self.stopping:
            try:
                fn()
                if failed:
                    self.health.set_problem(None)  # the reason `_waiting` gave no longer holds
                return True
            except KafkaException as exc:
                failed = True
                err = exc.args[0]
                if err.code() in AUTH_ERRORS:
                    raise ConfigError(f"Kafka authorization failed reading the {what}: {err.str()}: check "
                                      "sasl.username / sasl.password and the ACLs on --settings-topic") from None
                self._waiting(f"{what} unavailable: {err.str()}")
                log.warning(f"cannot read the {what}; retrying", extra=kv(error=err.str(), retry_in_s=backoff))
                until = time.monotonic() + backoff
                while time.monotonic() < until and not self.stopping:
                    self.health.mark_progress()
                    time.sleep(0.1)  # retry backoff, in slices that notice a stop
                backoff = min(backoff * 2, 10.0)
        return False

    def open_clients(self) -> Transaction:
        """The transactional producer, the group consumer, and the transaction and attempt stage over them."""
        retried: list[str] = []

        def waiting(problem: str) -> None:
            retried.append(problem)
            self._waiting(problem)

        producer = TxnProducer(
            self.props,
            self.cfg.txn_id() if self.eos else None,
            error_cb=self._on_error,
            on_retry=waiting,
            factory=self._producer_factory,
            stop=lambda: self.stopping,
            progress=self.health.mark_progress,
        )
        if retried and not self.stopping:
            self.health.set_problem(None)  # init_transactions succeeded after retries: that reason is gone
        self.consumer = self._consumer_factory(
            clients.processor_consumer_conf(
                self.props, self.cfg.group_id, stats_cb=self.metrics.update_from_stats, error_cb=self._on_error
            )
        )
        self.txn = Transaction(
            producer,
            self.consumer,
            self.metrics,
            self.context,
            exactly_once=self.eos,
            owned=self.membership.owned,
        )
        self.membership.txn = self.txn
        cfg = self.cfg
        self.stage = AttemptStage(
            self.history, self.codec, self.metrics, self.txn,
            eval_topic=cfg.eval_topic, dlq_topic=cfg.dlq_topic, max_future_ms=cfg.max_future_ms,
            max_attempt_bytes=cfg.max_attempt_bytes,
            max_record_bytes=int(self.props.get("message.max.bytes", DEFAULT_MAX_RECORD_BYTES)),
        )
        return self.txn

    def run(self) -> int:
        """Serve until stopped; 0 on a clean stop, 3 on unrecoverable misconfiguration."""
        log.info("starting", extra=kv(config=redact(self.props), delivery=self.cfg.delivery, group=self.cfg.group_id,
                                      core=core_build()))
        self.bootstrap()
        if self.stopping:
            self.table.close()
            return EXIT_OK
        try:
            self.open_clients()
        except StopRequested:  # SIGTERM while init_transactions still retried: a clean stop (contract §8)
            log.info("stopped before the transactional producer was ready")
            self.table.close()
            return EXIT_OK
        threading.Thread(target=self._watch_blocked, name="access-eval-txn-watch", daemon=True).start()
        self.subscribe()
        try:
            while self.turn():
                pass
        except StopRequested:
            return EXIT_OK
        if self.fatal is not None:
            log.error(str(self.fatal))
            return EXIT_USAGE if isinstance(self.fatal, SharedTransactionalId) else EXIT_AUTH
        return EXIT_OK

    def subscribe(self) -> None:
        self.consumer.subscribe(
            [self.cfg.attempts_topic], on_assign=self.membership.on_assign,
            on_revoke=self.membership.on_revoke, on_lost=self.membership.on_lost,
        )

    def turn(self) -> bool:
        """`step`, and the shutdown once the loop ends (also by an exception, which propagates)."""
        try:
            more = self.step()
        except BaseException:
            # Not a clean stop: the open transaction may hold part of a batch without its offsets. Abort it.
            self._shutdown(clean=False)
            raise
        if not more:
            self._shutdown()
        return more

    def step(self) -> bool:
        """One turn of the loop: fetch, process, commit when due. False when the loop should end."""
        assert self.txn is not None and self.stage is not None
        if self.stopping or self.fatal is not None:
            return False
        txn = self.txn
        consumer = self.consumer
        staleness_s = self.cfg.staleness_ms / 1000
        commit_s = self.cfg.commit_interval_ms / 1000
        size = self.cfg.batch_size
        self.health.mark_progress()
        # What is already fetched, without waiting: consume(n, timeout) waits until n messages
        # or the timeout, so a partly filled batch used to sit for the whole 100 ms.
        moves, rewinds = self.membership.moves, txn.rewinds
        msgs = consumer.consume(size, 0)
        if not msgs:  # idle: wait for the next message (not a full batch), at most until commit time
            wait = 0.1 if not txn.open else min(0.1, max(0.0, txn.started + commit_s - time.monotonic()))
            msgs = consumer.consume(1, wait)
            if msgs:
                msgs += consumer.consume(size - 1, 0)
        if self.membership.moves != moves or txn.rewinds != rewinds:
            msgs = self._rebalanced_during_fetch(msgs)
        self.table.poll(0)
        if msgs:
            if not self._ensure_fresh(staleness_s):
                return False  # stopping: this batch is not committed, so its partitions' next owner re-reads it
            self._process(msgs)
        if txn.due(commit_s, 10 * size):
            txn.guarded(txn.commit, "commit")
        if self._unreachable and time.monotonic() >= self._next_probe:
            self._probe_kafka()
        return True

    def _rebalanced_during_fetch(self, msgs: list[Message]) -> list[Message]:
        """A revoke or lost callback, or a rewind, ran inside consume(). librdkafka serves callbacks inline
        while it collects messages and goes on collecting, so `msgs` may hold messages of a partition
        revoked or lost meanwhile, and messages from before a rewind (a lost partition, a failed revoke
        commit) next to messages from after it. After such a callback no work is open (it was committed
        or aborted): the whole fetch is dropped and every partition still owned is rewound to its
        committed offset, which is where the dropped messages start, so nothing is skipped or read twice
        and no offset is taken for a partition no longer owned. Returns what may be processed: nothing."""
        assert self.txn is not None
        log.info("rebalance during a fetch; re-reading from the committed offsets", extra=kv(dropped=len(msgs)))
        if not self.txn.open:  # open only if a revoke commit is still in doubt at a stop: nothing more is read
            self.txn.rewind()
        return []

    def _process(self, msgs: list[Message]) -> None:
        assert self.txn is not None and self.stage is not None
        stage = self.stage
        self.txn.guarded(lambda: stage.process(msgs), "process")

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
            txn = self.txn
            blocked = txn.blocked_for() if txn is not None else 0.0
            if blocked > BLOCKED_UNREADY_S:
                self._unreachable = True
                self.health.set_problem(f"kafka transaction call blocked for {blocked:.0f} s")

    def _ensure_fresh(self, staleness_s: float) -> bool:
        """Bounded staleness. While the settings topic's end cannot be observed (broker outage) the batch
        waits, the instance is unready, and the check is retried; False if asked to stop meanwhile."""
        backoff = 0.2
        failed = False
        while True:
            try:
                fresh = bool(self.table.ensure_fresh(staleness_s, lambda: self.stopping, self.health.mark_progress))
                if failed:
                    self.health.set_problem(None)
                return fresh
            except KafkaException as exc:
                failed = True
                if self.stopping or self.fatal is not None:
                    return False
                err = exc.args[0]
                self.health.set_problem("settings topic end offsets unavailable: " + err.str())
                self.health.mark_progress()  # waiting out an outage is not a hung loop
                log.warning("cannot observe the settings topic's end; holding the batch",
                            extra=kv(error=err.str(), retry_in_s=backoff))
                time.sleep(backoff)  # retry backoff
                backoff = min(backoff * 2, 5.0)

    def _shutdown(self, clean: bool = True) -> None:
        self.request_stop()
        deadline = self.stop_deadline
        txn = self.txn
        if txn is not None:
            if txn.open and self.fatal is None and clean:
                txn.guarded(txn.commit, "commit", deadline=deadline)
            if txn.open:
                txn.abort(exiting=self.fatal is not None)
        if self.consumer is not None:
            self.consumer.close()  # leaves the group: partitions move to the others now, not after a timeout
        if txn is not None:
            try:
                txn.flush(max(0.0, deadline - time.monotonic()))
            except KafkaException as exc:  # a producer left in a fatal state (e.g. refused by an ACL)
                log.warning("producer flush failed at stop", extra=kv(error=exc.args[0].str()))
        self.table.close()
        self.health.set_assigned(None)
        log.info("stopped", extra=kv(attempts_evaluated=self.stage.seen if self.stage else 0))

    # -- client callbacks --------------------------------------------------------------------------

    def _waiting(self, problem: str) -> None:
        """A wait or retry loop is turning: that is progress (liveness), and a reason not to be ready."""
        self.health.mark_progress()
        self.health.set_problem(problem)

    def _on_error(self, err: KafkaError) -> None:
        """librdkafka's global errors: transport problems flip readiness, auth problems are fatal."""
        code = err.code()
        if code in AUTH_ERRORS:
            self.context.fail(ConfigError(
                f"Kafka authentication/authorization failed ({err.str()}): check sasl.username / sasl.password / "
                "security.protocol (ACCESS_EVAL_KAFKA_SASL_USERNAME, ACCESS_EVAL_KAFKA_SASL_PASSWORD, --kafka-config)"
            ))
        elif code in (KafkaError._ALL_BROKERS_DOWN, KafkaError._TRANSPORT, KafkaError._RESOLVE):
            self._unreachable = True
            self.health.set_problem("broker unreachable")
            log.warning("kafka connection problem", extra=kv(error=err.str()))
        elif err.fatal():
            log.error("fatal kafka client error", extra=kv(error=err.str()))
