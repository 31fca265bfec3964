"""The soak's one checker, run once every fault is healed and every attempt is committed.

- A read_committed reader finds exactly one eval event per expected attempt, and each event equals
  the contract model's (tests/support/spec_model.py `expect`, fed the settings records as published, in log
  order, and every attempt value as read back from the attempts topic), field by field (`project`).
- Exactly one dead letter per attempt the model calls invalid, by source partition and offset.
- No uncommitted output is visible: the read_committed reader reaches the end offsets (no
  transaction left open), what it returns is a subset of what a read_uncommitted reader returns,
  and the difference (records of aborted transactions) is reported; those attempts are, like every
  other, found exactly once by the read_committed reader.
- Every processor that got SIGTERM exited 0, or 1 where the contract allows it (docs/contract.md §8:
  the stop could not finish within --shutdown-timeout-s because Kafka was unreachable; accepted
  only when the exit took that long and a broker or network fault that hits that instance was under
  way during the stop, or had ended before it without the instance having committed since).
- Counters: per outcome (in total and for invalid only, when some events differ from the model, whose
  outcomes are then not the processor's), the sum over every processor life of `access_eval_attempts_total` (the
  lives alive at the end scraped after everything was committed, the dead ones as last scraped
  before the signal) never exceeds the committed output (the model's outcome of every attempt).
  Equality cannot be proved for a SIGKILLed life (a commit can land between the last scrape and the
  kill, unobservably) nor a SIGTERMed one (its shutdown commits the open transaction after the
  scrape), so the shortfall is reported, not asserted, when a life died.

Each difference names the attempt id, its partition and offset (input, and output for copies) and
the fault windows it fell into (by publication time, and by output time for copies).
"""

from __future__ import annotations

import json
import signal
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, KafkaError, TopicPartition

from processor.codec.avro import EvalCodec
from tests.support.kafka_harness import Topics
from tests.support.processor_harness import end_offsets
from tests.support.soak_nemesis import Fault
from tests.support.soak_world import SHUTDOWN_TIMEOUT_S, Life, first_commit_after
from tests.support.spec_model import SettingsRecord, differences, expect, project

MAX_DIFFS = 20
#: Faults that cut an instance off Kafka or slow it past the shutdown timeout (broker faults hit every
#: instance, proxy faults the proxied one: `Fault.affected`).
UNREACHABLE_KINDS = frozenset({"broker-kill", "quorum-loss", "partition-all", "partition-one", "latency",
                               "bandwidth", "reset"})
#: A fault ended longer ago than this no longer explains a stop (the soak's limit for a recovery).
RECOVERY_LIMIT_S = 180.0
FINAL = "SIGTERM after the check point"  # how a life ends that ran until everything was committed


def read_all(bootstrap: str, topic: str, isolation: str, timeout: float = 300) -> list[Any]:
    """Every record up to the end offsets, with the given isolation level; fails if the reader does not
    get there (read_committed: a transaction left open holds the last stable offset back)."""
    ends = end_offsets(bootstrap, topic)
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"soak-check-{time.time_ns()}",
                  "isolation.level": isolation, "enable.auto.commit": False, "enable.partition.eof": True,
                  "fetch.max.bytes": 50_000_000})
    c.assign([TopicPartition(topic, p, 0) for p in ends])
    out: list[Any] = []
    done = {p for p, e in ends.items() if e == 0}
    deadline = time.monotonic() + timeout
    try:
        while len(done) < len(ends):
            if time.monotonic() > deadline:
                raise AssertionError(f"{isolation} reader of {topic} not at the end offsets {ends} after {timeout} s "
                                     f"(partitions done: {sorted(done)}): a transaction left open?")
            for m in c.consume(5000, 0.5):
                if m.error() is None:
                    out.append(m)
                elif m.error().code() == KafkaError._PARTITION_EOF:
                    done.add(m.partition())
    finally:
        c.close()
    return out


