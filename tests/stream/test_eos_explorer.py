"""Exactly-once at the edges: the seeded schedule explorer of `tests/support/eos_world.py` (the real
`Processor` over fake Kafka clients, checked after every action) run over every fault item, a fixed and a
random seed; and start-up, stop and liveness on the same fakes.

`python -m tests.stream.test_eos_explorer [--kinds a,b] [-n N] [--seed S]` explores from the command line.
"""

from __future__ import annotations

import json
import random
import time
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException

from processor.health import Health
from processor.stream import producer as producer_mod
from processor.stream.loop import Processor
from processor.stream.producer import StopRequested
from processor.stream.transaction import SharedTransactionalId
from tests.support.eos_world import (
    ALL_KINDS,
    FakeCodec,
    LightMetrics,
    Violation,
    World,
    explore,
    patched,
    run_config,
)
from tests.support.fake_consumer import FakeConsumer
from tests.support.fake_kafka import (
    Clock,
    Cluster,
    FakeProducer,
)
from tests.support.fake_settings import FakeTable


def _assert_none(found: tuple[int, int, World] | None) -> None:
    if found is None:
        return
    count, seed, w = found
    try:
        World(seed, w.kinds, w.delivery, w.real_metrics).run(40)
    except Violation as exc:
        msg = str(exc)
    else:  # pragma: no cover
        msg = "?"
    tail = "\n".join(w.trace[-30:])
    raise AssertionError(f"{msg}\nfound after {count} schedules; seed {seed}; last actions:\n{tail}")


ITEMS = {
    "1-rebalance-during-fetch": (frozenset({"rebalance", "lost"}), "exactly-once"),
    "2-exception-mid-batch": (frozenset({"bug", "poison"}), "exactly-once"),
    "3-alo-delivery-failure": (frozenset({"delivery"}), "at-least-once"),
    "4-failed-seek": (frozenset({"txn", "seek"}), "exactly-once"),
    "5-commit-retry-hung": (frozenset({"txn", "hung"}), "exactly-once"),
    "6-shared-transactional-id": (frozenset({"twin"}), "exactly-once"),
    # issue 23: callbacks served mid-fetch (half the time), with revoke commits that fail
    "7-rebalance-mid-fetch-failed-revoke-commit": (frozenset({"rebalance", "lost", "txn", "seek"}), "exactly-once"),
    # issue 24 (the 60-minute soak of seed 20261208): the client's own read at assignment says "nothing
    # committed" for a partition that has commits; the loop must start it at the committed offset anyway
    "8-assignment-read-resets": (frozenset({"rebalance", "lost", "crash", "startreset", "seek"}), "exactly-once"),
    "9-assignment-read-resets-alo": (frozenset({"rebalance", "crash", "startreset"}), "at-least-once"),
}


@pytest.mark.parametrize("item", sorted(ITEMS))
def test_item_schedules(item: str) -> None:
    kinds, delivery = ITEMS[item]
    _assert_none(explore(kinds, n=150, seed=1000, delivery=delivery))


def test_explorer_fixed_seed() -> None:
    """10,000 schedules over every kind of fault, both delivery modes; a fixed seed."""
    _assert_none(explore(ALL_KINDS, n=8000, seed=0, real_metrics=False))
    _assert_none(explore(ALL_KINDS, n=2000, seed=0, delivery="at-least-once", real_metrics=False))


