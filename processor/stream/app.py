"""Wiring for `access-eval run`: config -> logs -> metrics/health HTTP -> Kafka checks -> Processor."""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any

from processor import logs, signals, stacks
from processor.codec.avro import EvalCodec, load_schema_json
from processor.config import ConfigError, RunConfig, load
from processor.errors import EXIT_OK, EXIT_USAGE
from processor.health import Health, serve
from processor.kafka import clients
from processor.kafka.admin import StartupCancelled, ensure_topics, wait_for_cluster
from processor.logs import kv
from processor.metrics import Metrics
from processor.stream.loop import Processor

log = logging.getLogger("access_eval")



def build_codec(
    cfg: RunConfig, health: Health | None = None, stop: Callable[[], bool] = lambda: False
) -> EvalCodec:
    """Single-object framing by default; Confluent framing with a registered id when a registry is set.

    Registration is retried while the registry is unavailable (unready meanwhile; `stop()` ends the
    wait: StartupCancelled); a refusal (incompatible schema, credentials) is a ConfigError."""
    if not cfg.schema_registry_url:
        return EvalCodec()
    from processor.kafka import registry

    def waiting(problem: str | None) -> None:
        if health is not None:
            health.set_problem(problem)
            health.mark_progress()  # waiting with retries is alive, not stuck

    schema = load_schema_json()
    schema_id = registry.register_when_available(
        cfg.schema_registry_url, cfg.eval_topic, cfg.client_properties(), timeout_s=cfg.startup_timeout_s,
        stop=stop, waiting=waiting, schema=schema,
    )
    if schema_id is None:
        raise StartupCancelled
    return EvalCodec(schema_id=schema_id, schema=schema)


def _catch_early_signals() -> threading.Event:
    """SIGTERM/SIGINT before the Processor installs its handlers (e.g. while waiting for the schema
    registry) set an event instead of killing the process mid-start."""
    early = threading.Event()
    for s in (signal.SIGTERM, signal.SIGINT):
        signal.signal(s, lambda _n, _f: early.set())
    if signals.EARLY.is_set():  # received while the executable was still importing (processor.signals)
        early.set()
    return early


def run(flags: dict[str, Any]) -> int:
    """`access-eval run`; the process's SIGTERM/SIGINT handlers are restored when it returns."""
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        early = _catch_early_signals()  # first: a SIGTERM from here on is a clean stop, not a kill
        with stacks.on_request():  # before any thread starts: they leave SIGUSR1 to its answerer
            return _run(flags, early)
    finally:
        for s, handler in saved.items():
            signal.signal(s, handler)


def _run(flags: dict[str, Any], early_stop: threading.Event) -> int:
    try:
        cfg = load(flags)
        clients.check_properties(cfg.kafka_properties())
    except ConfigError as exc:
        print(f"access-eval run: {exc}", file=sys.stderr)
        return EXIT_USAGE
    logs.setup(cfg.log_level)
    try:
        metrics = Metrics(account_labels=cfg.account_label_set)
    except ValueError as exc:
        log.error(str(exc))
        return EXIT_USAGE
    # The liveness bound: how long no loop, wait or retry may turn before /livez fails (tests shorten it).
    health = Health(cfg.liveness_bound_s)
    server = serve(cfg.metrics_host, cfg.metrics_port, metrics, health)
    log.info("http listening", extra=kv(port=server.port, paths=["/metrics", "/livez", "/readyz"]))
    processor: Processor | None = None
    try:
        processor = Processor(cfg, metrics, health, build_codec(cfg, health, early_stop.is_set))
        processor.install_signal_handlers()
        if early_stop.is_set():
            processor.request_stop()
        props = cfg.kafka_properties()
        health.set_problem("connecting to kafka")
        admin = wait_for_cluster(
            props, cfg.startup_timeout_s, stop=lambda: processor.stopping, progress=health.mark_progress
        )
        health.set_problem(None)
        ensure_topics(
            admin,
            [
                (cfg.settings_topic, True),
                (cfg.attempts_topic, False),
                (cfg.eval_topic, False),
                (cfg.dlq_topic, False),
            ],
            create=cfg.create_topics,
            partitions=cfg.topic_partitions,
            configs={cfg.eval_topic: {"retention.ms": str(cfg.eval_retention_ms)}},
            stop=lambda: processor.stopping,
            progress=health.mark_progress,
        )
        return processor.run()
    except ConfigError as exc:
        log.error(str(exc))
        return EXIT_USAGE
    except StartupCancelled:
        log.info("stopped before Kafka or the schema registry was reachable")
        return EXIT_OK
    finally:
        if processor is not None:
            processor.release_signal_watch()
        server.close()
