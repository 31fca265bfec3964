"""The settings topic as a Kafka-Streams-style global table: every partition, from the beginning, no group.

It answers two questions for the processor: "have I read everything the topic had when I started?"
(bootstrap) and "am I caught up to the end as observed at most `staleness` ago?" (bounded staleness).
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable, Mapping
from operator import itemgetter
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Message, TopicPartition

from processor.core.display import printable
from processor.core.settings import InvalidSettings, SettingsHistory, key_in_normal_form
from processor.kafka import clients, heap
from processor.kafka.errors import STALE_LEADER_ERRORS
from processor.logs import kv

log = logging.getLogger("access_eval.settings")
_PARTITION, _OFFSET = itemgetter(3), itemgetter(4)


def log_downgrade(metrics: Any, account: str, types: list[str], topic: str, partition: int, offset: int) -> None:
    """A record made identity types of an account unrestricted: one info line and the labelled counter
    (an owner's explicit choice, but the change an auditor asks about). The account is shown escaped."""
    log.info(
        "settings downgrade: identity types of an account are now unrestricted (enabled)",
        extra=kv(account=printable(account), identity_types=",".join(types), topic=topic, partition=partition,
                 offset=offset),
    )
    if metrics is not None:
        metrics.settings_downgraded(types)


#: Told of every record the history decided, with the decision (None: accepted): key, value, timestamp,
#: topic, partition, offset, problem. The tools' `DocumentView.note` keeps raw documents through it.
OnRecord = Callable[[bytes | None, bytes | None, int, str, int, int, InvalidSettings | None], None]


class SettingsTable:
    def __init__(self, props: dict[str, Any], topic: str, history: SettingsHistory, metrics: Any = None,
                 group_id: str = clients.TABLE_GROUP, on_record: OnRecord | None = None) -> None:
        self.topic = topic
        self.history = history
        self.on_record = on_record
        self.metrics = metrics
        self.consumer = Consumer(clients.table_reader_conf(props, group_id))
        self.offsets_client = Consumer(clients.offsets_reader_conf(props, group_id))  # see offsets_reader_conf
        self.partitions: list[int] = []
        self.position: dict[int, int] = {}
        self.targets: dict[int, int] = {}
        self.targets_at = float("-inf")
        history.bind_topic(topic)
        if metrics is not None:
            metrics.bind_settings(history)  # the gauges follow pruning too, not only applied records
        heap.bootstrapping()  # see `heap`; `settle` ends it

    def settle(self) -> None:
        """The bootstrap is done: give back the memory it freed (`heap.settle`)."""
        heap.settle()

    def start(self, timeout_s: float = 30.0, offsets: Mapping[int, int] | None = None) -> None:
        """Assign every partition: from `offsets` (a restored snapshot's next offsets) where given, else
        from the beginning."""
        md = self.consumer.list_topics(self.topic, timeout=timeout_s).topics[self.topic]
        if md.error is not None:  # e.g. LEADER_NOT_AVAILABLE just after creation: the caller retries
            raise KafkaException(md.error)
        given = offsets or {}
        self.partitions = sorted(md.partitions)
        self.position = {p: given.get(p, 0) for p in self.partitions}
        self.consumer.assign([TopicPartition(self.topic, p, given.get(p, OFFSET_BEGINNING)) for p in self.partitions])

    def describe(self, timeout_s: float = 10.0) -> tuple[str | None, dict[int, int]]:
        """The cluster id and every partition's end offset, now (before `start`: nothing is assigned)."""
        meta = self.offsets_client.list_topics(self.topic, timeout=timeout_s)
        md = meta.topics[self.topic]
        if md.error is not None:
            raise KafkaException(md.error)
        return meta.cluster_id, {p: self._end_offset(p, timeout_s) for p in sorted(md.partitions)}

    def refresh_targets(self, timeout_s: float = 10.0) -> None:
        """Observe the topic's partitions and end offsets now; catching up means reaching them.

        Partitions added to the topic since start are assigned from the beginning here, so a record
        in one of them can never be skipped while `caught_up()` says true.
        """
        observed_at = time.monotonic()
        self._add_new_partitions(timeout_s)
        for p in self.partitions:
            self.targets[p] = self._end_offset(p, timeout_s)
        self.targets_at = observed_at

    def _end_offset(self, p: int, timeout_s: float) -> int:
        tp = TopicPartition(self.topic, p)
        try:
            _low, high = self.offsets_client.get_watermark_offsets(tp, timeout=timeout_s)
        except KafkaException as exc:
            if exc.args[0].code() not in STALE_LEADER_ERRORS:
                raise
            # This client never assigns the topic, so nothing refreshes its metadata when the
            # partition's leader moves (broker failover): "Unknown partition" forever. Ask once.
            self.offsets_client.list_topics(self.topic, timeout=timeout_s)
            _low, high = self.offsets_client.get_watermark_offsets(tp, timeout=timeout_s)
        return int(high)

    def _add_new_partitions(self, timeout_s: float) -> None:
        md = self.offsets_client.list_topics(self.topic, timeout=timeout_s).topics.get(self.topic)
        if md is None or md.error is not None:
            return  # a transient metadata problem: the end-offset lookups below report it
        new = sorted(set(md.partitions) - set(self.position))
        if not new:
            return
        log.info("settings topic has new partitions; reading them from the beginning",
                 extra=kv(topic=self.topic, partitions=new))
        self.consumer.incremental_assign([TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in new])
        for p in new:
            self.position[p] = 0
        self.partitions = sorted(self.position)

    def caught_up(self) -> bool:
        return all(self.position[p] >= self.targets.get(p, 0) for p in self.partitions)

    def poll(self, timeout_s: float = 0.0, max_records: int = 2_000) -> int:
        """Apply what has arrived; returns records applied."""
        msgs = self.consumer.consume(max_records, timeout_s)
        collecting = gc.isenabled()
        gc.disable()  # a batch's objects are acyclic (refcounting frees them): no collections mid-batch
        try:
            applied = self._apply_batch(msgs)
        finally:
            if collecting:
                gc.enable()
        if applied and self.metrics is not None:
            self.metrics.set_settings_size(len(self.history), self.history.versions)
        return applied

    def _apply_batch(self, msgs: list[Message]) -> int:
        """Runs of one-step records (`SettingsHistory.apply_canonical_run`, one call per run), each other
        message in its place in between: errors, end-of-partition events and records for `apply_record`."""
        records = [(m.key(), m.value(), m.timestamp()[1], m.partition(), m.offset()) for m in msgs]
        run, topic, position = self.history.apply_canonical_run, self.topic, self.position
        applied = one_step = i = 0
        while i < len(msgs):
            taken = run(records, i, topic)  # type: ignore[arg-type]  # partition, offset: ints for records
            if taken > i:
                self._took(records, i, taken)
                one_step += taken - i
                applied += taken - i
                i = taken
                continue
            m = msgs[i]
            i += 1
            err = m.error()
            if err is None:
                self._apply(m)
                applied += 1
            elif err.code() == KafkaError._PARTITION_EOF:
                # The end offset reported at EOF also covers trailing transaction markers.
                p, off = m.partition(), m.offset()
                if p is not None and off is not None:
                    position[p] = max(position[p], off)
            else:
                log.warning("settings consumer error", extra=kv(error=err.str()))
        if one_step and self.metrics is not None:
            self.metrics.settings_applied(one_step)
        return applied

    def _took(self, records: list[tuple[Any, ...]], start: int, end: int) -> None:
        """Records start..end were applied in one step: positions (each partition's last, in C), `on_record`."""
        taken = records[start:end]
        for p, off in dict(zip(map(_PARTITION, taken), map(_OFFSET, taken), strict=True)).items():
            self.position[p] = off + 1
        if self.on_record is not None:
            for key, value, ts, p, off in taken:
                self.on_record(key, value, ts, self.topic, p, off, None)

    def _apply(self, m: Message) -> None:
        p, off = m.partition(), m.offset()
        assert p is not None and off is not None
        _, ts = m.timestamp()
        unknown_before = self.history.unknown_identity_types
        problem = self.history.apply_record(m.key(), m.value(), ts, self.topic, p, off)
        self.position[p] = off + 1
        if self.on_record is not None:
            self.on_record(m.key(), m.value(), ts, self.topic, p, off, problem)
        if self.metrics is not None:
            if problem is None:
                self.metrics.settings_applied()
            else:
                self.metrics.settings_rejected(problem.reason)
            if self.history.unknown_identity_types > unknown_before:
                self.metrics.settings_unknown_identity_types(self.history.unknown_identity_types - unknown_before)
        if problem is not None:
            log.error(
                "settings record rejected; the previous version stays in force",
                extra=kv(topic=self.topic, partition=p, offset=off, reason=problem.reason, detail=problem.detail),
            )
            return
        key = m.key()
        if key and not key_in_normal_form(key):
            log.warning(
                "settings record key is not in normal form (trimmed, lower-case); accepted, but only a record "
                "under this exact key replaces or deletes it on compaction (settings put/delete write under it)",
                extra=kv(key=printable(key.decode("utf-8", "replace")), topic=self.topic, partition=p, offset=off),
            )
        if self.history.last_downgrade is not None:
            account, types = self.history.last_downgrade
            log_downgrade(self.metrics, account, types, self.topic, p, off)

    def catch_up(self, deadline_s: float | None = None, *, refresh: bool = True) -> bool:
        """Read until the observed end offsets are reached (False if the deadline passed first)."""
        if refresh:
            self.refresh_targets()
        deadline = time.monotonic() + deadline_s if deadline_s is not None else None
        while not self.caught_up():
            if deadline is not None and time.monotonic() > deadline:
                return False
            self.poll(0.05)
        return True

    def ensure_fresh(
        self, staleness_s: float, stop: Callable[[], bool] = lambda: False, on_wait: Callable[[], None] = lambda: None
    ) -> bool:
        """Bounded staleness: caught up to end offsets observed less than `staleness_s` ago. False when
        `stop()` turned true while waiting; `on_wait` is called on every turn of the wait (liveness)."""
        if time.monotonic() - self.targets_at > staleness_s / 2:
            self.refresh_targets()
        waited_from = time.monotonic()
        warned = False
        while not self.caught_up():
            if stop():
                return False
            on_wait()
            self.poll(0.05)
            if not warned and time.monotonic() - waited_from > 5:
                warned = True
                log.warning("settings view is behind the topic end; holding evaluation", extra=kv(topic=self.topic))
        return True

    def close(self) -> None:
        self.consumer.close()
        self.offsets_client.close()
