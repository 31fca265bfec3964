"""The tools' way to Kafka: the user's properties (file, then environment), the broker check that turns
an unreachable or refusing cluster into one line, and topic look-ups that name the flag to fix."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Protocol

from processor.config import KAFKA_ENV_PREFIX, kafka_only, read_properties
from processor.errors import OpsError, usage_error
from processor.kafka import clients


class KafkaFlags(Protocol):
    """What reaching Kafka takes from a command's flags: a typed options object or argparse's namespace."""

    @property
    def bootstrap_servers(self) -> str | None: ...

    @property
    def kafka_config(self) -> str | None: ...


def raw_properties(args: KafkaFlags) -> dict[str, str]:
    """The properties file (--kafka-config / ACCESS_EVAL_KAFKA_CONFIG), then ACCESS_EVAL_KAFKA_* variables."""
    props: dict[str, str] = {}
    path = args.kafka_config or os.environ.get("ACCESS_EVAL_KAFKA_CONFIG")
    if path:
        props.update(read_properties(Path(path)))
    for name, value in os.environ.items():
        if name.startswith(KAFKA_ENV_PREFIX) and name != "ACCESS_EVAL_KAFKA_CONFIG":
            props[name[len(KAFKA_ENV_PREFIX) :].lower().replace("_", ".")] = value
    return props


def kafka_props(args: KafkaFlags) -> dict[str, Any]:
    """The user's librdkafka properties for the tools: pass-through properties + bootstrap servers.
    Each client's own configuration is built from them by `processor.kafka.clients`."""
    bootstrap = args.bootstrap_servers or os.environ.get("ACCESS_EVAL_BOOTSTRAP_SERVERS")
    if not bootstrap:
        usage_error("--bootstrap-servers (or ACCESS_EVAL_BOOTSTRAP_SERVERS) is required")
    props: dict[str, Any] = kafka_only(raw_properties(args))
    props["bootstrap.servers"] = bootstrap
    clients.check_properties(props)  # a refused property: one line naming it, exit 2 (ConfigError)
    return props


def connect(props: dict[str, Any], timeout_s: float) -> Any:
    """An AdminClient on a cluster that answered a metadata request, or OpsError (one line)."""
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import AdminClient

    from processor.kafka.errors import AUTH_ERRORS

    errors: list[KafkaError] = []
    admin = AdminClient(clients.admin_conf(props, error_cb=errors.append))
    try:
        admin.list_topics(timeout=timeout_s)
    except KafkaException as exc:
        err: KafkaError = exc.args[0]
        admin.poll(0)  # serves error_cb (a failed SASL handshake only shows there) and librdkafka's log lines
        codes = {e.code() for e in errors} | {err.code()}
        if codes & AUTH_ERRORS:
            raise OpsError(
                "Kafka authentication/authorization failed: check sasl.* / security.protocol in --kafka-config "
                "or ACCESS_EVAL_KAFKA_* variables"
            ) from None
        detail = errors[-1].str() if errors else err.str()
        raise OpsError(
            f"cannot reach Kafka at --bootstrap-servers {props['bootstrap.servers']} within {timeout_s:g}s: {detail}"
        ) from None
    return admin


def topic_partitions(admin: Any, topic: str, flag: str) -> list[int]:
    md = admin.list_topics(topic=topic, timeout=10).topics.get(topic)
    if md is None or md.error is not None or not md.partitions:
        from confluent_kafka import KafkaError

        if md is None or md.error is None or md.error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
            raise OpsError(
                f"topic {topic!r} ({flag}) does not exist: check the name, or create it "
                "(`access-eval run --create-topics` creates the processor's topics)"
            )
        raise OpsError(f"topic {topic!r} ({flag}): {md.error.str()}")
    return sorted(md.partitions)


def topic_exists(admin: Any, topic: str) -> bool:
    md = admin.list_topics(timeout=10).topics.get(topic)
    return md is not None and md.error is None and bool(md.partitions)
