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
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

from confluent_kafka import Consumer, Producer

from processor.codec.avro import DecodeError, EvalCodec
from processor.config import RunConfig
from processor.core.display import printable, shell_command
from processor.core.events import to_json_obj
from processor.core.outcomes import OUTCOMES
from processor.errors import EXIT_FAIL, EXIT_OK, EXIT_USAGE, LocalKafkaError, OpsError
from processor.health import Health, serve
from processor.kafka import clients
from processor.kafka.admin import ensure_topics, wait_for_cluster
from processor.local import broker
from processor.local.demo_traffic import HISTORY_DAYS, DemoTraffic
from processor.local.publish import send_all
from processor.metrics import Metrics
from processor.stream.loop import Processor
from processor.tools.prompt import confirm
from processor.tools.report import ReportOptions, regenerate_command, run_report
from processor.tools.runner import debug_logging

DEMO_GROUP = "access-eval-demo"
DEFAULT_SEED = 7
#: Where the demo writes its report pages, under the working directory (`--pages-dir` changes it).
PAGES_DIR = "access-eval-demo-pages"


def _counter_values(metrics: Metrics, name: str, label: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for family in metrics.registry.collect():
        for s in family.samples:
            if s.name == name:
                out[s.labels.get(label, "")] = out.get(s.labels.get(label, ""), 0.0) + s.value
    return out


def _generate(producer: Producer, topic: str, traffic: DemoTraffic, rate: float, stop: threading.Event) -> None:
    """Publish live attempts at `rate`/s with event_time = now, until stopped."""
    started = time.monotonic()

    def clock() -> Iterator[int]:
        while True:
            yield int(time.time() * 1000)

    for sent, (key, value) in enumerate(traffic.live(clock()), 1):
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
    seed: int = DEFAULT_SEED,
    pages_dir: Path | None = None,
) -> int:
    out = sys.stdout
    clients.quiet_librdkafka(debug=debug_logging())
    foreign = bootstrap is not None
    topics = demo_topics(foreign, topic_names or {})
    bootstrap, refused = _cluster(bootstrap, topics, yes, out)
    if bootstrap is None:
        return refused
    cfg = _config(bootstrap, topics, metrics_port)
    props = cfg.kafka_properties()
    _prepare_topics(cfg, props)
    traffic = DemoTraffic(seed=seed, run_tag=f"{time.time_ns() // 1_000_000:x}")
    producer = Producer(clients.publisher_conf(props))
    _publish_settings(producer, cfg, traffic)
    n_history = _publish_history(producer, cfg.attempts_topic, traffic)
    print(f"Published {n_history:,} attempts of the past {HISTORY_DAYS} days (the report's trend), then live "
          f"traffic at {rate:g}/s.", file=out)

    metrics = Metrics()
    health = Health()
    try:
        server = serve("127.0.0.1", metrics_port, metrics, health)
    except OSError:
        server = serve("127.0.0.1", 0, metrics, health)
    print(f"Metrics: {server.url}/metrics   health: {server.url}/readyz")
    processor = Processor(cfg, metrics, health, EvalCodec())
    worker = threading.Thread(target=processor.run, name="processor", daemon=True)
    worker.start()
    stop = threading.Event()
    gen = threading.Thread(target=_generate, args=(producer, cfg.attempts_topic, traffic, rate, stop), daemon=True)
    gen.start()
    _live_view(cfg, props, metrics, health, duration, out)
    stop.set()
    gen.join(15)
    processor.request_stop()
    worker.join(30)
    server.close()
    outcomes = _counter_values(metrics, "access_eval_attempts_total", "outcome")
    print("\nSummary (committed):", json.dumps({o: int(outcomes.get(o, 0)) for o in OUTCOMES}), file=out)
    print(f"Topics: settings={cfg.settings_topic} attempts={cfg.attempts_topic} evals={cfg.eval_topic} "
          f"dlq={cfg.dlq_topic}", file=out)
    print("Read the eval events:  " + shell_command(["access-eval", "tail", "--bootstrap-servers", bootstrap,
                                                      "--eval-topic", cfg.eval_topic, "--from-beginning", "--limit",
                                                      "10"]), file=out)
    _write_pages(cfg, props, bootstrap, traffic, (pages_dir or Path(PAGES_DIR)).resolve(), out)
    if not foreign:
        print("Stop the local broker: access-eval local stop", file=out)
    return EXIT_OK