@dataclass
class Verdict:
    attempts: int = 0
    events_expected: int = 0
    events_checked: int = 0
    dead_expected: int = 0
    dead_checked: int = 0
    lost: int = 0
    duplicated: int = 0
    unexpected: int = 0
    mismatched: int = 0
    aborted_records: int = 0
    uncommitted_visible: int = 0
    bad_exits: list[str] = field(default_factory=list)
    exits_unreachable: list[str] = field(default_factory=list)  # exit 1 as the contract allows
    counters: dict[str, Any] = field(default_factory=dict)
    counter_excess: dict[str, float] = field(default_factory=dict)
    diffs: list[dict[str, Any]] = field(default_factory=list)
    diff_kinds: Counter[str] = field(default_factory=Counter)
    diffs_out_of_order: int = 0  # differences on accounts that had out-of-order updated_at churn
    #: input partition -> [differences, lowest offset, highest offset]: where a re-read or a loss lies
    diff_ranges: dict[int, list[int]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.lost or self.duplicated or self.unexpected or self.mismatched or self.uncommitted_visible
                    or self.bad_exits or self.counter_excess or self.problems)

    def add(self, kind: str, **what: Any) -> None:
        self.diff_kinds[kind] += 1
        if "out_of_order" in what.get("churn", ()):
            self.diffs_out_of_order += 1
        if what.get("input"):
            partition, offset = what["input"]
            r = self.diff_ranges.setdefault(partition, [0, offset, offset])
            r[0], r[1], r[2] = r[0] + 1, min(r[1], offset), max(r[2], offset)
        if len(self.diffs) < MAX_DIFFS:
            self.diffs.append({"kind": kind, **what})


class Windows:
    """Which faults were under way at a time (soak seconds); times in ms since the epoch are mapped."""

    def __init__(self, faults: list[Fault], epoch_ms: int, until: float) -> None:
        self.faults, self.epoch_ms, self.until = faults, epoch_ms, until

    def at_ms(self, ms: int | None) -> list[str]:
        return [] if ms is None else self.at((ms - self.epoch_ms) / 1000)

    def at(self, t: float) -> list[str]:
        return self.during(t, t)

    def during(self, t0: float, t1: float) -> list[str]:
        """The faults under way at any time from t0 to t1."""
        return [self.name(f) for f in self.faults if f.start <= t1 and t0 <= self.end(f)] \
            or [f"none (t={t0:.1f} s)" if t0 == t1 else f"none ({t0:.1f}-{t1:.1f} s)"]

    def end(self, f: Fault) -> float:
        return f.end if f.end is not None else self.until

    def name(self, f: Fault) -> str:
        return f"#{f.id} {f.kind} {f.target} [{f.start:.1f}-{self.end(f):.1f} s]"

    def cutting_off(self, instance: str, t0: float, t1: float,
                    rises: dict[str, list[tuple[float, float]]]) -> list[str]:
        """The faults that can keep `instance` from finishing a stop from t0 to t1: of a kind that cuts it
        off Kafka, hitting it (a proxy fault hits only the proxied instance), and under way during the
        stop, or ended before it while the instance had not committed since (`rises`: (scrape before,
        scrape that saw the committed counter rise)): e.g. a restarted broker whose coordinators were
        still moving. A fault elsewhere explains nothing (the 60-minute run of 1318996 named a partition
        of p0 for an exit of p2)."""
        out = []
        for f in self.faults:
            end = self.end(f)
            if f.kind not in UNREACHABLE_KINDS or (f.affected and instance not in f.affected) or f.start > t1:
                continue
            if end < t0:
                seen = first_commit_after(rises, instance, end)
                if t0 - end > RECOVERY_LIMIT_S or (seen is not None and seen <= t0):
                    continue  # recovered from (it committed since), or too long ago
            out.append(self.name(f) + ("" if end >= t0 else f", not recovered from by {t0:.1f} s"))
        return out


def _coords(m: Any) -> tuple[int, int]:
    return m.partition(), m.offset()


def decode(evals: list[Any]) -> list[tuple[Any, dict[str, Any]]]:
    """(record, its projection) of every eval event record."""
    codec = EvalCodec()
    return [(m, project(codec.decode(m.value()), m.key())) for m in evals]


