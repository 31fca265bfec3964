"""The `--worker` modes, separate processes so the measuring process never competes for the GIL."""

from __future__ import annotations

import argparse
import json
import signal
import time
from typing import Any

from confluent_kafka import Consumer, Producer, TopicPartition

from processor.core.times import rfc3339_millis
from processor.local.workload import Workload


def run_worker(args: argparse.Namespace) -> int:
    """`--worker consume|passthrough`: ceiling clients built by the processor's own client factory;
    `--worker load`: paced attempt producer for the latency measurement."""
    if args.worker == "load":
        return load_worker(args)
    from processor.config import RunConfig
    from processor.kafka import clients

    flags = parse_processor_args(args.processor_arg)
    eos = args.worker == "passthrough"
    cfg = RunConfig(bootstrap_servers=args.bootstrap_servers, group_id=args.w_group, attempts_topic=args.w_topic,
                    eval_topic=args.w_out_topic or "unused", transactional_id=args.w_txn_id,
                    delivery="exactly-once" if eos else "at-least-once", **flags)
    props = cfg.kafka_properties()
    consumer = Consumer(clients.processor_consumer_conf(props, cfg.group_id))
    producer = Producer(clients.processor_producer_conf(props, cfg.txn_id())) if eos else None
    if producer is not None:
        producer.init_transactions(30)
    stopping = [False]

    def stop(_s: int, _f: Any) -> None:
        stopping[0] = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    consumer.subscribe([args.w_topic])
    commit_s = cfg.commit_interval_ms / 1000
    offsets: dict[tuple[str, int], int] = {}
    in_txn = False
    started = 0.0
    out = args.w_out_topic

    def commit() -> None:
        nonlocal in_txn
        tps = [TopicPartition(t, p, o) for (t, p), o in offsets.items()]
        if producer is not None:
            if tps:
                producer.send_offsets_to_transaction(tps, consumer.consumer_group_metadata(), 30)
            producer.commit_transaction(30)
        elif tps:
            consumer.commit(offsets=tps, asynchronous=False)
        offsets.clear()
        in_txn = False

    while not stopping[0]:
        msgs = consumer.consume(cfg.batch_size, 0.1)
        if msgs:
            if not in_txn:
                if producer is not None:
                    producer.begin_transaction()
                in_txn, started = True, time.monotonic()
            for m in msgs:
                if m.error() is not None:
                    continue
                offsets[(m.topic(), m.partition())] = m.offset() + 1
                if producer is not None:
                    while True:
                        try:
                            producer.produce(out, m.value(), m.key())
                            break
                        except BufferError:
                            producer.poll(0.05)
            if producer is not None:
                producer.poll(0)
        if in_txn and time.monotonic() - started >= commit_s:
            commit()
    if in_txn:
        commit()
    consumer.close()
    return 0


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
