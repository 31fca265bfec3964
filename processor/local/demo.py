"""`access-eval demo`: local Kafka + the processor + generated traffic, with a live view.

The README's first command. Everything here is the real product on a real broker; only the
traffic is made up.
"""

from __future__ import annotations

import contextlib
import json
import sys
import threading
import time
from collections import deque
from typing import Any

from confluent_kafka import Consumer, Producer

from processor.codec.avro import DecodeError, EvalCodec
from processor.config import RunConfig
from processor.core.display import printable
from processor.core.events import to_json_obj
from processor.core.policy import OUTCOMES
from processor.errors import EXIT_FAIL, EXIT_OK, EXIT_USAGE, LocalKafkaError
from processor.health import Health, serve
from processor.kafka import clients
from processor.kafka.admin import ensure_topics, wait_for_cluster
from processor.local import broker
from processor.local.workload import Mix, Workload
from processor.metrics import Metrics
from processor.stream.loop import Processor
from processor.tools.common import confirm, debug_logging

DEMO_GROUP = "access-eval-demo"


def _counter_values(metrics: Metrics, name: str, label: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for family in metrics.registry.collect():
        for s in family.samples:
            if s.name == name:
                out[s.labels.get(label, "")] = out.get(s.labels.get(label, ""), 0.0) + s.value
    return out


def _generate(producer: Producer, topic: str, workload: Workload, rate: float, stop: threading.Event) -> None:
    """Publish attempts at `rate`/s with event_time = now, until stopped."""
    started = time.monotonic()
    for sent, (key, value, _) in enumerate(workload.attempts(10**9, step_ms=None), 1):
        if stop.is_set():
            break
        producer.produce(topic, value, key)
        producer.poll(0)
        ahead = sent / rate - (time.monotonic() - started)
        if ahead > 0:
            stop.wait(ahead)  # pacing the offered rate
    producer.flush(10)


#: Topic names of the demo on a cluster it did not start: never the production defaults.
DEMO_TOPIC_PREFIX = "access-eval-demo."
TOPIC_FIELDS = ("settings_topic", "attempts_topic", "eval_topic", "dlq_topic")


def demo_topics(foreign: bool, given: dict[str, str | None]) -> dict[str, str]:
    """The four topic names: as given, else the defaults of `run` on the local broker the demo
    started itself, else demo-prefixed defaults (`access-eval-demo.iam.account-settings`)."""
    out = {}
    for name in TOPIC_FIELDS:
        default: str = RunConfig.model_fields[name].default
        value = given.get(name)
        out[name] = value if value else (DEMO_TOPIC_PREFIX + default if foreign else default)
    return out


def _confirmed(bootstrap: str, topics: dict[str, str], yes: bool) -> int | None:
    """None to go on; else the exit status (2 without a terminal and without --yes, 1 when declined)."""
    if yes:
        return None
    what = (
        f"made-up settings (some accounts limited) to {topics['settings_topic']} and sample traffic to "
        f"{topics['attempts_topic']} on {bootstrap}"
    )
    if not sys.stdin.isatty():
        print(
            f"access-eval demo: refusing to write {what} without confirmation: stdin is not a terminal; pass --yes",
            file=sys.stderr,
        )
        return EXIT_USAGE
    if confirm(f"The demo writes {what} (missing topics are created). Continue? [y/N] "):
        return None
    print("access-eval demo: not started", file=sys.stderr)
    return EXIT_FAIL


def main(
    bootstrap: str | None,
    duration: float | None,
    rate: float,
    metrics_port: int,
    *,
    topic_names: dict[str, str | None] | None = None,
    yes: bool = False,
) -> int:
    out = sys.stdout
    clients.quiet_librdkafka(debug=debug_logging())
    foreign = bootstrap is not None
    topics = demo_topics(foreign, topic_names or {})
    if bootstrap is not None:
        refused = _confirmed(bootstrap, topics, yes)
        if refused is not None:
            return refused
    else:
        print("Starting the local Kafka broker (first run downloads it from Maven Central)...", file=out)
        try:
            info = broker.start()
        except LocalKafkaError as exc:
            print(f"access-eval demo: {exc}", file=sys.stderr)
            return EXIT_FAIL
        bootstrap = info.bootstrap
        print(f"bootstrap: {bootstrap}", file=out)
    cfg = RunConfig(
        bootstrap_servers=bootstrap,
        group_id=DEMO_GROUP,
        create_topics=True,
        topic_partitions=3,
        metrics_port=metrics_port,
        log_level="WARNING",
        settings_topic=topics["settings_topic"],
        attempts_topic=topics["attempts_topic"],
        eval_topic=topics["eval_topic"],
        dlq_topic=topics["dlq_topic"],
    )
    props = cfg.kafka_properties()
    admin = wait_for_cluster(props, 60)
    topic_list = [(cfg.settings_topic, True), (cfg.attempts_topic, False), (cfg.eval_topic, False),
                  (cfg.dlq_topic, False)]
    ensure_topics(
        admin, topic_list, create=True, partitions=3,
        configs={cfg.eval_topic: {"retention.ms": str(cfg.eval_retention_ms)}},
    )

    workload = Workload(seed=int(time.time()) % 1000, accounts=9, allowlist_max=3, mix=Mix(invalid=0.02))
    producer = Producer(clients.publisher_conf(props))
    for doc in workload.settings():
        producer.produce(cfg.settings_topic, json.dumps(doc).encode(), str(doc["account_id"]).encode())
    producer.flush(10)
    print(f"Published settings for {workload.accounts} accounts (enabled, monitor, limited; all identity types).")

    metrics = Metrics()
    health = Health()
    try:
        server = serve("127.0.0.1", metrics_port, metrics, health)
    except OSError:
        server = serve("127.0.0.1", 0, metrics, health)
    print(f"Metrics: {server.url}/metrics   health: {server.url}/readyz")
    codec = EvalCodec()
    processor = Processor(cfg, metrics, health, codec)
    worker = threading.Thread(target=processor.run, name="processor", daemon=True)
    worker.start()
    stop = threading.Event()
    gen = threading.Thread(target=_generate, args=(producer, cfg.attempts_topic, workload, rate, stop), daemon=True)
    gen.start()

    reader = Consumer(clients.viewer_conf(props, f"{DEMO_GROUP}-viewer-{time.time_ns()}"))
    reader.subscribe([cfg.eval_topic])
    recent: deque[dict[str, Any]] = deque(maxlen=3)
    started = time.monotonic()
    last_print = started
    last_total = 0.0
    try:
        while duration is None or time.monotonic() - started < duration:
            msg = reader.poll(0.2)
            if msg is not None and msg.error() is None and msg.value():
                with contextlib.suppress(DecodeError):  # a foreign message on the topic: skip it in the view
                    recent.append(to_json_obj(codec.decode(msg.value() or b"")))
            now = time.monotonic()
            if now - last_print >= 2:
                outcomes = _counter_values(metrics, "access_eval_attempts_total", "outcome")
                total = sum(outcomes.values())
                print(f"\n[{now - started:5.0f}s] {(total - last_total) / (now - last_print):7.1f} attempts/s  "
                      f"ready={health.readiness()[0]}  committed: " +
                      "  ".join(f"{o}={int(outcomes.get(o, 0))}" for o in OUTCOMES), file=out)
                for ev in list(recent):
                    rd = ev["responseData"]
                    print(f"   {ev['eventTime']} {rd['decision']:6} enforced={rd['isEnforced']!s:5} "
                          f"state={rd['state']:7} {ev['initiator']['typeURI']:10} "
                          f"{printable(ev['initiator']['authnAccountId'][:8])}.. -> "
                          f"{printable(ev['target']['accountId'][:8])}..", file=out)
                out.flush()
                last_print, last_total = now, total
    except KeyboardInterrupt:
        pass
    stop.set()
    gen.join(15)
    processor.request_stop()
    worker.join(30)
    reader.close()
    server.close()
    outcomes = _counter_values(metrics, "access_eval_attempts_total", "outcome")
    print("\nSummary (committed):", json.dumps({o: int(outcomes.get(o, 0)) for o in OUTCOMES}), file=out)
    print(f"Topics: settings={cfg.settings_topic} attempts={cfg.attempts_topic} evals={cfg.eval_topic} "
          f"dlq={cfg.dlq_topic}", file=out)
    print(f"Read the eval events:  access-eval tail --bootstrap-servers {bootstrap} --eval-topic {cfg.eval_topic} "
          "--from-beginning --limit 10", file=out)
    if not foreign:
        print("Stop the local broker: access-eval local stop", file=out)
    return EXIT_OK