def check_events(v: Verdict, expected: dict[str, dict[str, Any]], inputs: dict[str, Any],
                 evals: list[tuple[Any, dict[str, Any]]], windows: Windows,
                 churn: dict[str, list[str]] | None = None,
                 aborted: dict[str, list[Any]] | None = None) -> None:
    """Each expected attempt id exactly once, equal to the model's projection; nothing else. `churn`:
    the settings changes of each account, named in each difference. `aborted`: the records of aborted
    transactions per attempt id; a lost event names its aborted copies (written, then aborted, while
    its input offset was committed: a transaction whose outcome was split) or says there were none."""
    got: dict[str, list[tuple[Any, dict[str, Any]]]] = defaultdict(list)
    for m, projection in evals:
        got[projection["attemptId"]].append((m, projection))
    v.events_checked = len(evals)
    def input_order(aid: str) -> tuple[int, int, str]:  # differences listed as the input has them
        src = inputs.get(aid)
        return (*_coords(src), "") if src is not None else (1 << 31, 0, aid)

    for aid in sorted(expected.keys() | got.keys(), key=input_order):
        src = inputs.get(aid)
        account = src.key().decode("utf-8", "replace") if src is not None and src.key() else None
        where = {"attempt": aid, "input": list(_coords(src)) if src is not None else None,
                 "published_in": windows.at_ms(src.timestamp()[1] if src is not None else None),
                 "account": account, "churn": (churn or {}).get(account or "", [])}
        copies = got.get(aid, [])
        if aid not in expected:
            v.unexpected += len(copies)
            v.add("unexpected", **where, output=[list(_coords(m)) for m, _ in copies])
            continue
        if not copies:
            v.lost += 1
            gone = (aborted or {}).get(aid, [])
            v.add("lost", **where, aborted_output=[list(_coords(m)) for m in gone],
                  aborted_output_in=[windows.at_ms(m.timestamp()[1]) for m in gone])
            continue
        if len(copies) > 1:
            v.duplicated += len(copies) - 1
            v.add("duplicated", **where, output=[list(_coords(m)) for m, _ in copies],
                  output_in=[windows.at_ms(m.timestamp()[1]) for m, _ in copies])
        m, projection = copies[0]
        if projection != expected[aid]:
            v.mismatched += 1
            v.add("content", **where, output=list(_coords(m)), output_in=windows.at_ms(m.timestamp()[1]),
                  fields=differences(projection, expected[aid]))


def check_dead(v: Verdict, invalid: set[tuple[int, int]], dead: list[Any], source_topic: str,
               windows: Windows, ts: dict[tuple[int, int], int]) -> None:
    seen: Counter[tuple[int, int]] = Counter()
    for m in dead:
        h = dict(m.headers() or [])
        if h.get("source.topic") != source_topic.encode() or not h.get("error.reason"):
            v.problems.append(f"dead letter at {list(_coords(m))} without source topic or reason: {h}")
            continue
        seen[(int(h["source.partition"]), int(h["source.offset"]))] += 1
    v.dead_checked = len(dead)
    for coords in sorted(invalid | seen.keys()):
        where = {"attempt": "(invalid)", "input": list(coords), "published_in": windows.at_ms(ts.get(coords))}
        n = seen.get(coords, 0)
        if coords not in invalid:
            v.unexpected += n
            v.add("unexpected dead letter", **where)
        elif n == 0:
            v.lost += 1
            v.add("dead letter lost", **where)
        elif n > 1:
            v.duplicated += n - 1
            v.add("dead letter duplicated", **where, copies=n)


def check_isolation(v: Verdict, bootstrap: str, topic: str, committed: list[Any]) -> list[Any]:
    """Counts what read_committed shows that the topic does not hold, and the aborted records; returns those."""
    everything = read_all(bootstrap, topic, "read_uncommitted")
    all_coords = {_coords(m) for m in everything}
    seen = {_coords(m) for m in committed}
    v.uncommitted_visible += len(seen - all_coords)
    v.aborted_records += len(all_coords - seen)
    return [m for m in everything if _coords(m) not in seen]


def aborted_by_attempt(aborted: list[Any]) -> dict[str, list[Any]]:
    """The aborted eval event records per attempt id."""
    out: dict[str, list[Any]] = defaultdict(list)
    for m, projection in decode(aborted):
        out[str(projection["attemptId"])].append(m)
    return out


