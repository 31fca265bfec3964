"""Section 5: µs per attempt of each hot-path stage, in process, plus the real `AttemptStage.process`."""

from __future__ import annotations

import gc
import time
from typing import TYPE_CHECKING, Any

from confluent_kafka import Consumer, Producer, TopicPartition

from bench.kafka.common import (
    say,
)
from bench.kafka.procs import Bench
from bench.kafka.topics import (
    partitions_of,
)
from bench.kafka.workload import Mixed

if TYPE_CHECKING:
    from processor.codec.avro import EvalCodec
    from processor.core.settings import SettingsHistory


def stage_costs(bench: Bench, mixed: Mixed, limit: int) -> dict[str, Any]:
    """µs per attempt of each step of the hot path, stage by stage over batches of real messages,
    plus the real `AttemptStage.process` on the same messages for a cross-check."""
    from processor.codec.avro import EvalCodec

    history, apply_us = settings_history(bench, mixed)
    batches, got, consume_us = consume_batches(bench, limit)
    codec = EvalCodec()
    scratch = bench.topic(bench.fresh("stages"), bench.args.partitions)
    now_ms = int(time.time() * 1000)
    totals, emitted = step_costs(bench, history, batches, codec, scratch, now_ms)
    t_process, t_total = process_costs(bench, history, batches, codec, scratch)
    allow_cost = allowlist_costs(mixed, history, now_ms)

    per = {k: round(v / got * 1e6, 2) for k, v in totals.items()}
    out = {
        "attempts": got,
        "emitted": emitted,
        "us_per_attempt": {"consume": round(consume_us, 2), **per,
                           "sum": round(consume_us + sum(per.values()), 2)},
        "us_per_event": {k: round(totals[k] / emitted * 1e6, 2) for k in ("encode", "produce")}
        if emitted else {},
        "process_us_per_attempt": round(t_process / got * 1e6, 2),
        "process_and_commit_us_per_attempt": round(t_total / got * 1e6, 2),
        "settings_apply_us_per_record": round(apply_us, 2),
        "evaluate_us_by_allowlist": allow_cost,
    }
    say(f"  stages µs/attempt: {out['us_per_attempt']}; AttemptStage.process {out['process_us_per_attempt']}")
    return out


def settings_history(bench: Bench, mixed: Mixed) -> tuple[SettingsHistory, float]:
    """The mix's settings applied to a history -> (history, µs per record)."""
    from processor.core.settings import SettingsHistory

    history = SettingsHistory()
    t0 = time.perf_counter()
    for i, (k, v) in enumerate(mixed.settings):
        history.apply_record(k, v, 0, bench.settings_topic, 0, i)
    return history, (time.perf_counter() - t0) / len(mixed.settings) * 1e6


def consume_batches(bench: Bench, limit: int) -> tuple[list[list[Any]], int, float]:
    """`limit` attempts of the preloaded topic, in batches of up to 5000 -> (batches, count, µs each)."""
    c = Consumer({"bootstrap.servers": bench.bootstrap, "group.id": "bench-stages", "enable.auto.commit": False,
                  "isolation.level": "read_committed"})
    c.assign([TopicPartition(bench.attempts_topic, p, 0) for p in partitions_of(bench.bootstrap, bench.attempts_topic)])
    batches: list[list[Any]] = []
    got = 0
    t0 = time.perf_counter()
    while got < limit:
        msgs = [m for m in c.consume(min(5000, limit - got), 1.0) if m.error() is None]
        if msgs:
            batches.append(msgs)
            got += len(msgs)
    consume_us = (time.perf_counter() - t0) / got * 1e6
    c.close()
    return batches, got, consume_us


