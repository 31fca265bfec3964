"""processor.kafka.table against a real broker: the settings view and its gauges."""

from __future__ import annotations

import json
from typing import Any

from confluent_kafka import Producer
from kafka_harness import Topics, wait_until
from strategies import ACCOUNTS, BASE_MS, HOUR, iso, settings_obj

from processor.core.settings import SettingsHistory
from processor.kafka.table import SettingsTable
from processor.metrics import Metrics

ACC = ACCOUNTS[0]


def gauge(m: Metrics, name: str) -> float:
    v = m.registry.get_sample_value(name, {})
    assert v is not None, f"no sample {name}"
    return v


def produce(bootstrap: str, topic: str, records: list[tuple[str, Any]], partition: int | None = None) -> None:
    p = Producer({"bootstrap.servers": bootstrap})
    for key, value in records:
        raw = None if value is None else (value if isinstance(value, bytes) else json.dumps(value).encode())
        if partition is None:
            p.produce(topic, raw, key.encode())
        else:
            p.produce(topic, raw, key.encode(), partition=partition)
    assert p.flush(10) == 0


def table(topics: Topics, history: SettingsHistory, metrics: Metrics | None = None) -> SettingsTable:
    t = SettingsTable({"bootstrap.servers": topics.bootstrap}, topics.settings, history, metrics)
    t.start()
    return t


def test_settings_versions_gauge_follows_pruning(kafka: Any, topics: Topics) -> None:
    topics.create(only=[topics.settings])
    produce(kafka.bootstrap, topics.settings, [
        (ACC, settings_obj(ACC, {"user": {"state": s}}, iso(BASE_MS + i * HOUR)))
        for i, s in enumerate(["monitor", "limited", "monitor"])
    ])
    m = Metrics()
    history = SettingsHistory(retention_ms=HOUR, prune_every_ms=1)
    t = table(topics, history, m)
    try:
        assert t.catch_up(30)
        assert (gauge(m, "access_eval_settings_versions"), gauge(m, "access_eval_settings_accounts")) == (3, 1)
        history.advance(BASE_MS + 10 * HOUR)  # stream time moves on: the two older versions are pruned
        assert history.versions == 1
        assert gauge(m, "access_eval_settings_versions") == 1
    finally:
        t.close()


def test_partitions_added_later_are_read_from_the_beginning(kafka: Any, topics: Topics) -> None:
    from confluent_kafka.admin import NewPartitions  # type: ignore[attr-defined]

    topics.create(only=[topics.settings], settings_partitions=1)
    produce(kafka.bootstrap, topics.settings, [(ACC, settings_obj(ACC, {"user": {"state": "limited"}}))])
    history = SettingsHistory()
    t = table(topics, history)
    try:
        assert t.catch_up(30) and history.latest(ACC) is not None
        admin = topics.admin()  # kept referenced until the futures resolve
        for f in admin.create_partitions([NewPartitions(topics.settings, 3)]).values():
            f.result(timeout=30)
        late = ACCOUNTS[3]
        produce(kafka.bootstrap, topics.settings, [(late, settings_obj(late, {"service": {"state": "monitor"}}))],
                partition=2)
        wait_until(lambda: t.catch_up(5) and history.latest(late) is not None, 30,
                   "the record in the added partition to be read while the table says it is caught up")
        assert sorted(t.partitions) == [0, 1, 2]
    finally:
        t.close()
