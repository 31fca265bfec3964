"""Every Kafka client configuration access-eval builds, in one place.

Each function takes the user's librdkafka properties (bootstrap servers, SASL/SSL, overrides from
`--kafka-config` / `ACCESS_EVAL_KAFKA_*`) and returns the full configuration of one kind of client.
The callers construct the client; nothing here connects (`check_properties` builds a client with no
bootstrap servers, which never does). All clients route librdkafka's own log
lines through the JSON logger (`access_eval.librdkafka`), so none reach the terminal raw.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from typing import Any

from confluent_kafka import Consumer, KafkaException

from processor.config import DEFAULT_TRANSACTION_TIMEOUT_MS
from processor.errors import ConfigError
from processor.logs import RepeatFilter

LIBRDKAFKA_LOGGER = "access_eval.librdkafka"

#: librdkafka needs a group id to build a consumer even when it only uses assign() and joins no group.
TABLE_GROUP = "access-eval-settings-table"


def quiet_librdkafka(debug: bool = False) -> None:
    """For the operator tools and the demo: librdkafka's own lines (a refused connection to one of
    several bootstrap servers, a coordinator still loading...) are dropped, unless `debug`
    (ACCESS_EVAL_LOG_LEVEL=DEBUG); the tools report real failures themselves, in one line.
    `run` does not call this: there they reach the JSON log at their own level."""
    log = logging.getLogger(LIBRDKAFKA_LOGGER)
    log.propagate = debug
    if not debug and not log.handlers:
        log.addHandler(logging.NullHandler())
    if debug:
        log.setLevel(logging.DEBUG)


#: librdkafka repeats a failure per broker and retry: repeats within 10 s are collapsed into a count.
logging.getLogger(LIBRDKAFKA_LOGGER).addFilter(RepeatFilter(window_s=10.0))


def _base(props: Mapping[str, Any]) -> dict[str, Any]:
    return {**props, "logger": logging.getLogger(LIBRDKAFKA_LOGGER)}


#: Hints for properties that come from Java client configurations and librdkafka refuses.
_JAVA_ONLY = {
    "sasl.jaas.config": "a Java JAAS line; librdkafka takes sasl.mechanism, sasl.username and sasl.password "
                        "(ACCESS_EVAL_KAFKA_SASL_USERNAME, ACCESS_EVAL_KAFKA_SASL_PASSWORD) instead",
}


def check_properties(props: Mapping[str, Any]) -> None:
    """Raise ConfigError naming the first property librdkafka refuses (unknown name, bad value, a Java
    client's `sasl.jaas.config`), in one line and without its value (contract §8: exit 2, not a
    traceback from the first client built). The check builds a consumer without bootstrap servers:
    librdkafka validates every property when the client is created, and this one never connects."""
    if rejected := _rejects(props):
        name = next((k for k in props if k in _JAVA_ONLY), None) or _culprit(props, rejected)
        variable = "ACCESS_EVAL_KAFKA_" + name.upper().replace(".", "_") if name else "ACCESS_EVAL_KAFKA_*"
        hint = _JAVA_ONLY.get(name or "", rejected)
        raise ConfigError(f"Kafka client property {name or '?'!r} ({variable} or --kafka-config) is refused: {hint}")


def _rejects(props: Mapping[str, Any]) -> str | None:
    """librdkafka's reason for refusing the properties, or None."""
    quiet = logging.getLogger(LIBRDKAFKA_LOGGER + ".check")
    quiet.propagate = False
    if not quiet.handlers:
        quiet.addHandler(logging.NullHandler())
    conf = {k: v for k, v in props.items() if k != "bootstrap.servers"}
    try:
        Consumer({**conf, "group.id": TABLE_GROUP, "logger": quiet}).close()
    except KafkaException as exc:
        return str(exc.args[0].str() if exc.args and hasattr(exc.args[0], "str") else exc)
    return None


def _culprit(props: Mapping[str, Any], reason: str) -> str | None:
    """The property the reason names, else the first one refused on its own."""
    quoted = re.search(r'"([^"]+)"', reason)
    if quoted and quoted.group(1) in props:
        return quoted.group(1)
    return next((k for k in props if k != "bootstrap.servers" and _rejects({k: props[k]})), None)


def admin_conf(props: Mapping[str, Any], error_cb: Callable[[Any], None] | None = None) -> dict[str, Any]:
    """Admin client: metadata, topic creation and checks (client-kind-specific properties dropped)."""
    conf = _base({k: v for k, v in props.items() if not k.startswith(("transactional.", "group."))})
    if error_cb is not None:
        conf["error_cb"] = error_cb
    return conf


def probe_conf(bootstrap: str) -> dict[str, Any]:
    """An admin client that only asks whether a broker answers (the local broker's readiness probe):
    silent (it is expected to fail while the broker starts), short socket timeout."""
    return _base({"bootstrap.servers": bootstrap, "log_level": 0, "socket.timeout.ms": 5000})


