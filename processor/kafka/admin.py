"""Topic checks and creation, and waiting for the cluster: everything that talks to the admin API."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, ClusterMetadata, ConfigResource, NewTopic  # type: ignore[attr-defined]

from processor.config import ConfigError
from processor.errors import EXIT_OK, AccessEvalError
from processor.kafka import clients
from processor.kafka.errors import ACL_HINT, AUTH_ERRORS
from processor.logs import kv

log = logging.getLogger("access_eval.kafka")

class StartupCancelled(AccessEvalError):
    """Asked to stop (SIGTERM) while still waiting for the cluster: a clean stop (exit 0)."""

    exit_code = EXIT_OK


def wait_for_cluster(
    props: dict[str, str],
    timeout_s: float,
    *,
    attempt_timeout_s: float = 5.0,
    stop: Callable[[], bool] = lambda: False,
    progress: Callable[[], None] = lambda: None,
) -> AdminClient:
    """Block until a metadata request succeeds (timeout 0 = forever), with backoff and clear logs;
    raise StartupCancelled if `stop()` turns true meanwhile (SIGTERM while the broker is unreachable)."""
    deadline = time.monotonic() + timeout_s if timeout_s > 0 else None
    backoff = 0.5
    errors: list[KafkaError] = []

    def on_error(err: KafkaError) -> None:
        errors.append(err)

    client = AdminClient(clients.admin_conf(props, error_cb=on_error))
    while not stop():
        progress()
        try:
            client.list_topics(timeout=attempt_timeout_s)
            return client
        except KafkaException as exc:
            err = exc.args[0]
            client.poll(0)  # serves error_cb: a failed SASL handshake only shows there, not in err
            if any(e.code() in AUTH_ERRORS for e in errors) or err.code() in AUTH_ERRORS:
                raise ConfigError(
                    "Kafka authentication/authorization failed: check sasl.username / sasl.password / "
                    "security.protocol (ACCESS_EVAL_KAFKA_SASL_USERNAME, ACCESS_EVAL_KAFKA_SASL_PASSWORD, "
                    "ACCESS_EVAL_KAFKA_SECURITY_PROTOCOL or --kafka-config)"
                ) from None
            if deadline is not None and time.monotonic() > deadline:
                raise ConfigError(
                    f"cannot reach Kafka at --bootstrap-servers / ACCESS_EVAL_BOOTSTRAP_SERVERS="
                    f"{props.get('bootstrap.servers')!r} within {timeout_s:g}s: {err.str()}"
                ) from None
            log.warning(
                "kafka not reachable yet; retrying",
                extra=kv(bootstrap=props.get("bootstrap.servers"), error=err.str(), retry_in_s=backoff),
            )
            until = time.monotonic() + backoff
            while time.monotonic() < until and not stop():
                progress()  # waiting for the broker is progress (liveness), not a hung process
                time.sleep(0.1)  # a retry backoff, not a synchronisation wait
            backoff = min(backoff * 2, 10.0)
    raise StartupCancelled


def ensure_topics(
    client: AdminClient,
    topics: Iterable[tuple[str, bool]],
    *,
    create: bool,
    partitions: int,
    replication_factor: int = -1,
    configs: Mapping[str, Mapping[str, str]] | None = None,
    stop: Callable[[], bool] = lambda: False,
    progress: Callable[[], None] = lambda: None,
) -> None:
    """Check (or create) topics; `(name, compacted)`. A missing topic without --create-topics fails fast.
    `configs`: topic configs by name, set on topics this creates (e.g. the eval topic's retention.ms).
    Metadata requests that fail (a broker restarting) are retried with backoff; `stop()` ends the
    wait (StartupCancelled), `progress()` reports each retry (liveness)."""
    wanted = list(topics)
    metadata = _metadata(client, stop, progress)
    existing = metadata.topics
    missing = [(n, c) for n, c in wanted if n not in existing]
    if missing and not create:
        names = ", ".join(n for n, _ in missing)
        raise ConfigError(
            f"topic(s) missing: {names}; create them or pass --create-topics (ACCESS_EVAL_CREATE_TOPICS=true)"
        )
    if missing:
        rf, durability = replication_for(len(metadata.brokers), replication_factor)
        new = [
            NewTopic(
                n,
                num_partitions=1 if compacted else partitions,
                replication_factor=rf,
                config={**durability, **({"cleanup.policy": "compact"} if compacted else {}),
                        **(configs or {}).get(n, {})},
            )
            for n, compacted in missing
        ]
        for name, fut in client.create_topics(new, operation_timeout=30).items():
            try:
                fut.result()
                log.info("topic created", extra=kv(topic=name, config=dict((configs or {}).get(name, {}))))
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise ConfigError(f"cannot create topic {name}: {exc.args[0].str()}") from None
        _wait_topics(client, [n for n, _ in missing], stop, progress)
    for name, compacted in wanted:
        if compacted:
            _warn_if_not_compacted(client, name)


def replication_for(brokers: int, requested: int = -1) -> tuple[int, dict[str, str]]:
    """Replication of created topics: as requested, else 3 with min.insync.replicas=2 on a cluster of
    3+ brokers (a broker may fail without losing an acknowledged record or blocking writes), else the
    broker's default (a single development broker)."""
    if requested > 0:
        return requested, {}
    if brokers >= 3:
        return 3, {"min.insync.replicas": "2"}
    return -1, {}


def _metadata(client: AdminClient, stop: Callable[[], bool], progress: Callable[[], None]) -> ClusterMetadata:
    """list_topics, retried with backoff while it fails with a Kafka error (authorization fails fast)."""
    backoff = 0.5
    while True:
        try:
            return client.list_topics(timeout=10)
        except KafkaException as exc:
            err = exc.args[0]
            if err.code() in AUTH_ERRORS:
                raise ConfigError(f"Kafka authorization failed listing topics: {err.str()}: {ACL_HINT}") from None
            log.warning("cannot list topics; retrying", extra=kv(error=err.str(), retry_in_s=backoff))
            until = time.monotonic() + backoff
            while time.monotonic() < until:
                if stop():
                    raise StartupCancelled from None
                progress()  # waiting for the broker is progress (liveness), not a hung process
                time.sleep(0.1)  # a retry backoff, in slices that notice a stop
            backoff = min(backoff * 2, 10.0)


def _wait_topics(client: AdminClient, names: list[str], stop: Callable[[], bool] = lambda: False,
                 progress: Callable[[], None] = lambda: None, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if stop():
            raise StartupCancelled
        progress()
        try:
            md = client.list_topics(timeout=5).topics
        except KafkaException:  # created topics' metadata may lag (a broker restarting): within the deadline
            time.sleep(0.1)  # polling a condition with a deadline
            continue
        # Created topics are usable once every partition has a leader (before that, reads of their
        # end offsets fail with NOT_LEADER_FOR_PARTITION).
        if all(n in md and not md[n].error and md[n].partitions
               and all(p.leader >= 0 for p in md[n].partitions.values()) for n in names):
            return
        time.sleep(0.1)  # polling a condition with a deadline
    raise ConfigError(f"topics {names} not visible in metadata after {timeout_s:g}s")


def _warn_if_not_compacted(client: AdminClient, topic: str) -> None:
    try:
        res = ConfigResource(ConfigResource.Type.TOPIC, topic)
        configs = client.describe_configs([res])[res].result(timeout=10)
        policy = configs["cleanup.policy"].value
    except Exception as exc:  # describe may be denied by ACLs; the check is advisory
        log.warning("cannot check cleanup.policy of settings topic", extra=kv(topic=topic, error=str(exc)))
        return
    if "compact" not in (policy or ""):
        log.warning(
            "settings topic is not compacted: old settings versions may be deleted by retention, "
            "and start-up reads every record; set cleanup.policy=compact",
            extra=kv(topic=topic, cleanup_policy=policy),
        )