def step_costs(bench: Bench, history: SettingsHistory, batches: list[list[Any]], codec: EvalCodec, scratch: str,
               now_ms: int) -> tuple[dict[str, float], int]:
    """Seconds spent in each step of the hot path over every message -> (seconds per step, events)."""
    from processor.core.attempts import parse_attempt
    from processor.core.evaluator import assess
    from processor.metrics.tally import Tally

    # The bench's own heap (the mix, the batches) would make the collector's passes cost more here
    # than in the processor: park it in the permanent generation while measuring.
    gc.collect()
    gc.freeze()
    producer = Producer({"bootstrap.servers": bench.bootstrap, "enable.idempotence": True, "linger.ms": 10,
                         "batch.size": 1_000_000, "compression.type": "lz4", "queue.buffering.max.messages": 1_000_000})
    # Per message, in the real loop's order, with a clock read between steps (~0.1 µs each):
    # stage-by-stage passes over whole batches would keep thousands of objects alive and charge
    # the garbage collector to whichever stage happens to trigger it.
    clock = time.perf_counter
    t_parse = t_eval = t_encode = t_produce = 0.0
    emitted = 0
    headers = codec.headers
    encode = codec.encode_evaluation
    produce = producer.produce
    for msgs in batches:
        tally = Tally()
        for m in msgs:
            t_a = clock()
            a = parse_attempt(m.value(), now_ms)
            t_b = clock()
            v, ver, ex = assess(history, a)
            tally.add(v.outcome, a.data["identity"]["type"], v.state, a.data["account_id"])
            t_c = clock()
            t_parse += t_b - t_a
            t_eval += t_c - t_b
            if v.emit:
                value = encode(a, v, ver, ex, now_ms)
                t_e = clock()
                while True:
                    try:
                        produce(scratch, value, a.data["account_id"].encode(), headers=headers)
                        break
                    except BufferError:
                        producer.poll(0.01)
                t_f = clock()
                t_encode += t_e - t_c
                t_produce += t_f - t_e
                emitted += 1
        t_a = clock()
        producer.poll(0)
        t_produce += clock() - t_a
    t_a = clock()
    producer.flush(60)
    t_produce += clock() - t_a
    return {"decode_validate": t_parse, "evaluate": t_eval, "encode": t_encode, "produce": t_produce}, emitted


def process_costs(bench: Bench, history: SettingsHistory, batches: list[list[Any]], codec: EvalCodec,
                  scratch: str) -> tuple[float, float]:
    """The real hot path, in process, on the same messages (exactly-once, commit every 10 batches)
    -> (seconds in `AttemptStage.process`, seconds with the commits)."""
    from processor.config import RunConfig
    from processor.health import Health
    from processor.metrics import Metrics
    from processor.stream.loop import Processor

    cfg = RunConfig(bootstrap_servers=bench.bootstrap, group_id=bench.fresh("stages-group"),
                    settings_topic=bench.settings_topic, attempts_topic=bench.attempts_topic, eval_topic=scratch,
                    dlq_topic=bench.dlq_topic, transactional_id=bench.fresh("stages-txn"))
    proc = Processor(cfg, Metrics(), Health(), codec)
    proc.history = history
    txn = proc.open_clients()
    assert proc.stage is not None
    proc.consumer.assign([TopicPartition(bench.attempts_topic, p, 0)
                          for p in partitions_of(bench.bootstrap, bench.attempts_topic)])
    t0 = time.perf_counter()
    t_process = 0.0
    for i, msgs in enumerate(batches):
        t_a = time.perf_counter()
        proc.stage.process(msgs)
        t_process += time.perf_counter() - t_a
        if i % 10 == 9:
            txn.commit()
    if txn.open:
        txn.commit()
    t_total = time.perf_counter() - t0
    proc.consumer.close()
    txn.flush(30)
    proc.table.close()
    return t_process, t_total


def allowlist_costs(mixed: Mixed, history: SettingsHistory, now_ms: int) -> dict[str, float]:
    """A 10,000-id allowlist costs the same as a small one (set lookup): µs per evaluation of each."""
    from processor.core.policy import evaluate

    huge = [a for a, ids in mixed.workload.allow.items() if len(ids) >= 10_000 and a not in
            mixed.workload.unrestricted_ids]
    small = [a for a, ids in mixed.workload.allow.items() if len(ids) <= 50 and a in mixed.monitor][:1]
    allow_cost: dict[str, float] = {}
    for label, accounts in (("small", small), ("huge", huge[:1])):
        if not accounts:
            continue
        version, _ = history.lookup(accounts[0], now_ms)
        assert version is not None
        rules = version.rules
        ids = mixed.workload.allow[accounts[0]]
        probes = [ids[i % len(ids)] for i in range(500)] + [f"{i:032x}" for i in range(500)]
        n = 0
        t0 = time.perf_counter()
        for _ in range(200):
            for ext in probes:
                evaluate(accounts[0], ext, "user", rules)
                n += 1
        allow_cost[label] = round((time.perf_counter() - t0) / n * 1e6, 3)
    return allow_cost