def test_explorer_random_seed() -> None:
    seed = random.SystemRandom().randrange(1 << 30)
    print(f"eos explorer random seed: {seed}")
    _assert_none(explore(ALL_KINDS, n=1000, seed=seed, real_metrics=False))


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser()
    ap.add_argument("--kinds", default=",".join(sorted(ALL_KINDS)))
    ap.add_argument("-n", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--delivery", default="exactly-once")
    a = ap.parse_args()
    t0 = time.perf_counter()
    res = explore(frozenset(a.kinds.split(",")), a.n, a.seed, a.steps, a.delivery)
    dt = time.perf_counter() - t0
    if res is None:
        print(f"no violation in {a.n} schedules ({dt:.1f}s)")
    else:
        count, seed, w = res
        try:
            World(seed, w.kinds, w.delivery).run(a.steps)
        except Violation as exc:
            print(f"VIOLATION after {count} schedules (seed {seed}, {dt:.1f}s): {exc}")
        print("\n".join(w.trace[-30:]))


# -- start-up, stop and liveness (items 6-9), on the same fakes ------------------------------------------


def _processor(clock: Clock, cluster: Cluster, health: Health, table: Any = FakeTable) -> Processor:
    return Processor(run_config("tx-0", "exactly-once", 3, 50), LightMetrics(), health, FakeCodec(),  # type: ignore[arg-type]
                     consumer_factory=lambda conf: FakeConsumer(cluster, conf),
                     producer_factory=lambda conf: FakeProducer(cluster, conf), table_factory=table)


def test_init_transactions_retry_is_progress_and_honours_stop() -> None:
    """Items 8, 9: a broker that refuses init_transactions for minutes keeps /livez 200 (every retry marks
    progress), readiness says why, and a stop request ends the wait."""
    clock = Clock()
    cluster = Cluster(random.Random(0), clock)
    health = Health(idle_deadline_s=5.0, clock=clock.monotonic)
    orig = FakeProducer.init_transactions
    stop_at = clock.now + 300.0
    p = _processor(clock, cluster, health)

    def failing(self: FakeProducer, timeout: float = -1) -> None:
        assert health.liveness()[0], health.liveness()
        if clock.now >= stop_at:
            p.request_stop()
        raise KafkaException(KafkaError(KafkaError._TRANSPORT, "broker down", retriable=True))

    FakeProducer.init_transactions = failing  # type: ignore[method-assign]
    try:
        with patched(clock):
            p.bootstrap()
            with pytest.raises(StopRequested):
                p.open_clients()
    finally:
        FakeProducer.init_transactions = orig  # type: ignore[method-assign]
    assert clock.now >= stop_at
    assert health.liveness()[0]
    ready, body = health.readiness()
    assert not ready and any("init_transactions" in r for r in body["reasons"])


def test_stuck_loop_fails_liveness() -> None:
    """Item 9: liveness fails only when nothing turns (the test hook: a step that never returns is
    simulated by not stepping while the injected clock moves)."""
    clock = Clock()
    health = Health(idle_deadline_s=5.0, clock=clock.monotonic)
    with patched(clock):
        p = _processor(clock, Cluster(random.Random(0), clock), health)
        p.bootstrap()
        p.open_clients()
        p.subscribe()
        for _ in range(100):
            assert p.step()  # idle: 0.1 s waits
            assert health.liveness()[0]
        clock.advance(5.1)
        live, body = health.liveness()
        assert not live and "no progress" in body["reasons"][0]


class SlowTable(FakeTable):
    """Bootstrap and the staleness wait never catch up; start-up broker calls time out first."""

    calls = 0

    def start(self, timeout_s: float = 30.0) -> None:
        SlowTable.calls += 1
        if SlowTable.calls <= 3:
            raise KafkaException(KafkaError(KafkaError._TIMED_OUT, "list_topics timed out"))
        super().start()

    def caught_up(self) -> bool:
        return False

    def poll(self, timeout_s: float = 0.0, max_records: int = 10_000) -> int:
        producer_mod.time.sleep(timeout_s)  # the fake clock
        return 1


def test_bootstrap_retries_broker_trouble_marks_progress_and_honours_stop() -> None:
    """Items 7, 8, 9: a timeout reading the settings topic's metadata is retried (no traceback), a long
    bootstrap is progress, and SIGTERM (request_stop) ends it."""
    clock = Clock()
    health = Health(idle_deadline_s=5.0, clock=clock.monotonic)
    with patched(clock):
        p = _processor(clock, Cluster(random.Random(0), clock), health, SlowTable)
        t0 = clock.now

        def poll(timeout_s: float = 0.0, max_records: int = 10_000) -> int:
            clock.sleep(timeout_s)
            assert health.liveness()[0]
            if clock.now - t0 > 600:
                p.request_stop()
            return 1

        p.table.poll = poll  # type: ignore[method-assign]
        p.bootstrap()
    assert SlowTable.calls == 4
    assert p.stopping and health.liveness()[0] and not health.readiness()[0]


def test_staleness_wait_honours_stop() -> None:
    """Item 8: SIGTERM while the settings view catches up (SettingsTable.ensure_fresh) ends the loop."""
    from processor.kafka.table import SettingsTable

    table = SettingsTable.__new__(SettingsTable)
    table.partitions, table.position, table.targets, table.targets_at = [0], {0: 0}, {0: 5}, float("inf")
    turns: list[int] = []
    table.poll = lambda timeout_s=0.0, max_records=0: turns.append(1) or 0  # type: ignore[method-assign]
    assert table.ensure_fresh(1.0, stop=lambda: len(turns) >= 3) is False
    assert len(turns) == 3


def test_shared_transactional_id_exits_2() -> None:
    """Item 6: two live instances sharing --transactional-id end in one fatal error naming the setting."""
    w2 = World(0, frozenset())
    with patched(w2.clock):
        a = w2.start("same")
        b = w2.start("same")
        w2.cluster.owner[0], w2.cluster.owner[1] = a.consumer, b.consumer
        a.consumer.events.append(("assign", [0]))
        b.consumer.events.append(("assign", [1]))
        for _ in range(50):
            for pr in list(w2.procs):
                w2.turn(pr)
            w2.cluster.append(w2.rng.choice([0, 1]), b"k", b"{}")
            if any(pr.p.fatal for pr in (a, b)):
                break
    fatal = [pr.p.fatal for pr in (a, b) if pr.p.fatal is not None]
    assert fatal and isinstance(fatal[0], SharedTransactionalId)
    assert "--transactional-id" in str(fatal[0])


def test_poison_record_dead_lettered_with_internal_error() -> None:
    """Item 2: a record whose evaluation raises is dead-lettered (internal_error, detail = exception type)."""
    w = World(0, frozenset())
    with patched(w.clock):
        a = w.start()
        ev = json.dumps({"id": "0:0", "event_time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(w.clock.time())),
                         "account_id": "acct-a", "action": "poison",
                         "identity": {"iam_id": "i", "type": "user", "account_id": "x"}}).encode()
        w.cluster.append(0, b"k", ev)
        w.cluster.owner[0] = a.consumer
        a.consumer.events.append(("assign", [0]))
        for _ in range(20):
            w.turn(a)
    [rec] = w.cluster.committed_outputs()
    h = dict(rec.headers)
    assert rec.topic == "dlq" and h["error.reason"] == b"internal_error" and h["error.detail"] == b"Poison"
    assert a.p.metrics.registry.get_sample_value("access_eval_invalid_total", {"reason": "internal_error"}) == 1


class FlakyStartTable(FakeTable):
    """The settings topic's metadata times out once at start-up, then everything works."""

    failed = False

    def start(self, timeout_s: float = 30.0) -> None:
        if not FlakyStartTable.failed:
            FlakyStartTable.failed = True
            raise KafkaException(KafkaError(KafkaError.NOT_LEADER_FOR_PARTITION, "not leader"))
        super().start()


def test_a_retried_start_up_call_leaves_no_stale_problem() -> None:
    """A start-up call that failed once and then succeeded must not keep the instance unready: with no
    traffic there is no commit to clear the reason (seen right after --create-topics)."""
    clock = Clock()
    health = Health(idle_deadline_s=5.0, clock=clock.monotonic)
    with patched(clock):
        p = _processor(clock, Cluster(random.Random(0), clock), health, FlakyStartTable)
        p.bootstrap()
    health.set_assigned(2)
    assert FlakyStartTable.failed
    assert health.readiness() == (True, {"ready": True, "assigned_partitions": 2})
