"""processor.kafka.table against a real broker: the settings view and its gauges."""

from __future__ import annotations

import json
from typing import Any

from confluent_kafka import Producer

from processor.core.settings import SettingsHistory
from processor.kafka.table import SettingsTable
from processor.metrics import Metrics
from tests.support.kafka_harness import Topics, wait_until
from tests.support.strategies import ACCOUNTS, BASE_MS, HOUR, iso, settings_obj

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


def test_the_table_reports_downgrades_and_keys_not_in_normal_form(
    kafka: Any, topics: Topics, caplog: Any
) -> None:
    """A downgrade (limited -> `{}`, then a tombstone after monitor) is one info line and the labelled
    counter per record; a key spelt otherwise than its normal form is accepted with a warning naming
    the exact key (escaped), since only writes under that exact key replace or delete it (§3.2)."""
    import logging

    topics.create(only=[topics.settings])
    other = ACCOUNTS[5]
    produce(kafka.bootstrap, topics.settings, [
        (ACC, settings_obj(ACC, {"user": {"state": "limited"}, "service": {"state": "monitor"}}, iso(BASE_MS))),
        (ACC, settings_obj(ACC, {}, iso(BASE_MS + HOUR))),
        (other.upper(), settings_obj(other, {"service_id": {"state": "monitor"}}, iso(BASE_MS))),
        (other, None),
    ])
    m = Metrics()
    t = table(topics, SettingsHistory(), m)
    try:
        with caplog.at_level(logging.INFO, logger="access_eval.settings"):
            assert t.catch_up(30)
    finally:
        t.close()
    downgrades = [r.fields for r in caplog.records if r.getMessage().startswith("settings downgrade")]
    assert [(d["account"], d["identity_types"], d["offset"]) for d in downgrades] == [
        (ACC, "user,service", 1), (other, "service_id", 3)]
    for itype, n in (("user", 1), ("service", 1), ("service_id", 1)):
        assert m.registry.get_sample_value("access_eval_settings_downgrades_total", {"identity_type": itype}) == n
    spelt = [r for r in caplog.records if "normal form" in r.getMessage()]
    assert [(r.levelno, r.fields["key"], r.fields["offset"]) for r in spelt] == [  # type: ignore[attr-defined]
        (logging.WARNING, other.upper(), 2)]


def test_every_record_read_is_counted_once_whichever_path_applied_it(kafka: Any, topics: Topics) -> None:
    """The one-step records are counted per batch, the others one by one: together, every record once."""
    topics.create(only=[topics.settings])
    canonical = [(a, settings_obj(a, {"user": {"state": "monitor", "external_allowed_accounts": [ACCOUNTS[9]]}},
                                  iso(BASE_MS))) for a in ACCOUNTS[1:6]]
    other = [(ACCOUNTS[6], settings_obj(ACCOUNTS[6], {"user": {"state": "limited"}}) | {"note": "extra field"}),
             (ACCOUNTS[7], b"{not json")]
    produce(kafka.bootstrap, topics.settings, canonical + other)
    m = Metrics()
    history = SettingsHistory()
    t = table(topics, history, m)
    try:
        assert t.catch_up(30)
        assert m.registry.get_sample_value("access_eval_settings_records_total", {}) == 6
        assert m.registry.get_sample_value("access_eval_settings_rejected_total", {"reason": "bad_json"}) == 1
        assert len(history) == 6 and history.applied == 6
    finally:
        t.close()
