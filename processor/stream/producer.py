"""The transactional producer of `run`, with a hard limit on every transactional call.

librdkafka's transactional calls take a timeout, but some ignore it (confluentinc/librdkafka#5456,
#5511: `send_offsets_to_transaction` can block forever once the group coordinator went away). Each
call therefore runs on a helper thread; one that outlives `TXN_CALL_HUNG_S` raises a fatal error, so
the transaction's failure policy replaces the producer (the new one, same transactional.id, fences
the hung one and aborts its transaction).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer, TopicPartition

from processor.config import DEFAULT_TRANSACTION_TIMEOUT_MS, ConfigError
from processor.errors import AccessEvalError
from processor.kafka import clients
from processor.logs import kv

log = logging.getLogger("access_eval.pipeline")

#: Timeout given to librdkafka's transactional calls, and the hard limit after which a call that ignored
#: it counts as hung.
TXN_CALL_TIMEOUT_S = 10.0
TXN_CALL_HUNG_S = 20.0
#: A transactional call blocked this long (the broker went away mid-call) makes the instance unready.
BLOCKED_UNREADY_S = 5.0

#: The factory of the underlying client; tests and benchmarks may pass their own.
ProducerFactory = Callable[[dict[str, Any]], Any]


class StopRequested(AccessEvalError):
    """Asked to stop while waiting to (re)initialise the transactional producer."""


class TxnProducer:
    """One producer of eval events and dead letters; transactional when `transactional_id` is set.

    `produce` and `poll` are the client's own bound methods (the hot path calls them directly).
    """

    def __init__(
        self,
        props: dict[str, Any],
        transactional_id: str | None,
        *,
        error_cb: Callable[[KafkaError], None] | None = None,
        on_retry: Callable[[str], None] | None = None,
        factory: ProducerFactory = Producer,
        stop: Callable[[], bool] = lambda: False,
        progress: Callable[[], None] = lambda: None,
    ) -> None:
        self.conf = clients.processor_producer_conf(props, transactional_id, error_cb=error_cb)
        #: marks liveness before each call that may block for long (TXN_CALL_HUNG_S, init_transactions'
        #: 30 s): a chain of slow but successful calls is progress, each bounded on its own
        self._progress = progress
        self.transactional = transactional_id is not None
        #: the broker aborts a transaction open longer than this (transaction.timeout.ms)
        self.timeout_s = int(self.conf.get("transaction.timeout.ms", DEFAULT_TRANSACTION_TIMEOUT_MS)) / 1000
        self.transactional_id = transactional_id
        #: at-least-once: deliveries that failed for good since the transaction began (reset by it)
        self.failed_deliveries = 0
        if not self.transactional:
            # Without a delivery callback a record that could not be written is only dropped, and its
            # offset would commit; only failures are reported (the hot path pays nothing for successes).
            self.conf["on_delivery"] = self._on_delivery
            self.conf["delivery.report.only.error"] = True
        self._stop = stop
        self._factory = factory
        self._on_retry = on_retry or (lambda _msg: None)
        self._caller = _Caller()
        #: when the transactional call in flight began (None: none in flight); read by a watchdog thread
        self.blocked_since: float | None = None
        self.client: Any = None
        self.produce: Callable[..., None]
        self.poll: Callable[[float], int]
        self.replace()

    def replace(self) -> None:
        """A new client; with a transactional id its init fences the previous one and aborts its transaction."""
        client = self._factory(self.conf)
        if self.transactional:
            box = [client]

            def init() -> None:
                self._progress()
                try:
                    box[0].init_transactions(30)
                except KafkaException as exc:
                    if exc.args[0].fatal():  # that client is unusable: the retry needs a new one
                        box[0] = self._factory(self.conf)
                    raise

            _retry_forever(init, "init_transactions", self._on_retry, self._stop)
            client = box[0]
        self.client = client
        self.produce = client.produce
        self.poll = client.poll

    def _on_delivery(self, err: KafkaError | None, _msg: Any) -> None:
        if err is not None:
            self.failed_deliveries += 1
            log.warning("delivery failed", extra=kv(error=err.str()))

    def begin(self) -> None:
        self.client.begin_transaction()

    def send_offsets(self, offsets: list[TopicPartition], group_metadata: Any) -> None:
        self._call(self.client.send_offsets_to_transaction, offsets, group_metadata)

    def commit(self) -> None:
        self._call(self.client.commit_transaction)

    def abort(self) -> None:
        self._call(self.client.abort_transaction)

    def flush(self, timeout_s: float) -> int:
        return int(self.client.flush(timeout_s))

    def blocked_for(self) -> float:
        """Seconds the transactional call in flight has been blocked (0 when none is)."""
        since = self.blocked_since
        return 0.0 if since is None else time.monotonic() - since

    def _call(self, fn: Callable[..., Any], *args: Any) -> None:
        self._progress()
        self.blocked_since = time.monotonic()
        try:
            returned = self._caller.call(lambda: fn(*args, TXN_CALL_TIMEOUT_S), TXN_CALL_HUNG_S)
        finally:
            self.blocked_since = None
            self._progress()
        if not returned:
            self._caller = _Caller()  # the old one's thread stays blocked in librdkafka
            name = getattr(fn, "__name__", "transactional call")
            log.error("transactional call hung past its timeout; replacing the producer",
                      extra=kv(call=name, hung_s=TXN_CALL_HUNG_S))
            raise KafkaException(KafkaError(KafkaError._TIMED_OUT, f"{name} hung", fatal=True))


#: init_transactions errors that retrying cannot fix, and the setting to look at.
INIT_MISCONFIGURED = {
    KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED: "the ACLs of --transactional-id / ACCESS_EVAL_TRANSACTIONAL_ID",
    KafkaError.CLUSTER_AUTHORIZATION_FAILED: "the cluster ACLs of the SASL user (ACCESS_EVAL_KAFKA_SASL_USERNAME)",
    KafkaError.INVALID_TRANSACTION_TIMEOUT: "transaction.timeout.ms (ACCESS_EVAL_KAFKA_TRANSACTION_TIMEOUT_MS; "
    "at most the broker's transaction.max.timeout.ms)",
    KafkaError._INVALID_ARG: "the Kafka client properties (--kafka-config)",
}


def _retry_forever(
    fn: Callable[[], Any], what: str, on_retry: Callable[[str], None], stop: Callable[[], bool] = lambda: False
) -> None:
    """Retry a Kafka error with backoff until it succeeds; `on_retry` reports each wait (liveness, readiness).
    Raises ConfigError (one line naming the setting) for a misconfiguration retrying cannot fix, and
    StopRequested when `stop()` turns true meanwhile."""
    backoff = 0.5
    while True:
        try:
            fn()
            return
        except KafkaException as exc:
            err = exc.args[0]
            hint = INIT_MISCONFIGURED.get(err.code())
            if hint is not None:
                raise ConfigError(f"{what} failed: {err.str()}: check {hint}") from None
            on_retry(f"{what} failed: {err.str()}")
            log.warning(f"{what} failed; retrying", extra=kv(error=err.str(), retry_in_s=backoff))
            until = time.monotonic() + backoff
            while time.monotonic() < until:
                if stop():
                    raise StopRequested(what) from None
                on_retry(f"{what} failed: {err.str()}")
                time.sleep(min(0.1, backoff))  # retry backoff, in slices that notice a stop
            if stop():
                raise StopRequested(what) from None
            backoff = min(backoff * 2, 10.0)


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
