"""Wiring for `access-eval run`: config -> logs -> metrics/health HTTP -> Kafka checks -> Processor."""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

from processor import logs
from processor.codec.avro import EvalCodec
from processor.config import ConfigError, RunConfig, load
from processor.health import DEFAULT_IDLE_DEADLINE_S, Health, serve
from processor.kafka.admin import StartupCancelled, ensure_topics, wait_for_cluster
from processor.logs import kv
from processor.metrics import Metrics
from processor.stream.loop import Processor

log = logging.getLogger("access_eval")

EXIT_CONFIG = 2


def build_codec(cfg: RunConfig) -> EvalCodec:
    """Single-object framing by default; Confluent framing with a registered id when a registry is set."""
    if not cfg.schema_registry_url:
        return EvalCodec()
    from processor.kafka import registry

    return registry.codec_for_topic(cfg.schema_registry_url, cfg.eval_topic, cfg.client_properties())


def run(flags: dict[str, Any]) -> int:
    try:
        cfg = load(flags)
    except ConfigError as exc:
        print(f"access-eval run: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    logs.setup(cfg.log_level)
    try:
        metrics = Metrics(account_labels=cfg.account_label_set)
    except ValueError as exc:
        log.error(str(exc))
        return EXIT_CONFIG
    # The liveness bound: how long no loop, wait or retry may turn before /livez fails (tests shorten it).
    health = Health(float(os.environ.get("ACCESS_EVAL_LIVENESS_BOUND_S", DEFAULT_IDLE_DEADLINE_S)))
    server = serve(cfg.metrics_host, cfg.metrics_port, metrics, health)
    log.info("http listening", extra=kv(port=server.port, paths=["/metrics", "/livez", "/readyz"]))
    try:
        processor = Processor(cfg, metrics, health, build_codec(cfg))
        processor.install_signal_handlers()
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
        )
        return processor.run()
    except ConfigError as exc:
        log.error(str(exc))
        return EXIT_CONFIG
    except StartupCancelled:
        log.info("stopped before Kafka was reachable")
        return 0
    finally:
        server.close()