def _cluster(bootstrap: str | None, topics: dict[str, str], yes: bool, out: TextIO) -> tuple[str | None, int]:
    """The cluster to use: the one given (after confirmation) or the local broker, started here;
    (None, exit status) when the demo must not go on."""
    if bootstrap is not None:
        refused = _confirmed(bootstrap, topics, yes)
        return (None, refused) if refused is not None else (bootstrap, EXIT_OK)
    print("Starting the local Kafka broker (first run downloads it from Maven Central)...", file=out)
    try:
        info = broker.start()
    except LocalKafkaError as exc:
        print(f"access-eval demo: {exc}", file=sys.stderr)
        return None, EXIT_FAIL
    print(f"bootstrap: {info.bootstrap}", file=out)
    return info.bootstrap, EXIT_OK


def _config(bootstrap: str, topics: dict[str, str], metrics_port: int) -> RunConfig:
    return RunConfig(
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


def _prepare_topics(cfg: RunConfig, props: dict[str, Any]) -> None:
    admin = wait_for_cluster(props, 60)
    topic_list = [(cfg.settings_topic, True), (cfg.attempts_topic, False), (cfg.eval_topic, False),
                  (cfg.dlq_topic, False)]
    ensure_topics(
        admin, topic_list, create=True, partitions=3,
        configs={cfg.eval_topic: {"retention.ms": str(cfg.eval_retention_ms)}},
    )


def _publish_settings(producer: Producer, cfg: RunConfig, traffic: DemoTraffic) -> None:
    """The demo's accounts (the same for a seed on every run: their records replace themselves)."""
    for key, value in traffic.settings():
        producer.produce(cfg.settings_topic, value, key)
    producer.flush(10)
    print(f"Published settings for {len(traffic.targets)} accounts (seed {traffic.seed}; a second run reuses them):")
    for t in traffic.targets:
        print(f"  {t.account}  {t.state:8} {t.role}")


def _publish_history(producer: Producer, topic: str, traffic: DemoTraffic) -> int:
    """The past days' attempts, published before the live traffic starts."""
    n, _ = send_all(producer, topic, traffic.history(int(time.time() * 1000)))
    producer.flush(30)
    return n


def _live_view(
    cfg: RunConfig, props: dict[str, Any], metrics: Metrics, health: Health, duration: float | None, out: TextIO
) -> None:
    """Every 2 s: the rate, readiness, committed outcomes and the latest events; until the duration or Ctrl-C."""
    codec = EvalCodec()
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
    finally:
        reader.close()


def _write_pages(
    cfg: RunConfig, props: dict[str, Any], bootstrap: str, traffic: DemoTraffic, where: Path, out: TextIO
) -> None:
    """The fleet page and the page of the account that is ready after a few additions, with the
    commands that write them again."""
    account = traffic.target("ready after adding a few").account
    try:
        where.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        print(f"access-eval demo: cannot create {where} for the report pages: {exc.strerror}", file=sys.stderr)
        return
    print("\nReport pages:", file=out)
    for name, acct in (("fleet.html", None), (f"account-{account}.html", account)):
        opts = ReportOptions(account=acct, fmt="html", output=where / name, eval_topic=cfg.eval_topic,
                             settings_topic=cfg.settings_topic)
        try:
            run_report(opts, props, {})
        except OpsError as exc:
            print(f"access-eval demo: report page {name} not written: {exc}", file=sys.stderr)
            continue
        print(f"  {opts.output}", file=out)
        print(f"    regenerate: {shell_command(regenerate_command(opts, bootstrap))}", file=out)
