"""`processor.local.publish`: the one bulk produce loop of the demo, the tests and the benchmarks."""

from __future__ import annotations

import pytest

from processor.errors import LocalKafkaError
from processor.local.process import free_port
from processor.local.publish import produce
from tests.support.kafka_harness import Topics
from tests.support.processor_harness import read_topic

T0 = 1_780_272_000_000


def test_every_record_arrives_in_order_with_its_timestamp_and_headers(topics: Topics) -> None:
    topics.create(partitions=1)
    records = [(f"k{i}".encode(), f"value-{i}".encode(), T0 + i) for i in range(2000)]
    done = produce(topics.bootstrap, topics.attempts, records, bulk=True, headers=[("h", b"1")], partition=0)
    assert (done.count, done.bytes, done.coords) == (2000, sum(len(v) for _, v, _ in records), [])
    got = read_topic(topics.bootstrap, topics.attempts)
    assert [(m.key(), m.value(), m.timestamp()[1]) for m in got] == records
    assert all(m.headers() == [("h", b"1")] for m in got)


def test_track_gives_each_records_partition_and_offset_in_input_order(topics: Topics) -> None:
    topics.create(partitions=3)
    records = [(f"k{i}".encode(), f"v{i}".encode()) for i in range(300)]
    coords = produce(topics.bootstrap, topics.attempts, records, track=True).coords
    by_coords = {(m.partition(), m.offset()): m.value() for m in read_topic(topics.bootstrap, topics.attempts)}
    assert [by_coords[c] for c in coords] == [v for _, v in records]


def test_an_undelivered_record_raises_naming_the_topic() -> None:
    with pytest.raises(LocalKafkaError, match="publishing to nowhere: 1 records undelivered"):
        produce(f"127.0.0.1:{free_port()}", "nowhere", [(b"k", b"v")], timeout=2)