def check_counters(v: Verdict, lives: list[dict[str, Any]], outcomes: list[str]) -> None:
    """Counted never above committed, per outcome; the outcomes are the model's, so when some events
    differ from the model (checked before) only the total and the invalid ones are compared."""
    committed = Counter(outcomes)
    counted: Counter[str] = Counter()
    for life in lives:
        counted.update({k: int(x) for k, x in life["counted"].items()})
    per_outcome = not (v.mismatched or v.lost or v.unexpected)
    if not per_outcome:
        committed = Counter({"all": len(outcomes), "invalid": committed["invalid"]})
        counted = Counter({"all": sum(counted.values()), "invalid": counted["invalid"]})
    v.counters = {"compared": "per outcome" if per_outcome else "in total and invalid (events differ from the model)",
                  "committed_output": dict(committed), "counted_by_lives": dict(counted),
                  "lives": len(lives), "lives_died": sum(1 for x in lives if x["how"] not in ("", FINAL)),
                  "shortfall": {k: committed[k] - counted.get(k, 0) for k in committed}}
    v.counter_excess = {k: n - committed.get(k, 0) for k, n in counted.items() if n > committed.get(k, 0)}
    if not v.counters["lives_died"] and any(v.counters["shortfall"].values()):
        v.problems.append(f"no processor life died, yet counters fall short of the output: {v.counters}")


def not_started(life: Life) -> bool:
    """The process wrote nothing at all: the signal came while the Python interpreter was starting,
    before `run`'s first line (which installs the handler) ran; the operating system's default ends it."""
    path = getattr(life.proc, "log_path", None)
    return path is not None and path.exists() and path.stat().st_size == 0


def sigterm_exits(lives: list[Life], windows: Windows,
                  rises: dict[str, list[tuple[float, float]]] | None = None) -> tuple[list[str], list[str]]:
    """SIGTERM must give exit 0; exit 1 only as the contract allows it (§8): the stop could not finish
    within --shutdown-timeout-s because Kafka was unreachable for that instance (`Windows.cutting_off`:
    one that begins during the stop counts too)."""
    bad, allowed = [], []
    for life in lives:
        if life.rc == 0 or life.signalled is None:
            continue
        took = (life.ended or life.signalled) - life.signalled
        cut = windows.cutting_off(life.instance, life.signalled, life.ended or life.signalled, rises or {})
        what = f"{life.instance}#{life.number} exited {life.rc} {took:.1f} s after SIGTERM at {life.signalled:.1f} s"
        if life.rc == 1 and took >= SHUTDOWN_TIMEOUT_S - 1 and cut:
            allowed.append(f"{what}, during {cut}")
        elif life.rc == -signal.SIGTERM and not_started(life):
            allowed.append(f"{what}, before the interpreter ran any of its code (empty log)")
        else:
            bad.append(what)
    return bad, allowed


def check(topics: Topics, settings: list[SettingsRecord], lives: list[dict[str, Any]], term_exits: list[Life],
          faults: list[Fault], epoch_ms: int, until: float, churn: dict[str, list[str]],
          rises: dict[str, list[tuple[float, float]]] | None = None) -> Verdict:
    v = Verdict()
    windows = Windows(faults, epoch_ms, until)
    bootstrap = topics.bootstrap
    attempts = read_all(bootstrap, topics.attempts, "read_committed")
    v.attempts = len(attempts)
    spec = expect(settings, [m.value() for m in attempts])
    inputs: dict[str, Any] = {}
    for i, m in enumerate(attempts):
        if spec.outcomes[i] != "invalid":
            inputs[json.loads(m.value())["id"]] = m
    invalid = {_coords(attempts[i]) for i in spec.invalid}
    v.events_expected, v.dead_expected = len(spec.events), len(invalid)
    try:
        evals = read_all(bootstrap, topics.evals, "read_committed")
        dead = read_all(bootstrap, topics.dlq, "read_committed")
    except AssertionError as exc:
        v.problems.append(str(exc))
        return v
    aborted = check_isolation(v, bootstrap, topics.evals, evals)
    check_isolation(v, bootstrap, topics.dlq, dead)
    check_events(v, spec.events, inputs, decode(evals), windows, churn, aborted_by_attempt(aborted))
    check_dead(v, invalid, dead, topics.attempts, windows, {_coords(m): m.timestamp()[1] for m in attempts})
    v.bad_exits, v.exits_unreachable = sigterm_exits(term_exits, windows, rises)
    check_counters(v, lives, spec.outcomes)
    return v
