"""The soak's load: attempts at a steady rate, settings churn, and a committed-output tail reader.

Attempts follow `processor.local.workload` (its accounts, allowlists and mix, 1 % invalid) plus
hostile payloads (tests/support/hostile_attempts.py: `hostile_payloads`), with wall-clock event times, some of
them late (up to `LATE_MAX_S` in the past).

Settings churn changes one account at a time: a new version, an out-of-order pair (a version
effective later, then one effective earlier: the `updated_at` of the two go backwards), an invalid
record followed by a valid fix, or a tombstone. What the model expects must not depend on which
processor life evaluates an attempt or on how far the cleaner has compacted the settings topic, so
each change follows the contract's determinism condition (docs/contract.md §6.5): the account is
frozen (no new attempts target it), its attempts already published are all committed (the group's
committed offset passed the last one), the records are published with effective times no earlier
than the event time of any attempt of the account, and attempts resume `HOLD_S` (more than the
processor's 500 ms staleness bound) after the records were acknowledged. Late attempts never reach
back before the account's last change. So every attempt is governed by the account's latest
record, which compaction keeps: live, restarted and replaying processors must all agree with the
model over the settings history as published. (Except, by design, for the out-of-order pair; see
docs/guarantees.md "Soak".)
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter, defaultdict, deque
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from processor.codec.avro import EvalCodec
from processor.core.ids import IDENTITY_TYPES
from processor.core.times import rfc3339_millis
from processor.local.workload import Mix, Workload, account_id
from tests.support.hostile_attempts import HOSTILE_TARGET, draw_examples, hostile_payloads
from tests.support.kafka_harness import Topics
from tests.support.settings_churn import invalid_settings, settings_doc
from tests.support.spec_model import SettingsRecord, expect

LATE_SHARE = 0.05
LATE_MAX_S = 120.0
HOSTILE_SHARE = 0.005
HOLD_S = 1.5
SETTLE_TIMEOUT_S = 60.0
INITIAL_AGE_MS = 3_600_000


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class Ledger:
    """What was published, shared by the traffic, churn and tail threads (under `lock`)."""

    frozen: set[str] = field(default_factory=set)
    floor: dict[str, int] = field(default_factory=dict)  # account -> newest effective time published
    pending: Counter[str] = field(default_factory=Counter)  # account -> attempts not yet acknowledged
    last: dict[str, tuple[int, int]] = field(default_factory=dict)  # account -> (partition, offset) of its last
    published_ms: dict[str, int] = field(default_factory=dict)  # attempt id -> publication time
    settings: list[tuple[int, SettingsRecord]] = field(default_factory=list)  # (offset, record)
    changes: Counter[str] = field(default_factory=Counter)
    churn: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))  # account -> change kinds
    versions_now: dict[tuple[str, int], int] = field(default_factory=dict)  # (account, effective) -> record ts
    attempts_sent: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def history(self) -> list[SettingsRecord]:
        """The settings records as published, in log order."""
        return [r for _, r in sorted(self.settings, key=lambda x: x[0])]


def clock_free_invalid(values: list[bytes]) -> list[bytes]:
    """The payloads the model rejects whatever the evaluating clock over the next 30 days: the checker
    runs the model after the soak, with a later clock than the processors had (an event time "more
    than 1 h ahead" when sent may not be at the check)."""
    later = now_ms() + 30 * 86_400_000
    return [v for v in values if expect([], [v]).invalid and expect([], [v], now_ms=later).invalid]


class Traffic(threading.Thread):
    """Attempts at `rate` per second until `stop` is set; targets of frozen accounts are skipped."""

    def __init__(self, topics: Topics, ledger: Ledger, rate: float, seed: int, timeline: Any) -> None:
        super().__init__(name="traffic", daemon=True)
        self.topics, self.ledger, self.rate, self.timeline = topics, ledger, rate, timeline
        self.rng = random.Random(seed + 11)
        self.workload = Workload(seed=seed, accounts=300, allowlist_max=5, mix=Mix(invalid=0.01))
        self.initial = list(self.workload.settings())
        self.hostile = clock_free_invalid([v for _, v in draw_examples(hostile_payloads(now_ms()), 200, seed)])
        self.probes: deque[tuple[bytes, bytes, str]] = deque()  # sent before the next regular attempt
        self.stop = threading.Event()
        self.failures: list[str] = []

    def probe(self, account: str, n: int) -> None:
        """One attempt per identity type on a changed account, from a stranger: an event for every type
        in monitor or limited, naming the new version (settings propagation)."""
        for itype in IDENTITY_TYPES:
            stranger = account_id(self.rng)
            doc = {"id": f"probe-{n}-{itype}", "event_time": rfc3339_millis(now_ms()), "account_id": account,
                   "identity": {"iam_id": f"iam-{stranger[:6]}", "type": itype, "account_id": stranger},
                   "action": "iam-identity.apikey.list"}
            self.probes.append((account.encode(), json.dumps(doc, separators=(",", ":")).encode(), account))

    def _delivered(self, account: str | None) -> Any:
        def cb(err: KafkaError | None, msg: Any) -> None:
            if err is not None:
                self.failures.append(err.str())
            with self.ledger.lock:
                if account is not None:
                    self.ledger.pending[account] -= 1
                    if err is None:
                        self.ledger.last[account] = (msg.partition(), msg.offset())
        return cb

    def _next(self, source: Any) -> tuple[bytes, bytes, str | None]:
        """The next attempt to send: (key, value, target account or None)."""
        if self.probes:
            return self.probes.popleft()
        if self.rng.random() < HOSTILE_SHARE:
            return HOSTILE_TARGET.encode(), self.rng.choice(self.hostile), None
        while True:
            key, value, label = next(source)
            if label == "invalid":
                return key, value, None
            target = key.decode()
            with self.ledger.lock:
                if target in self.ledger.frozen:
                    continue
                floor = self.ledger.floor.get(target, 0)
            if self.rng.random() < LATE_SHARE:
                late = now_ms() - int(self.rng.uniform(1.0, LATE_MAX_S) * 1000)
                if late >= floor:
                    doc = json.loads(value)
                    doc["event_time"] = rfc3339_millis(late)
                    value = json.dumps(doc, separators=(",", ":")).encode()
            return key, value, target

    def run(self) -> None:
        p = Producer({"bootstrap.servers": self.topics.bootstrap, "enable.idempotence": True, "linger.ms": 5,
                      "log_level": 0})
        source = self.workload.attempts(10**9, step_ms=None)
        started, sent = time.monotonic(), 0
        while not self.stop.is_set():
            due = int((time.monotonic() - started) * self.rate) - sent
            for _ in range(max(0, due)):
                key, value, target = self._next(source)
                with self.ledger.lock:
                    if target is not None:
                        self.ledger.pending[target] += 1
                    if value.startswith(b"{") and target is not None:
                        self.ledger.published_ms[json.loads(value)["id"]] = now_ms()
                    self.ledger.attempts_sent += 1
                while True:
                    try:
                        p.produce(self.topics.attempts, value, key, on_delivery=self._delivered(target))
                        break
                    except BufferError:
                        p.poll(0.1)
                sent += 1
            p.poll(0.02)
        if p.flush(300) != 0:
            self.failures.append("attempts left undelivered at the end")


class Churn(threading.Thread):
    """Settings changes, one account at a time (module docstring), until `stop` is set."""

    def __init__(self, topics: Topics, ledger: Ledger, traffic: Traffic, seed: int, out_of_order: bool,
                 timeline: Any, every_s: float = 2.0) -> None:
        super().__init__(name="churn", daemon=True)
        self.topics, self.ledger, self.traffic, self.timeline = topics, ledger, traffic, timeline
        self.rng = random.Random(seed + 13)
        self.out_of_order, self.every_s = out_of_order, every_s
        self.stop = threading.Event()
        self.failures: list[str] = []
        self.producer = Producer({"bootstrap.servers": topics.bootstrap, "enable.idempotence": True, "linger.ms": 0,
                                  "log_level": 0})
        self.offsets = Consumer({"bootstrap.servers": topics.bootstrap, "group.id": topics.group,
                                 "enable.auto.commit": False, "log_level": 0})

    def publish(self, records: list[tuple[bytes, bytes | None, int]]) -> None:
        """Publish in order and wait for the acknowledgements; remember each record's offset."""
        done: list[tuple[int, SettingsRecord]] = []

        def cb(err: KafkaError | None, msg: Any) -> None:
            if err is not None:
                self.failures.append(f"settings record undelivered: {err.str()}")
            else:
                done.append((msg.offset(), (msg.key(), msg.value(), msg.timestamp()[1])))

        for key, value, ts in records:
            self.producer.produce(self.topics.settings, value, key, timestamp=ts, on_delivery=cb)
            self.producer.flush(120)
        with self.ledger.lock:
            self.ledger.settings += done

    def settled(self, account: str) -> bool:
        """Every attempt of the account published so far is acknowledged and committed by the group."""
        with self.ledger.lock:
            if self.ledger.pending[account] > 0:
                return False
            last = self.ledger.last.get(account)
        if last is None:
            return True
        try:
            got = self.offsets.committed([TopicPartition(self.topics.attempts, last[0])], timeout=5)
        except KafkaException:
            return False
        return bool(got) and got[0].offset > last[1]

    def _records(self, account: str, kind: str, t: int) -> tuple[list[tuple[bytes, bytes | None, int]], int]:
        """The records of one change, all effective at `t` or later, and the newest effective time."""
        key = account.encode()
        externals = self.traffic.workload.allow.get(account, []) + [account_id(self.rng) for _ in range(4)]

        def doc(at: int) -> bytes:
            return json.dumps(settings_doc(account, self.rng, externals, at)).encode()

        if kind == "out_of_order":  # updated_at goes backwards: later first, then t
            later = t + int(self.rng.uniform(3, 20) * 1000)
            return [(key, doc(later), now_ms()), (key, doc(t), now_ms())], later
        if kind == "invalid":
            return [(key, invalid_settings(account, self.rng.randrange(4), t), now_ms()), (key, doc(t), now_ms())], t
        if kind == "tombstone":  # effective from its record timestamp
            return [(key, None, t)], t
        return [(key, doc(t), now_ms())], t

    def change(self, account: str) -> bool:
        """One change of a frozen account once it is settled; False if it did not settle in time."""
        deadline = time.monotonic() + SETTLE_TIMEOUT_S
        while not self.settled(account):
            if time.monotonic() > deadline or self.stop.is_set():
                return False
            time.sleep(0.3)  # polling the group's committed offset
        kind = self.rng.choice(["version", "version", "invalid", "tombstone"] + ["out_of_order"] * self.out_of_order)
        with self.ledger.lock:
            t = max(now_ms(), self.ledger.floor.get(account, 0) + 1)
        records, newest = self._records(account, kind, t)
        self.publish(records)
        with self.ledger.lock:
            self.ledger.floor[account] = newest
            if kind != "tombstone":
                self.ledger.versions_now[(account, t)] = records[-1][2]
            self.ledger.changes[kind] += 1
            self.ledger.churn[account].append(kind)
        self.timeline.write("settings", kind=kind, account=account[:8], effective_ms=t, newest_ms=newest)
        time.sleep(HOLD_S)  # the contract's staleness bound (500 ms) plus slack: then attempts resume
        with self.ledger.lock:
            self.ledger.frozen.discard(account)
        self.traffic.probe(account, sum(self.ledger.changes.values()))
        return True

    def run(self) -> None:
        accounts = [str(d["account_id"]) for d in self.traffic.initial]
        while not self.stop.wait(self.rng.uniform(0.5, 2 * self.every_s)):
            with self.ledger.lock:
                quiet = [a for a in accounts if self.ledger.floor.get(a, 0) < now_ms() - 1000]
            if not quiet:
                continue
            account = self.rng.choice(quiet)
            with self.ledger.lock:
                self.ledger.frozen.add(account)
            try:
                if not self.change(account):
                    self.ledger.changes["skipped (not settled)"] += 1
            finally:
                with self.ledger.lock:
                    self.ledger.frozen.discard(account)
        self.offsets.close()

    def initial(self, docs: list[dict[str, object]]) -> None:
        t = now_ms() - INITIAL_AGE_MS
        self.publish([(str(d["account_id"]).encode(), json.dumps({**d, "updated_at": rfc3339_millis(t)}).encode(),
                       now_ms()) for d in docs])
        with self.ledger.lock:
            for d in docs:
                self.ledger.floor[str(d["account_id"])] = t


@dataclass
class Second:
    """Per-second figures of the committed output, as the tail reader sees it arrive."""

    events: int = 0
    dead: int = 0
    latency_max_ms: int = 0


class Tail(threading.Thread):
    """A read_committed reader of the eval and dead-letter topics, live: throughput, end-to-end
    latency (publication to visible commit) and settings propagation (record timestamp to the first
    committed event naming the version)."""

    def __init__(self, topics: Topics, ledger: Ledger, clock: float) -> None:
        super().__init__(name="tail", daemon=True)
        self.topics, self.ledger, self.clock = topics, ledger, clock
        self.seconds: dict[int, Second] = defaultdict(Second)
        self.propagation_ms: dict[tuple[str, int], int] = {}
        self.stop = threading.Event()

    def _event(self, value: bytes, codec: EvalCodec, second: Second, at: int) -> None:
        event = codec.decode(value)
        second.events += 1
        with self.ledger.lock:
            sent = self.ledger.published_ms.pop(event["attemptId"], None)
            version = event["responseData"]["settingsVersion"]
            effective = version["effectiveTime"] if version else None
            if effective is not None:
                ms = round(effective.timestamp() * 1000) if hasattr(effective, "timestamp") else int(effective)
                key = (event["target"]["accountId"], ms)
                ts = self.ledger.versions_now.pop(key, None)
                if ts is not None:
                    self.propagation_ms[key] = at - ts
        if sent is not None:
            second.latency_max_ms = max(second.latency_max_ms, at - sent)

    def run(self) -> None:
        c = Consumer({"bootstrap.servers": self.topics.bootstrap, "group.id": f"soak-tail-{time.time_ns()}",
                      "isolation.level": "read_committed", "auto.offset.reset": "earliest",
                      "enable.auto.commit": False, "log_level": 0})
        c.subscribe([self.topics.evals, self.topics.dlq])
        codec = EvalCodec()
        while not self.stop.is_set():
            for m in c.consume(500, 0.2):
                if m.error() is not None:
                    continue
                at = now_ms()
                second = self.seconds[int(time.monotonic() - self.clock)]
                if m.topic() == self.topics.dlq:
                    second.dead += 1
                else:
                    self._event(m.value(), codec, second, at)
        c.close()
