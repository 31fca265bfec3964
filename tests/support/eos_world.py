"""Exactly-once at the edges: a seeded schedule explorer driving the real `Processor` over fake Kafka clients.

Each schedule (one seed) interleaves input arrival, loop turns, rebalances (assign / revoke / lost, whose
callbacks fire inside whichever consume call the schedule picks), crashes (the process is dropped and a new
one starts with the same transactional id), clean stops, a second live process sharing the transactional
id, and faults at every transactional step (retriable / abortable / fatal / hung, commits that landed
although the caller saw an error), failed seeks and committed-offset reads, failed deliveries
(at-least-once), an unexpected exception in the middle of a batch, and poison records (processing raises).
After every action it checks:

* the read_committed output holds exactly one eval event or dead letter per committed input offset
  (at-least-once: at least one), and nothing for an input offset not committed;
* the Prometheus attempt counters of all processes together equal the committed input;
* no offsets were committed for a partition its member had been told it no longer owns;
* no process died of a record (SPEC §7), fencing does not go on forever;
* no open transaction refused an offset (`Transaction.store_offsets`: they increase per partition);
* at the end, with faults off, all input gets committed (nothing stuck).


The tests of the schedules, and `python -m tests.stream.test_eos_explorer [--kinds a,b] [-n N] [--seed S]`
to explore from the command line: `tests/stream/test_eos_explorer.py`.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import random
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from processor.config import RunConfig
from processor.health import Health
from processor.metrics import Metrics
from processor.stream import attempt_stage as stage_mod
from processor.stream import loop as loop_mod
from processor.stream import producer as producer_mod
from processor.stream import transaction as transaction_mod
from processor.stream.loop import Processor
from processor.stream.transaction import NonIncreasingOffset
from tests.support.fake_consumer import FakeConsumer
from tests.support.fake_kafka import (
    Clock,
    Cluster,
    FakeCaller,
    FakeProducer,
)
from tests.support.fake_settings import FakeTable

logging.getLogger("access_eval").setLevel(logging.CRITICAL)  # thousands of schedules: no log lines

ALL_KINDS = frozenset(
    {"rebalance", "lost", "crash", "stop", "txn", "hung", "poison", "bug", "seek", "twin", "delivery", "startreset"}
)


class Poison(Exception):
    """What a poison record raises: its eval event's encoding fails, inside the stage's per-attempt
    `try` as a failing evaluation would be. Raised by the codec, which the stage is handed, not by a
    patched module function: a compiled stage (processor/native.py) calls those directly."""


class FakeCodec:
    headers: list[tuple[str, bytes]] = []

    def encode_evaluation(self, attempt: Any, verdict: Any, version: Any, exact: Any, now_ms: int) -> bytes:
        if attempt.data["action"] == "poison":
            raise Poison("poison record")
        return str(attempt.data["id"]).encode()


@contextlib.contextmanager
def patched(clock: Clock) -> Iterator[None]:
    """The stream modules see the fake clock and a synchronous transactional-call runner."""
    saved = [(loop_mod, "time", loop_mod.time), (transaction_mod, "time", transaction_mod.time),
             (producer_mod, "time", producer_mod.time), (stage_mod, "time", stage_mod.time),
             (producer_mod, "_Caller", producer_mod._Caller)]
    for mod, name, value in [(loop_mod, "time", clock), (transaction_mod, "time", clock), (producer_mod, "time", clock),
                             (stage_mod, "time", clock), (producer_mod, "_Caller", FakeCaller)]:
        setattr(mod, name, value)
    try:
        yield
    finally:
        for mod, name, value in saved:
            setattr(mod, name, value)


@functools.cache
def run_config(txn_id: str, delivery: str, batch_size: int, commit_interval_ms: int) -> RunConfig:
    return RunConfig(
        bootstrap_servers="fake:9092",
        transactional_id=txn_id,
        delivery=delivery,  # type: ignore[arg-type]
        batch_size=batch_size,
        commit_interval_ms=commit_interval_ms,
        shutdown_timeout_s=5,
        settings_topic="settings",
        attempts_topic="attempts",
        eval_topic="evals",
        dlq_topic="dlq",
    )


class LightMetrics:
    """What `Metrics.commit` adds to access_eval_attempts_total (len(tally)), without building a registry per
    process (the bulk explorer starts ~5 processes per schedule); everything else is a no-op."""

    account_labels: frozenset[str] = frozenset()

    def __init__(self) -> None:
        self.attempts_committed = 0

    def commit(self, tally: Any) -> None:
        self.attempts_committed += len(tally)

    def __getattr__(self, name: str) -> Any:
        return lambda *a, **k: None


class Violation(AssertionError):
    pass


@dataclass
class Proc:
    p: Processor
    name: str
    txn_id: str

    @property
    def consumer(self) -> FakeConsumer:
        c: FakeConsumer = self.p.consumer
        return c

    @property
    def producer(self) -> FakeProducer:
        assert self.p.txn is not None
        c: FakeProducer = self.p.txn.producer.client
        return c


@dataclass
class World:
    seed: int
    kinds: frozenset[str] = ALL_KINDS
    delivery: str = "exactly-once"
    real_metrics: bool = True
    rng: random.Random = field(init=False)
    clock: Clock = field(init=False)
    cluster: Cluster = field(init=False)
    procs: list[Proc] = field(default_factory=list)
    all_procs: list[Proc] = field(default_factory=list)
    metrics: list[Any] = field(default_factory=list)
    trace: list[str] = field(default_factory=list)
    twins: int = 0
    started: int = 0

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.clock = Clock()
        self.cluster = Cluster(self.rng, self.clock, partitions=2)
        if self.delivery == "at-least-once":
            self.kinds = self.kinds - {"twin"}

    # -- processes ---------------------------------------------------------------------------------

    def start(self, txn_id: str = "tx-0") -> Proc:
        self.started += 1
        cfg = run_config(txn_id, self.delivery, self.rng.choice([1, 2, 3, 8]), self.rng.choice([1, 50, 300]))
        metrics: Any = Metrics() if self.real_metrics else LightMetrics()
        self.metrics.append(metrics)
        cluster = self.cluster
        p = Processor(
            cfg, metrics, Health(), FakeCodec(),
            consumer_factory=lambda conf: FakeConsumer(cluster, conf),
            producer_factory=lambda conf: FakeProducer(cluster, conf),
            table_factory=FakeTable,
        )
        p.bootstrap()
        p.open_clients()
        p.subscribe()
        proc = Proc(p, f"P{self.started}", txn_id)
        self.procs.append(proc)
        self.all_procs.append(proc)
        return proc

    def drop(self, proc: Proc) -> None:
        """The process is gone (crashed or exited): the group and the coordinator eventually notice."""
        if proc in self.procs:
            self.procs.remove(proc)
        c = proc.consumer
        c.live = False
        c.events.clear()
        for p, owner in self.cluster.owner.items():
            if owner is c:
                self.cluster.owner[p] = None
        if proc.p.txn is not None:
            proc.producer.live = False

    def turn(self, proc: Proc) -> None:
        try:
            more = proc.p.turn()
        except Poison as exc:
            self.drop(proc)
            raise Violation(f"{proc.name} died of a record: {exc!r}") from None
        except NonIncreasingOffset as exc:  # the transaction refused what the loop handed it: a loop bug
            self.drop(proc)
            raise Violation(f"{proc.name}: {exc}") from None
        except Exception as exc:  # an unexpected error: the process exits (non-zero); a new one starts
            self.trace.append(f"  {proc.name} exited: {exc!r}")
            self.drop(proc)
            return
        if not more:
            self.trace.append(f"  {proc.name} ended (fatal={proc.p.fatal})")
            self.drop(proc)

    # -- actions -----------------------------------------------------------------------------------

    def add_input(self) -> None:
        rng = self.rng
        p = rng.choice(self.cluster.partitions)
        for _ in range(rng.randint(1, 4)):
            o = len(self.cluster.input[p])
            r = rng.random()
            action = "poison" if "poison" in self.kinds and r < 0.04 else "iam.read"
            if r > 0.95:
                value = b"{not json"
            else:
                event_time = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.clock.time() - 5))
                value = json.dumps({
                    "id": f"{p}:{o}", "event_time": event_time, "account_id": rng.choice(FakeTable.ACCOUNTS),
                    "identity": {"iam_id": "IBMid-1", "type": "user", "account_id": "other-acct"},
                    "action": action,
                }).encode()
            self.cluster.append(p, b"acct", value)

    def actions(self) -> list[tuple[str, float]]:
        k = self.kinds
        acts: list[tuple[str, float]] = [("input", 3), ("turn", 8), ("assign", 2), ("advance", 1)]
        if "rebalance" in k:
            acts.append(("revoke", 1.5))
        if "lost" in k:
            acts.append(("lost", 0.7))
        if "crash" in k:
            acts.append(("crash", 0.4))
        if "stop" in k:
            acts.append(("stop", 0.3))
        if "txn" in k or "hung" in k:
            acts.append(("fault", 1.5))
        if "seek" in k:
            acts.append(("seek", 0.7))
        if "startreset" in k:
            acts.append(("startreset", 0.5))
        if "bug" in k:
            acts.append(("bug", 0.3))
        if "twin" in k and self.twins == 0:
            acts.append(("twin", 0.3))
        if "delivery" in k and self.delivery == "at-least-once":
            acts.append(("deliver", 1.0))
        return acts

    def act(self) -> None:
        rng = self.rng
        acts = self.actions()
        name = rng.choices([a for a, _ in acts], weights=[w for _, w in acts])[0]
        if not self.procs:
            self.start()
        proc = rng.choice(self.procs)
        c = proc.consumer
        self.trace.append(f"{name} {proc.name}")
        if name == "input":
            self.add_input()
        elif name == "turn":
            self.turn(proc)
        elif name == "advance":
            self.clock.advance(rng.choice([0.01, 0.1, 0.5]))
        elif name == "assign":
            self._assign(c)
        elif name == "revoke":
            self._revoke(c)
        elif name == "lost":
            self._lose(c)
        elif name == "crash":
            self.drop(proc)
            self.start(proc.txn_id)
        elif name == "stop":
            proc.p.request_stop()
            self.turn(proc)
            self.drop(proc)
        elif name == "twin":
            self.twins += 1
            self.start(proc.txn_id)
        elif name == "fault":
            self._inject_fault(proc)
        elif name == "startreset":  # the client's own read at the next assignment says "none committed"
            c.faults.setdefault("assign_read", []).append("reset")
        elif name == "seek":
            which = rng.choice(["seek", "committed"])
            c.faults.setdefault(which, []).extend(["retriable"] * rng.randint(1, 3))
            self.trace[-1] += f" {which}"
        elif name == "bug":
            proc.producer.faults.setdefault("produce", []).extend(["ok"] * rng.randint(0, 3) + ["bug"])
        elif name == "deliver":
            proc.producer.faults.setdefault("deliver", []).append("fail")

    def _assign(self, c: FakeConsumer) -> None:
        """Hand some free partitions to consumer `c` (its next poll serves the callback)."""
        rng, cl = self.rng, self.cluster
        free = [p for p, o in cl.owner.items() if o is None]
        if free:
            parts = rng.sample(free, rng.randint(1, len(free)))
            for p in parts:
                cl.owner[p] = c
            c.events.append(("assign", parts))
            self.trace[-1] += f" {parts}"

    def _revoke(self, c: FakeConsumer) -> None:
        """Take back some of the partitions `c` owns and has no callback pending for."""
        rng, cl = self.rng, self.cluster
        pending = {p for _, ps in c.events for p in ps}
        mine = [p for p in c.assigned if cl.owner.get(p) is c and p not in pending]
        if mine:
            parts = rng.sample(mine, rng.randint(1, len(mine)))
            c.events.append(("revoke", parts))
            self.trace[-1] += f" {parts}"

    def _lose(self, c: FakeConsumer) -> None:
        """`c` loses every partition it owns or is being assigned (session timeout): a lost callback."""
        cl = self.cluster
        assigning = [p for kind, ps in c.events if kind == "assign" for p in ps]
        c.events = [e for e in c.events if e[0] != "assign"]
        for p, o in cl.owner.items():
            if o is c:
                cl.owner[p] = None
        parts = sorted(set(c.assigned) | set(assigning))
        c.events = [("lost", sorted(c.assigned))] if c.assigned else []
        self.trace[-1] += f" {parts}"

    def _inject_fault(self, proc: Proc) -> None:
        """Arm one transaction (or, at-least-once, offset commit) fault of the kinds explored."""
        rng, c = self.rng, proc.consumer
        prod = proc.producer
        choices: list[tuple[str, str]] = []
        if "txn" in self.kinds:
            choices += [("begin", "fatal"), ("send_offsets", "retriable"), ("send_offsets", "abortable"),
                        ("send_offsets", "fatal"), ("commit", "timeout"), ("commit", "timeout_landed"),
                        ("commit", "abortable"), ("commit", "fatal"), ("abort", "retriable"),
                        ("abort", "fatal")]
        if "hung" in self.kinds:
            choices += [("send_offsets", "hung"), ("commit", "hung"), ("commit", "hung_landed"),
                        ("abort", "hung")]
        if self.delivery == "at-least-once":
            choices = [("commit_offsets", "retriable")]
        call, kind = rng.choice(choices)
        if call == "commit_offsets":
            c.faults.setdefault("commit", []).append(kind)
        else:
            prod.faults.setdefault(call, []).append(kind)
        self.trace[-1] += f" {call}:{kind}"

    # -- invariants --------------------------------------------------------------------------------

    def counted(self) -> int:
        """access_eval_attempts_total over every process (the counter children, read directly: fast)."""
        total = 0
        for m in self.metrics:
            if isinstance(m, LightMetrics):
                total += m.attempts_committed
            else:
                total += int(sum(child._value.get() for child in m.attempts._metrics.values()))
        return total

    def check(self) -> None:
        cl = self.cluster
        if cl.violations:
            raise Violation(cl.violations[0])
        outs = Counter(r.source() for r in cl.committed_outputs())
        expected = {(p, o) for p, c in cl.committed.items() for o in range(c)}
        for src in sorted(expected):
            n = outs.get(src, 0)
            if n == 0:
                raise Violation(f"input {src} committed without its output (lost)")
            if n > 1 and self.delivery == "exactly-once":
                raise Violation(f"input {src} has {n} committed outputs (duplicate)")
        if self.delivery == "exactly-once":
            extra = sorted(set(outs) - expected)
            if extra:
                raise Violation(f"committed output for input {extra[0]} whose offset is not committed")
        committed = sum(cl.committed.values())
        # A commit whose outcome could not be read before a shutdown deadline is not counted: under, never over.
        unknown = any(pr.p.txn is not None and pr.p.txn.unknown_outcomes for pr in self.all_procs)
        if self.counted() != committed and not (unknown and self.counted() < committed):
            raise Violation(f"counters say {self.counted()} attempts, {committed} committed")
        if cl.fence_events > 10:
            raise Violation(f"fencing goes on: {cl.fence_events} fencings between live processes")

    def drain(self) -> None:
        """Faults off, every partition owned: everything gets committed eventually."""
        cl = self.cluster
        for c in cl.consumers:
            c.faults.clear()
        for pr in cl.producers:
            pr.faults.clear()
        cl.fire_probability = 1.0
        for _ in range(300):
            if all(cl.committed.get(p, 0) >= len(cl.input[p]) for p in cl.partitions):
                return
            if not self.procs:
                self.start()
            proc = self.procs[0]
            free = [p for p, o in cl.owner.items() if o is None]
            if free:
                for p in free:
                    cl.owner[p] = proc.consumer
                proc.consumer.events.append(("assign", free))
            self.clock.advance(0.1)
            for pr in list(self.procs):
                self.turn(pr)
            self.check()
        raise Violation(f"stuck: committed {cl.committed}, input {[len(v) for v in cl.input.values()]}")

    def run(self, steps: int) -> None:
        with patched(self.clock):
            self.start()
            for _ in range(steps):
                self.act()
                self.check()
            self.trace.append("drain")
            self.drain()
            self.check()


def explore(kinds: frozenset[str] = ALL_KINDS, n: int = 1000, seed: int = 0, steps: int = 40,
            delivery: str = "exactly-once", real_metrics: bool = True) -> tuple[int, int, World] | None:
    """Run schedules seed, seed+1, ...; (schedules run, failing seed, its world) at the first violation."""
    for i in range(n):
        w = World(seed + i, kinds, delivery, real_metrics)
        try:
            w.run(steps)
        except Violation:
            return i + 1, seed + i, w
    return None


def valid_attempt(w: World, p: int, o: int) -> bytes:
    """A valid attempt (its id is "p:o"), five seconds old on the world's clock."""
    return json.dumps({
        "id": f"{p}:{o}", "event_time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(w.clock.time() - 5)),
        "account_id": "acct-a", "action": "iam.read",
        "identity": {"iam_id": "i", "type": "user", "account_id": "other"},
    }).encode()


def serve(w: World, turns: int = 200) -> Any:
    """One process owning both partitions, turned `turns` times; the process."""
    a = w.start()
    for p in w.cluster.partitions:
        w.cluster.owner[p] = a.consumer
    a.consumer.events.append(("assign", list(w.cluster.partitions)))
    w.cluster.fire_probability = 1.0
    for _ in range(turns):
        w.turn(a)
        w.clock.advance(0.05)
        if all(w.cluster.committed.get(p, 0) >= len(w.cluster.input[p]) for p in w.cluster.partitions):
            break
    return a
