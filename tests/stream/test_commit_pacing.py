"""When the open transaction commits (issue 25, the p99 latency at half load): after
--commit-interval-caught-up-ms once a fetch drained the input (less than a full batch), after
--commit-interval-ms while every fetch is full (under load). The real `Processor` on the fake clients
and the fake clock of tests/support: time moves only when the test moves it, so each assertion is about
the rule, not about how fast this machine runs."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from processor.config import RunConfig
from processor.health import Health
from processor.stream.loop import Processor
from tests.support.eos_world import FakeCodec, LightMetrics, patched
from tests.support.fake_consumer import FakeConsumer
from tests.support.fake_kafka import Clock, Cluster, FakeProducer
from tests.support.fake_settings import FakeTable

BATCH = 4


class DrainingConsumer(FakeConsumer):
    """A fetch returns everything that has arrived, up to the batch size (the fake's own returns a
    random share): a full batch exactly when at least `num_messages` are waiting."""

    def consume(self, num_messages: int = 1, timeout: float = -1) -> list[Any]:
        self.fire_events()
        out = self._take(num_messages)
        if not out:
            self.cluster.clock.advance(max(timeout, 0.0005))
        return out


def _processor(clock: Clock, cluster: Cluster, commit_ms: int, caught_up_ms: int) -> Processor:
    cfg = RunConfig(bootstrap_servers="fake:9092", transactional_id="tx-pace", batch_size=BATCH,
                    commit_interval_ms=commit_ms, commit_interval_caught_up_ms=caught_up_ms,
                    settings_topic="settings", attempts_topic="attempts", eval_topic="evals", dlq_topic="dlq")
    p = Processor(cfg, LightMetrics(), Health(), FakeCodec(),  # type: ignore[arg-type]
                  consumer_factory=lambda conf: DrainingConsumer(cluster, conf),
                  producer_factory=lambda conf: FakeProducer(cluster, conf), table_factory=FakeTable)
    p.bootstrap()
    p.open_clients()
    p.subscribe()
    cluster.owner[0] = p.consumer
    p.consumer.events.append(("assign", [0]))
    return p


def _arrive(cluster: Cluster, clock: Clock, n: int) -> None:
    for _ in range(n):
        o = len(cluster.input[0])
        cluster.append(0, b"acct", json.dumps({
            "id": f"0:{o}", "event_time": "2026-06-01T00:00:00Z", "account_id": FakeTable.ACCOUNTS[0],
            "identity": {"iam_id": "IBMid-1", "type": "user", "account_id": "other-acct"}, "action": "iam.read",
        }).encode())


@pytest.fixture
def world() -> tuple[Clock, Cluster]:
    clock = Clock()
    return clock, Cluster(random.Random(0), clock, partitions=1)


def test_a_drained_fetch_commits_after_the_caught_up_interval(world: tuple[Clock, Cluster]) -> None:
    """Two attempts (half a batch): the loop is keeping up, so the transaction commits once it is 25 ms
    old, not after the 20 s interval of a loaded stream."""
    clock, cluster = world
    with patched(clock):
        p = _processor(clock, cluster, commit_ms=20_000, caught_up_ms=25)
        _arrive(cluster, clock, 2)
        assert p.step()
        assert p.txn is not None and p.txn.open and cluster.committed.get(0) is None
        clock.advance(0.020)
        assert p.step()
        assert cluster.committed.get(0) is None, "committed before the caught-up interval"
        clock.advance(0.006)
        assert p.step()
        assert cluster.committed.get(0) == 2
        assert [r.value for r in cluster.committed_outputs()] == [b"0:0", b"0:1"]


def test_full_fetches_keep_the_transaction_open_for_the_commit_interval(world: tuple[Clock, Cluster]) -> None:
    """Under load (every fetch a full batch) the transaction stays open past the caught-up interval, up
    to --commit-interval-ms; the first fetch that drains the input commits it."""
    clock, cluster = world
    with patched(clock):
        p = _processor(clock, cluster, commit_ms=200, caught_up_ms=25)
        _arrive(cluster, clock, 3 * BATCH)
        for _ in range(3):
            assert p.step()  # a full batch each
            clock.advance(0.030)
            assert cluster.committed.get(0) is None, "a full fetch committed at the caught-up interval"
        assert p.step()  # drained: nothing left, the transaction is 90 ms old
        assert cluster.committed.get(0) == 3 * BATCH


def test_a_full_fetch_commits_at_the_commit_interval(world: tuple[Clock, Cluster]) -> None:
    clock, cluster = world
    with patched(clock):
        p = _processor(clock, cluster, commit_ms=100, caught_up_ms=25)
        _arrive(cluster, clock, 3 * BATCH)
        assert p.step()
        clock.advance(0.101)
        assert p.step()  # full again, but the transaction is past --commit-interval-ms
        assert cluster.committed.get(0) == 2 * BATCH


def test_the_lower_interval_applies(world: tuple[Clock, Cluster]) -> None:
    """A caught-up interval above --commit-interval-ms never delays a commit: 10 ms applies."""
    clock, cluster = world
    with patched(clock):
        p = _processor(clock, cluster, commit_ms=10, caught_up_ms=25)
        _arrive(cluster, clock, 1)
        assert p.step()
        clock.advance(0.011)
        assert p.step()
        assert cluster.committed.get(0) == 1