def processor_consumer_conf(
    props: Mapping[str, Any],
    group_id: str,
    *,
    stats_cb: Callable[[str], None] | None = None,
    error_cb: Callable[[Any], None] | None = None,
) -> dict[str, Any]:
    """The attempts consumer of `run`: a group member that never commits by itself (offsets go into
    the transaction) and reads only committed input."""
    conf: dict[str, Any] = {
        # Fetch in chunks of 64 KB or every 20 ms, not one request per produced batch: at 57k
        # attempts/s this took the broker from 1.03 to 0.90 CPUs and commits from 13 to 9 ms
        # (bench/README.md). Both can be overridden like any librdkafka property.
        "fetch.min.bytes": 65_536,
        "fetch.wait.max.ms": 20,
        **_base(props),
        "group.id": group_id,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "isolation.level": "read_committed",
        "partition.assignment.strategy": "cooperative-sticky",
    }
    if stats_cb is not None:
        conf["statistics.interval.ms"] = 5000
        conf["stats_cb"] = stats_cb
    if error_cb is not None:
        conf["error_cb"] = error_cb
    return conf


def processor_producer_conf(
    props: Mapping[str, Any],
    transactional_id: str | None,
    *,
    error_cb: Callable[[Any], None] | None = None,
) -> dict[str, Any]:
    """The eval/DLQ producer of `run`: idempotent, batched; transactional when `transactional_id` is set."""
    conf: dict[str, Any] = {
        **_base(props),
        "enable.idempotence": True,
        "linger.ms": 10,
        "batch.size": 1_000_000,
        "compression.type": "lz4",
        "queue.buffering.max.messages": 1_000_000,
    }
    if error_cb is not None:
        conf["error_cb"] = error_cb
    if transactional_id is not None:
        conf["transactional.id"] = transactional_id
        # ACCESS_EVAL_KAFKA_TRANSACTION_TIMEOUT_MS overrides; --commit-interval-ms is checked against it
        conf.setdefault("transaction.timeout.ms", DEFAULT_TRANSACTION_TIMEOUT_MS)
    return conf


#: The settings reader's pre-fetch queue, kB.
TABLE_PREFETCH_KB = 4_096


def table_reader_conf(props: Mapping[str, Any], group_id: str = TABLE_GROUP) -> dict[str, Any]:
    """The settings table's reader: every partition by assign(), from the beginning, committed records only.
    `run` passes its own --group-id: librdkafka looks up the group's coordinator even for assign(), and
    the processor's group ACL then covers it (no ACL for a second, fixed group name)."""
    return {
        **_base(props),
        "group.id": group_id,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "enable.partition.eof": True,
        "isolation.level": "read_committed",
        "auto.offset.reset": "earliest",
        "fetch.wait.max.ms": 50,
        # The pre-fetch queue (64 MB by default) is resident on top of the table; 4 MB still keeps
        # a bootstrap fed (bench/README.md, "Fleet scale").
        "queued.max.messages.kbytes": TABLE_PREFETCH_KB,
        # ... and a full queue must not pause a partition's fetches for the default 1 s.
        "fetch.queue.backoff.ms": 10,
    }


def offsets_reader_conf(props: Mapping[str, Any], group_id: str = TABLE_GROUP) -> dict[str, Any]:
    """A second client that only asks end offsets: on the reading consumer's connection a ListOffsets
    request queues behind the outstanding long-poll Fetch (~50 ms per partition per refresh)."""
    return {
        **_base(props),
        "group.id": group_id,
        "enable.auto.commit": False,
        "isolation.level": "read_committed",
    }


def log_reader_conf(props: Mapping[str, Any], group_id: str, *, fetch_wait_ms: int = 100) -> dict[str, Any]:
    """A tool's reader of a whole topic (eval events, settings): assign() only, never joins or commits."""
    return {
        **_base(props),
        "group.id": group_id,  # required by librdkafka; never joined (assign only)
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "enable.partition.eof": True,
        "isolation.level": "read_committed",
        "auto.offset.reset": "earliest",
        "fetch.wait.max.ms": fetch_wait_ms,
    }


def viewer_conf(props: Mapping[str, Any], group_id: str) -> dict[str, Any]:
    """A live viewer (the demo's): subscribes from the end, commits nothing."""
    return {
        **_base(props),
        "group.id": group_id,
        "isolation.level": "read_committed",
        "auto.offset.reset": "latest",
        "enable.auto.commit": False,
    }


def publisher_conf(props: Mapping[str, Any], *, delivery_timeout_s: float | None = None) -> dict[str, Any]:
    """An idempotent producer that waits for all in-sync replicas (settings records, demo traffic)."""
    conf: dict[str, Any] = {**_base(props), "enable.idempotence": True, "acks": "all"}
    if delivery_timeout_s is not None:
        conf["message.timeout.ms"] = int(max(delivery_timeout_s, 1.0) * 1000)
    return conf
