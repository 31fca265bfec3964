"""The `--worker` modes, separate processes so the measuring process never competes for the GIL."""

from __future__ import annotations

import argparse
import json
import signal
import time
from typing import TYPE_CHECKING, Any

from confluent_kafka import Consumer, Producer, TopicPartition

from processor.core.times import rfc3339_millis
from processor.local.workload import Workload

if TYPE_CHECKING:
    from processor.config import RunConfig


def run_worker(args: argparse.Namespace) -> int:
    """`--worker consume|passthrough`: ceiling clients built by the processor's own client factory;
    `--worker load`: paced attempt producer for the latency measurement."""
    if args.worker == "load":
        return load_worker(args)
    from processor.config import RunConfig

    flags = parse_processor_args(args.processor_arg)
    eos = args.worker == "passthrough"
    cfg = RunConfig(bootstrap_servers=args.bootstrap_servers, group_id=args.w_group, attempts_topic=args.w_topic,
                    eval_topic=args.w_out_topic or "unused", transactional_id=args.w_txn_id,
                    delivery="exactly-once" if eos else "at-least-once", **flags)
    client = CeilingClient(cfg, eos, args.w_out_topic)

    def stop(_s: int, _f: Any) -> None:
        client.stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    client.run(args.w_topic)
    return 0


class CeilingClient:
    """A consumer (and, exactly-once, a transactional producer copying every record to `out`) that
    commits like the processor, every commit interval: the processor's loop without the processing."""

    def __init__(self, cfg: RunConfig, eos: bool, out: str) -> None:
        from processor.kafka import clients

        props = cfg.kafka_properties()
        self.consumer = Consumer(clients.processor_consumer_conf(props, cfg.group_id))
        self.producer = Producer(clients.processor_producer_conf(props, cfg.txn_id())) if eos else None
        if self.producer is not None:
            self.producer.init_transactions(30)
        self.batch_size = cfg.batch_size
        self.commit_s = cfg.commit_interval_ms / 1000
        self.out = out
        self.offsets: dict[tuple[str, int], int] = {}
        self.in_txn = False
        self.started = 0.0
        self.stopping = False

    def run(self, topic: str) -> None:
        self.consumer.subscribe([topic])
        while not self.stopping:
            msgs = self.consumer.consume(self.batch_size, 0.1)
            if msgs:
                self.take(msgs)
            if self.in_txn and time.monotonic() - self.started >= self.commit_s:
                self.commit()
        if self.in_txn:
            self.commit()
        self.consumer.close()

    def take(self, msgs: list[Any]) -> None:
        producer = self.producer
        if not self.in_txn:
            if producer is not None:
                producer.begin_transaction()
            self.in_txn, self.started = True, time.monotonic()
        for m in msgs:
            if m.error() is not None:
                continue
            self.offsets[(m.topic(), m.partition())] = m.offset() + 1
            if producer is not None:
                while True:
                    try:
                        producer.produce(self.out, m.value(), m.key())
                        break
                    except BufferError:
                        producer.poll(0.05)
        if producer is not None:
            producer.poll(0)

    def commit(self) -> None:
        tps = [TopicPartition(t, p, o) for (t, p), o in self.offsets.items()]
        if self.producer is not None:
            if tps:
                self.producer.send_offsets_to_transaction(tps, self.consumer.consumer_group_metadata(), 30)
            self.producer.commit_transaction(30)
        elif tps:
            self.consumer.commit(offsets=tps, asynchronous=False)
        self.offsets.clear()
        self.in_txn = False


def parse_processor_args(argv: list[str]) -> dict[str, Any]:
    """`--batch-size 5000`-style processor flags -> RunConfig fields (for the ceiling workers)."""
    flags: dict[str, Any] = {}
    it = iter(argv)
    for a in it:
        if not a.startswith("--"):
            continue
        name, _, value = a[2:].partition("=")
        if not value:
            value = next(it, "")
        flags[name.replace("-", "_")] = value
    return {k: v for k, v in flags.items() if k in ("batch_size", "commit_interval_ms")}


def load_worker(args: argparse.Namespace) -> int:
    """Offer `--w-rate` attempts/s of the reference mix (event_time = send time) for `--w-seconds`."""
    w = Workload(seed=7, accounts=args.w_accounts, huge_allowlists=args.w_huge)
    for _ in w.settings():
        pass
    templates: list[tuple[bytes, bytes, bytes]] = []
    marker = b'"event_time":"'
    for key, value, _ in w.attempts(min(200_000, max(10_000, int(args.w_rate * 2))), start_ms=0):
        i = value.index(marker) + len(marker)
        j = value.index(b'"', i)
        templates.append((key, value[:i], value[j:]))
    p = Producer({"bootstrap.servers": args.bootstrap_servers, "enable.idempotence": True,
                  "linger.ms": args.w_linger_ms, "compression.type": "lz4", "queue.buffering.max.messages": 1_000_000})
    rate, seconds = args.w_rate, args.w_seconds
    n = 0
    start = time.monotonic()
    last_ms = 0
    stamp = b""
    while True:
        elapsed = time.monotonic() - start
        if elapsed >= seconds:
            break
        due = int(rate * elapsed)
        now_ms = int(time.time() * 1000)  # once per tick: an attempt is stamped <= 2 ms before its send
        if now_ms != last_ms:
            last_ms, stamp = now_ms, rfc3339_millis(now_ms).encode()
        while n < due:
            key, head, rest = templates[n % len(templates)]
            try:
                p.produce(args.w_topic, head + stamp + rest, key)
            except BufferError:
                p.poll(0.01)
                continue
            n += 1
        p.poll(0)
        time.sleep(0.002)
    elapsed = time.monotonic() - start
    p.flush(60)
    print(json.dumps({"sent": n, "seconds": elapsed}))
    return 0
