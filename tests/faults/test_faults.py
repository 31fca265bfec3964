"""Reliability under faults (SPEC §7 bad input, §8 delivery), against the real broker.

Every test ends with the same check (fault_harness.check_exactly_once): a read_committed reader
finds exactly one eval event per expected attempt, and exactly one dead letter per invalid attempt
(by source partition/offset). What is expected comes from the contract's model (tests/support/spec_model.py,
no processor code): which attempts get an event, and each event's decision, settings version,
echoed attempt fields and key; so a bug in the evaluation core fails these tests too. Figures go
to stdout and to $ACCESS_EVAL_FAULT_REPORT (docs/guarantees.md quotes them).

Knobs (environment): ACCESS_EVAL_FAULT_ATTEMPTS (crash loop size, default 200000),
ACCESS_EVAL_FAULT_KILLS (default 12), ACCESS_EVAL_FAULT_SEED (random kill timing; printed).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import random
import re
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hypothesis
import pytest
from confluent_kafka import KafkaException
from hypothesis import strategies as st

from processor.core.attempts import MIN_EVENT_TIME_MS as MIN_EVENT_MS
from processor.core.ids import IDENTITY_TYPES
from processor.core.times import rfc3339_millis
from processor.local.workload import Mix, Workload
from tests.support.fault_harness import (
    Delivery,
    OwnBroker,
    aborted_records,
    check_exactly_once,
    expect_workload,
    problem_lines,
    produce_tracked,
    record_figures,
    rss_kb,
    run_to_exit,
    stacks,
)
from tests.support.kafka_harness import Topics, free_port, wait_until
from tests.support.processor_harness import (
    RunningProcessor,
    committed_offsets,
    end_offsets,
    read_topic,
    settings_record,
    start_processor,
    wait_all_committed,
)
from tests.support.spec_model import Expectation, SettingsRecord, expect, parse_rfc3339

pytestmark = [pytest.mark.kafka, pytest.mark.faults]

T0 = 1_795_000_000_000  # 2026-11-18: settings take effect here, attempts follow
SEED = int(os.environ.get("ACCESS_EVAL_FAULT_SEED", str(time.time_ns() % 1_000_000)))
#: A killed member stays in the group until its session times out (librdkafka default 45 s); the
#: tests shorten it to the broker's minimum so a restart gets its partitions back within seconds.
FAST_GROUP = {"ACCESS_EVAL_KAFKA_SESSION_TIMEOUT_MS": "3000", "ACCESS_EVAL_KAFKA_HEARTBEAT_INTERVAL_MS": "500"}


@pytest.fixture(autouse=True)
def _print_fault_seed() -> None:
    """The seed first, so a failing (or hanging) fault test can be replayed: ACCESS_EVAL_FAULT_SEED=<seed>."""
    print(f"\nfault seed {SEED} (replay with ACCESS_EVAL_FAULT_SEED={SEED})", flush=True)


def workload_inputs(seed: int, n: int, accounts: int = 300,
                    invalid: float = 0.01) -> tuple[Workload, list[bytes], list[tuple[bytes, bytes, str]]]:
    w = Workload(seed=seed, accounts=accounts, allowlist_max=5, mix=Mix(invalid=invalid))
    settings = [json.dumps({**d, "updated_at": rfc3339_millis(T0)}).encode() for d in w.settings()]
    attempts = list(w.attempts(n, start_ms=T0 + 1000, step_ms=1))
    return w, settings, attempts


def publish_settings(bootstrap: str, topic: str, settings: list[bytes]) -> list[SettingsRecord]:
    """Publish settings documents keyed by their account; returns the records as published (key,
    value, no timestamp: every document has `updated_at`) for spec_model.expect."""
    records = [settings_record(json.loads(s)) for s in settings]
    produce_tracked(bootstrap, topic, records)
    return [(k, v, None) for k, v in records]


def pending_work(bootstrap: str, group: str, topic: str) -> int:
    """Records between the group's committed offsets and the topic's end (work not yet committed)."""

    def probe() -> tuple[int] | None:
        try:
            ends = end_offsets(bootstrap, topic)
            got = committed_offsets(bootstrap, group, topic)
        except KafkaException:  # e.g. the coordinator is busy right after a member died: ask again
            return None
        return (sum(e - max(got.get(p, 0), 0) for p, e in ends.items()),)

    return wait_until(probe, 60, f"committed offsets of {group}")[0]


# --------------------------------------------------------------------------------------------------
# 1. Crash loop


def _kill_one_life(topics: Topics, tmp_path: Path, rng: random.Random, k: int, kills: int,
                   kill_log: list[str]) -> int | None:
    """Life k + 1 of the crash loop, ended by SIGKILL; returns about how many attempts were left at
    the kill, or None when nothing was left to process."""
    # Each life does a random share of what is left, so every kill lands mid-stream whatever the
    # machine's speed: right after the commit that crossed the share, plus 0-30 ms, i.e. inside
    # the next transaction while it is being filled.
    # Small batches: commits every <= 2000 attempts (or 50 ms), so a life stops close to its share.
    p = start_processor(topics, tmp_path, "--batch-size", "200", env=FAST_GROUP)
    try:
        p.wait_ready(90)  # ready: init_transactions fenced the previous life, its offsets are stable again
        pending = pending_work(topics.bootstrap, topics.group, topics.attempts)
        if not pending:
            kill_log.append(f"life {k + 1}: nothing left to process; no more kills")
            return None
        target = max(1, int(rng.uniform(0.3, 0.9) * pending / (kills - k + 1)))
        try:
            wait_until(lambda p=p, t=target: p.metric("access_eval_attempts_total") >= t
                       or p.proc.poll() is not None, 120, f"{target} attempts committed in life {k + 1}",
                       interval=0.002)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{stacks(p.proc.pid)}\n{p.log()}\n" + "\n".join(kill_log)) from None
        delay = rng.uniform(0, 0.03)
        time.sleep(delay)  # random kill timing, not a synchronisation wait
        done = p.metric("access_eval_attempts_total")
        assert p.proc.poll() is None, f"processor died on its own before kill {k + 1}:\n{p.log()}"
        p.kill()
        left = pending - int(done)
        kill_log.append(f"kill {k + 1}: {done:.0f} attempts committed +{delay * 1000:.0f} ms, ~{left} left")
        return left
    finally:
        p.kill()


def test_crash_loop_sigkill_exactly_once(topics: Topics, tmp_path: Path) -> None:
    """SIGKILL at random moments mid-stream (inside a transaction being filled), restart with the same
    transactional id each time (which fences the zombie): nothing lost, nothing duplicated."""
    n = int(os.environ.get("ACCESS_EVAL_FAULT_ATTEMPTS", "200000"))
    kills = int(os.environ.get("ACCESS_EVAL_FAULT_KILLS", "12"))
    rng = random.Random(SEED)
    started = time.monotonic()
    topics.create(partitions=6)
    _, settings, attempts = workload_inputs(seed=21, n=n)
    spec = expect_workload(publish_settings(topics.bootstrap, topics.settings, settings), attempts)
    expected, invalid = spec.events, spec.invalid

    coords = produce_tracked(topics.bootstrap, topics.attempts, [(key, v) for key, v, _ in attempts])
    kill_log: list[str] = []
    mid_stream = 0
    for k in range(kills):
        left = _kill_one_life(topics, tmp_path, rng, k, kills, kill_log)
        if left is None:
            break
        mid_stream += left > 0
    p = start_processor(topics, tmp_path, env=FAST_GROUP)
    try:
        p.wait_ready(90)
        wait_all_committed(topics.bootstrap, topics.group, topics.attempts, timeout=240)
        assert p.terminate() == 0, p.log()
    finally:
        p.kill()
    result = check_exactly_once(topics.bootstrap, topics.evals, topics.dlq, topics.attempts,
                                expected, {coords[i] for i in invalid})
    aborted = aborted_records(topics.bootstrap, topics.evals, topics.dlq, result)
    figures = dict(seed=SEED, attempts=n, kills=sum(line.startswith("kill") for line in kill_log),
                   kills_with_work_pending=mid_stream,
                   aborted_records_of_killed_transactions=aborted, events_checked=result.events_checked,
                   dead_letters_checked=result.dead_letters_checked, lost=result.lost,
                   duplicated=result.duplicated, mismatched=result.mismatched,
                   seconds=round(time.monotonic() - started, 1))
    record_figures("crash_loop", **figures)
    assert result.ok, result.explain() + "\n" + "\n".join(kill_log)
    assert result.events_checked == len(expected) and result.dead_letters_checked == len(invalid)
    assert mid_stream >= min(kills, 10), f"too few kills mid-stream (seed {SEED}; more attempts needed?):\n" + \
        "\n".join(kill_log)
    # Killed transactions really had records on the broker, which the restart aborted (fencing).
    assert aborted > 0, f"no kill landed inside a transaction with produced records (seed {SEED}):\n" + \
        "\n".join(kill_log)



# --------------------------------------------------------------------------------------------------
# A broker of this module's own: stopped and restarted by one test, with a SASL/PLAIN listener for
# the credentials test and a log cleaner that wakes every 200 ms (default 15 s) for the compaction test.

SASL_USERS = {"admin": "admin-secret", "alice": "alice-secret"}


@pytest.fixture(scope="module")
def own_module(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OwnBroker]:
    broker = OwnBroker(tmp_path_factory.mktemp("own-kafka"), sasl_users=SASL_USERS,
                       extra={"log.cleaner.backoff.ms": "200"})
    try:
        broker.start()
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def own(own_module: OwnBroker, request: pytest.FixtureRequest) -> Iterator[tuple[OwnBroker, Topics]]:
    """The module's own broker (restarted if a previous test left it stopped) and fresh topic names on it."""
    if not own_module.running:
        own_module.start()
    names = Topics.for_test(own_module.bootstrap, request.node.name)
    yield own_module, names
    if own_module.running:
        names.delete()


# --------------------------------------------------------------------------------------------------
# 2. Broker restart


def test_broker_restart_mid_stream_recovers_by_itself(own: tuple[OwnBroker, Topics], tmp_path: Path) -> None:
    """Stop the broker while a stream is processed, restart it (same data dir, same port): readiness
    turns false during the outage and true after without any help, and the output is exactly-once."""
    broker, topics = own
    started = time.monotonic()
    topics.create(partitions=3)
    _, settings, attempts = workload_inputs(seed=31, n=60_000)
    spec = expect_workload(publish_settings(topics.bootstrap, topics.settings, settings), attempts)
    expected, invalid = spec.events, spec.invalid
    first, second = attempts[:40_000], attempts[40_000:]
    p = start_processor(topics, tmp_path, "--batch-size", "500", env=FAST_GROUP)
    try:
        p.wait_ready()
        coords = produce_tracked(topics.bootstrap, topics.attempts, [(k, v) for k, v, _ in first])
        wait_until(lambda: p.metric("access_eval_attempts_total") > 0, 30, "processing to start")
        done_before = p.metric("access_eval_attempts_total")
        outage = time.monotonic()
        broker.stop()
        body = wait_until(lambda: (st := p.get("/readyz"))[0] == 503 and st[1], 60, "/readyz to turn 503")
        reasons = json.loads(body)["reasons"]
        assert p.proc.poll() is None, f"the processor must survive the outage:\n{p.log()}"
        broker.start()
        wait_until(p.ready, 120, "/readyz to turn 200 again after the broker came back", interval=0.2)
        recovered_s = time.monotonic() - outage
        coords += produce_tracked(topics.bootstrap, topics.attempts, [(k, v) for k, v, _ in second])
        try:
            wait_all_committed(topics.bootstrap, topics.group, topics.attempts, timeout=120)
        except AssertionError:
            raise AssertionError(f"stuck after the outage:\n{stacks(p.proc.pid)}\n{p.log()}") from None
        assert p.proc.poll() is None
        # SPEC §8: counters move only after commit. Whatever the outage aborted or retried, the counters
        # equal the committed output (checked exactly-once below) outcome by outcome.
        want = Counter(spec.outcomes)
        for o in ("same_account", "unrestricted", "permit", "would_be_deny", "enforced_deny", "invalid"):
            wait_until(lambda o=o: p.metric("access_eval_attempts_total", outcome=o) == want[o], 10,
                       f"counter {o} to equal the committed {want[o]}")
        aborted = p.metric("access_eval_transactions_total", result="aborted")
        assert p.terminate() == 0, p.log()
    finally:
        p.kill()
    result = check_exactly_once(topics.bootstrap, topics.evals, topics.dlq, topics.attempts,
                                expected, {coords[i] for i in invalid})
    record_figures("broker_restart", aborted_transactions=aborted, attempts=len(attempts),
                   processed_before_outage=done_before,
                   readyz_reasons=reasons, outage_to_ready_s=round(recovered_s, 1),
                   events_checked=result.events_checked, dead_letters_checked=result.dead_letters_checked,
                   lost=result.lost, duplicated=result.duplicated, seconds=round(time.monotonic() - started, 1))
    # The outage hits the stream mid-way by construction (the second half is published only after the
    # restart), whatever the relative speed of processor and broker: no wall-clock race to assert on.
    assert result.ok, result.explain()
    assert result.events_checked == len(expected) and result.dead_letters_checked == len(invalid)


# --------------------------------------------------------------------------------------------------
# 3. Rebalance storm


def test_rebalance_storm_three_instances_exactly_once(topics: Topics, tmp_path: Path) -> None:
    """Three instances in one group; one after another is stopped (SIGTERM or SIGKILL, mixed) and
    restarted while the stream flows, so rebalances overlap: exactly-once, complete, clean exits."""
    rounds = int(os.environ.get("ACCESS_EVAL_FAULT_STORM_ROUNDS", "10"))
    rng = random.Random(SEED + 3)
    started = time.monotonic()
    topics.create(partitions=6)
    _, settings, attempts = workload_inputs(seed=41, n=60_000)
    spec = expect_workload(publish_settings(topics.bootstrap, topics.settings, settings), attempts)
    expected, invalid = spec.events, spec.invalid
    chunks = [attempts[i * len(attempts) // (rounds + 1):(i + 1) * len(attempts) // (rounds + 1)]
              for i in range(rounds + 1)]

    def launch(name: str) -> RunningProcessor:
        return start_processor(topics, tmp_path, "--batch-size", "500", "--shutdown-timeout-s", "15",
                               instance=name, env=FAST_GROUP)

    procs = {name: launch(name) for name in "abc"}
    coords: list[tuple[int, int]] = []
    actions: list[str] = []
    sigterm_exits: list[int] = []
    try:
        for p in procs.values():
            p.wait_ready(90)
        for k in range(rounds):
            coords += produce_tracked(topics.bootstrap, topics.attempts, [(key, v) for key, v, _ in chunks[k]])
            name = rng.choice("abc")
            victim = procs[name]
            if rng.random() < 0.5:
                victim.kill()
                how = "SIGKILL"
            else:
                sigterm_exits.append(victim.terminate(timeout=30))
                how = "SIGTERM"
            actions.append(f"{how} {name}, right after publishing {len(chunks[k])} attempts")
            procs[name] = launch(name)
            time.sleep(rng.uniform(0.3, 3.0))  # random spacing: the next stop may land mid-rebalance
        coords += produce_tracked(topics.bootstrap, topics.attempts, [(key, v) for key, v, _ in chunks[-1]])
        for p in procs.values():
            p.wait_ready(90)
        wait_all_committed(topics.bootstrap, topics.group, topics.attempts, timeout=180)
        final_exits = [p.terminate(timeout=30) for p in procs.values()]
    finally:
        for p in procs.values():
            p.kill()
    result = check_exactly_once(topics.bootstrap, topics.evals, topics.dlq, topics.attempts,
                                expected, {coords[i] for i in invalid})
    record_figures("rebalance_storm", attempts=len(attempts), instances=3, stops=rounds,
                   sigkills=sum("SIGKILL" in a for a in actions), sigterms=len(sigterm_exits),
                   events_checked=result.events_checked, dead_letters_checked=result.dead_letters_checked,
                   lost=result.lost, duplicated=result.duplicated, seconds=round(time.monotonic() - started, 1))
    assert result.ok, result.explain() + "\n" + "\n".join(actions)
    assert result.events_checked == len(expected) and result.dead_letters_checked == len(invalid)
    assert sigterm_exits + final_exits == [0] * (len(sigterm_exits) + len(final_exits)), \
        f"SIGTERM must exit 0: {sigterm_exits} {final_exits}\n" + "\n".join(actions)


# --------------------------------------------------------------------------------------------------
# 4. Settings under fire, on a compacted settings topic


ROUND_MS = 60_000
COMPACTING = {"segment.ms": "100", "min.cleanable.dirty.ratio": "0.01", "delete.retention.ms": "100"}
SENTINEL = b"sentinel-account"


def settings_doc(account: str, rng: random.Random, externals: list[str], t_ms: int,
                 state: str | None = None) -> dict[str, Any]:
    types: dict[str, Any] = {}
    for itype in IDENTITY_TYPES:
        chosen = state or rng.choice(["enabled", "monitor", "limited", "monitor", "limited", None])
        if chosen is not None:  # None: the type is missing, i.e. enabled
            types[itype] = {"state": chosen, "external_allowed_accounts": rng.sample(externals, rng.randint(0, 4))}
    return {"account_id": account, "external_account_identity_interaction": {"identity_types": types},
            "updated_at": rfc3339_millis(t_ms)}


def invalid_settings(account: str, kind: int, t_ms: int) -> bytes:
    """Rejected by SPEC §3: unknown state, malformed JSON, key mismatch, wrong type."""
    base: dict[str, Any] = {"account_id": account, "updated_at": rfc3339_millis(t_ms),
                            "external_account_identity_interaction": {"identity_types": {"user": {"state": "off"}}}}
    if kind == 1:
        return json.dumps(base).encode()[:-7]
    if kind == 2:
        base["account_id"] = "someone-else"
    if kind == 3:
        base["external_account_identity_interaction"] = {
            "identity_types": {"user": {"state": "limited", "external_allowed_accounts": "not-a-list"}}}
    return json.dumps(base).encode()


def settings_log(bootstrap: str, topic: str) -> list[tuple[bytes, bytes | None, int]]:
    return [(m.key(), m.value(), m.timestamp()[1]) for m in read_topic(bootstrap, topic)]


def fully_compacted(bootstrap: str, topic: str) -> list[tuple[bytes, bytes | None, int]] | None:
    """Roll the active segment (a sentinel record), then the log if every key appears once, else None.
    Past that point the cleaner can only drop tombstones, which changes no evaluation."""
    produce_tracked(bootstrap, topic, [(SENTINEL, json.dumps({"account_id": SENTINEL.decode(),
                                        "external_account_identity_interaction": {"identity_types": {}}}).encode())])
    log = settings_log(bootstrap, topic)
    keys = Counter(k for k, _, _ in log if k != SENTINEL)
    return log if all(n == 1 for n in keys.values()) else None


def settings_seen(p: RunningProcessor) -> float:
    return p.metric("access_eval_settings_records_total") + p.metric("access_eval_settings_rejected_total")


@dataclasses.dataclass
class UnderFire:
    """What the rounds of `test_settings_under_fire_with_compaction` published and saw."""

    accounts: list[str]
    externals: list[str]
    full_history: list[SettingsRecord] = dataclasses.field(default_factory=list)  # in publication order
    attempt_values: list[bytes] = dataclasses.field(default_factory=list)
    published: int = 0
    invalid_published: int = 0
    rejected_by_first: int = 0
    late_attempts: int = 0
    changed_in: dict[int, set[str]] = dataclasses.field(default_factory=dict)  # round -> accounts given a new doc
    late_of: dict[str, tuple[int, str]] = dataclasses.field(default_factory=dict)  # late id -> (round, account)

    @property
    def hazard(self) -> str:
        """The account whose last record is invalid: its valid version is gone after compaction."""
        return self.accounts[0]

    @property
    def tombstoned(self) -> str:
        return self.accounts[1]


def _round_settings(w: UnderFire, r: int, rounds: int, rng: random.Random,
                    pending_fix: str | None) -> tuple[list[tuple[bytes, bytes | None, int]], str]:
    """Round r's settings records: new versions, a tombstone in round 3, and an invalid record (the
    previous version stays in force; a valid one follows next round; in the last round it hits the
    hazard account and stays its last record). Returns the records and the account to fix next."""
    t_r = T0 + r * ROUND_MS
    records: list[tuple[bytes, bytes | None, int]] = []
    if r == 0:
        changed = w.accounts
    else:
        changed = rng.sample([a for a in w.accounts[2:] if a != pending_fix], 3)
        changed += [pending_fix] if pending_fix else []
    w.changed_in[r] = set(changed)
    for a in changed:
        doc = settings_doc(a, rng, w.externals, t_r, state="limited" if a == w.hazard else None)
        records.append((a.encode(), json.dumps(doc).encode(), t_r))
    if r == 3:
        records.append((w.tombstoned.encode(), None, t_r))
    fix = w.hazard if r == rounds - 1 else rng.choice(w.accounts[2:])
    records.append((fix.encode(), invalid_settings(fix, r % 4, t_r), t_r))
    w.invalid_published += 1
    return records, fix


def _round_attempts(w: UnderFire, r: int, rng: random.Random, per_account: int, late: int) -> list[tuple[bytes, bytes]]:
    """Round r's attempts, `per_account` in the round and `late` whose event time lies in the previous one."""
    t_r = T0 + r * ROUND_MS
    batch = []
    w.late_attempts += late * len(w.accounts)
    for a in w.accounts:
        times = [(f"r{r}-{a[:6]}-{j}", t_r + 1 + j * 1000) for j in range(per_account)]
        times += [(f"late{r}-{a[:6]}-{j}", t_r - ROUND_MS + 20_500 + j * 1000) for j in range(late)]
        w.late_of |= {aid: (r, a) for aid, _ in times[per_account:]}
        for aid, t in times:
            roll = rng.random()
            ext = a if roll < 0.1 else rng.choice(w.externals) if roll < 0.7 else f"{rng.getrandbits(128):032x}"
            body = {"id": aid, "event_time": rfc3339_millis(t),
                    "account_id": a, "action": "iam.policy.read",
                    "identity": {"iam_id": f"iam-{ext[:6]}", "type": rng.choice(IDENTITY_TYPES),
                                 "account_id": ext}}
            batch.append((a.encode(), json.dumps(body).encode()))
    return batch


def _rounds_under_fire(w: UnderFire, topics: Topics, tmp_path: Path, rng: random.Random,
                       rounds: int, restart_after: int, per_account: int) -> None:
    """A live processor through every round, restarted once after compaction at a quiescent point."""
    p = start_processor(topics, tmp_path, "--staleness-ms", "200", env=FAST_GROUP)
    try:
        p.wait_ready()
        pending_fix: str | None = None
        for r in range(rounds):
            records, pending_fix = _round_settings(w, r, rounds, rng, pending_fix)
            target = settings_seen(p) + len(records)
            produce_tracked(topics.bootstrap, topics.settings, records)
            w.full_history += records
            w.published += len(records)
            wait_until(lambda p=p, n=target: settings_seen(p) >= n, 30, "the processor to read the settings")
            # Late attempts: event times in the previous round, consumed after this round's versions were
            # read, so the version in force at their event time is not the newest one (contract §6.2).
            # Not in the first round after the restart: the compacted log that life started from may
            # lack the version in force then (an account whose last record was invalid).
            late = 3 if r >= 1 and r != restart_after + 1 else 0
            batch = _round_attempts(w, r, rng, per_account, late)
            produce_tracked(topics.bootstrap, topics.attempts, batch)
            w.attempt_values += [v for _, v in batch]
            if r == restart_after:
                # Quiescent point: everything committed, old versions compacted away, then a restart.
                wait_all_committed(topics.bootstrap, topics.group, topics.attempts)
                wait_until(lambda: fully_compacted(topics.bootstrap, topics.settings), 90,
                           "the cleaner to compact the settings topic", interval=0.5)
                w.rejected_by_first = int(p.metric("access_eval_settings_rejected_total"))
                assert p.terminate() == 0, p.log()
                p = start_processor(topics, tmp_path, "--staleness-ms", "200", env=FAST_GROUP)
                p.wait_ready()
        wait_all_committed(topics.bootstrap, topics.group, topics.attempts)
        assert p.terminate() == 0, p.log()
    finally:
        p.kill()


def _replay_after_compaction(topics: Topics, tmp_path: Path) -> tuple[list[tuple[bytes, bytes | None, int]], Topics]:
    """Once compacted, replay every attempt as a new consumer group into new output topics; returns
    the compacted log and the replay's topics."""
    compacted = wait_until(lambda: fully_compacted(topics.bootstrap, topics.settings), 90,
                           "the cleaner to compact the settings topic", interval=0.5)
    replay = dataclasses.replace(topics, evals=topics.evals + ".replay", dlq=topics.dlq + ".replay",
                                 group=topics.group + ".replay", created=[])
    replay.create(partitions=3, only=[replay.evals, replay.dlq])
    p = start_processor(replay, tmp_path, instance="replay", env=FAST_GROUP)
    try:
        p.wait_ready()
        wait_all_committed(replay.bootstrap, replay.group, replay.attempts)
        assert p.terminate() == 0, p.log()
    finally:
        p.kill()
        replay.delete()
    return compacted, replay


def _versions(log: list[tuple[bytes, bytes | None, int]]) -> list[tuple[bytes, bytes | None, int]]:
    return [r for r in log if r[0] != SENTINEL and r[1] is not None]  # tombstones change no evaluation


def _replay_differences(w: UnderFire, expected_full: dict[str, dict[str, Any]],
                        spec_compacted: Expectation) -> tuple[set[str], set[str], set[str]]:
    """The attempts whose expected event differs between the full history and the compacted log, and
    the two explanations: the hazard account's, and those older than every version kept."""
    expected_compacted = spec_compacted.events
    differ = {a for a in expected_full.keys() | expected_compacted.keys()
              if expected_full.get(a) != expected_compacted.get(a)}
    # Why may a replayed attempt differ? Its event time precedes the one version of its account left
    # in the compacted log (or none is left): the version in force then was compacted away.
    kept_from = {a: vs[0].effective_ms for a, vs in spec_compacted.settings.versions.items()}
    attempt_info = {a["id"]: (a["account_id"], parse_rfc3339(a["event_time"]))
                    for a in map(json.loads, w.attempt_values)}
    hazard_ids = {a for a in differ if attempt_info[a][0] == w.hazard}
    older_than_kept = {a for a in differ - hazard_ids
                       if attempt_info[a][1] < kept_from.get(attempt_info[a][0], 2**62)}
    return differ, hazard_ids, older_than_kept


def _check_live(w: UnderFire, topics: Topics) -> tuple[Expectation, list[str], Delivery]:
    """A: the live processor's output is exactly the model over the full settings history, and the
    history exercised what it should (rejections, kinds of decisions, late attempts under older versions)."""
    spec_full = expect(w.full_history, w.attempt_values)
    assert len(spec_full.settings.rejected) == w.invalid_published and not spec_full.invalid, \
        f"the model rejects {spec_full.settings.rejected}, not the {w.invalid_published} invalid records"
    kinds = spec_full.exercised()
    assert len(kinds) >= 3, f"too few kinds of decisions to compare: {kinds}"
    expected_full = spec_full.events
    # Late events of accounts changed in the round they arrived in: the newest version read was not
    # the one in force at their event time.
    late_older = [aid for aid, (r, a) in w.late_of.items() if aid in expected_full and a in w.changed_in[r]]
    assert late_older, "no late attempt is governed by a version older than the newest: the lookup is not tested"
    live = check_exactly_once(topics.bootstrap, topics.evals, topics.dlq, topics.attempts, expected_full, set())
    assert live.ok, "A (live, restarted after compaction): " + live.explain()
    return spec_full, late_older, live


def test_settings_under_fire_with_compaction(own: tuple[OwnBroker, Topics], tmp_path: Path) -> None:
    """Settings versions (with updated_at), invalid records and a tombstone published while attempts
    flow, each before the attempts it governs, on a settings topic the cleaner compacts meanwhile.

    Expected events come from the contract's model (spec_model.expect) over the records as published
    (several versions per account over time, invalid ones for the model to reject, a tombstone), or
    over the log as read back after compaction.

    From the second round on, a few attempts per account arrive late: their event time lies in the previous
    round, so the version in force then is not the newest one read (the event-time lookup, §6.2).

    A: a live processor (restarted once, after compaction, at a point where all work was committed)
       gives exactly the model over the full settings history: it keeps what it read, and after a
       restart only attempts governed by the latest versions remain.
    B: a processor replaying all attempts after compaction sees only the latest version per key:
       it gives exactly the model over the compacted log, which differs from the full history only
       where the governing version was compacted away (the event says exact=false) or where an
       account's last record is invalid (its valid version is gone: documented hazard)."""
    _, topics = own
    rounds, restart_after = 8, 4
    rng = random.Random(SEED + 4)
    started = time.monotonic()
    topics.create(partitions=3, settings_config=COMPACTING)
    w = UnderFire(accounts=[hashlib.md5(f"acct-{i}".encode()).hexdigest() for i in range(12)],
                  externals=[hashlib.md5(f"ext-{i}".encode()).hexdigest() for i in range(16)])
    _rounds_under_fire(w, topics, tmp_path, rng, rounds, restart_after, per_account=20)
    assert w.rejected_by_first == restart_after + 1, "each invalid record read live must be rejected once"
    spec_full, late_older, live = _check_live(w, topics)
    expected_full, kinds = spec_full.events, spec_full.exercised()

    # B: replay everything after compaction, as a new consumer group into new output topics.
    compacted, replay = _replay_after_compaction(topics, tmp_path)
    assert _versions(settings_log(topics.bootstrap, topics.settings)) == _versions(compacted), \
        "the compacted log changed during the replay"
    spec_compacted = expect(compacted, w.attempt_values)
    expected_compacted = spec_compacted.events
    replayed = check_exactly_once(replay.bootstrap, replay.evals, replay.dlq, replay.attempts, expected_compacted,
                                  set())
    assert replayed.ok, "B (replay after compaction): " + replayed.explain()
    differ, hazard_ids, older_than_kept = _replay_differences(w, expected_full, spec_compacted)
    assert all(not expected_compacted[a]["responseData.settingsVersion.exact"]
               for a in older_than_kept if a in expected_compacted), "events older than every kept version say so"
    record_figures("settings_under_fire", settings_records=w.published, invalid_settings=w.invalid_published,
                   tombstones=1, records_after_compaction=len(_versions(compacted)), attempts=len(w.attempt_values),
                   late_attempts=w.late_attempts, late_events_governed_by_an_older_version=len(late_older),
                   expected_decisions_live=kinds, expected_decisions_replay=spec_compacted.exercised(),
                   events_checked_live=live.events_checked, events_checked_replay=replayed.events_checked,
                   replay_same=len(expected_full.keys() & expected_compacted.keys() - differ),
                   replay_differs=len(differ), replay_differs_older_than_kept=len(older_than_kept),
                   replay_differs_hazard=len(hazard_ids), lost=live.lost + replayed.lost,
                   duplicated=live.duplicated + replayed.duplicated, seconds=round(time.monotonic() - started, 1))
    assert len(_versions(compacted)) < w.published, "the cleaner removed nothing"
    assert older_than_kept, "compaction made no difference to the replay: the test proves nothing"
    assert hazard_ids and not any(expected_compacted.get(a) for a in hazard_ids), \
        "the hazard account's valid version should be gone from the compacted log"
    assert differ == hazard_ids | older_than_kept, f"unexplained differences: {sorted(differ)[:5]}"


# --------------------------------------------------------------------------------------------------
# 5. Hostile attempts

HOSTILE_TARGET = "a3f1c0d2e4b5968778695a4b3c2d1e0f"
MB = 1024 * 1024
REQUIRED_PATHS = [("id",), ("event_time",), ("account_id",), ("identity",), ("identity", "iam_id"),
                  ("identity", "type"), ("identity", "account_id"), ("action",)]


def good_attempt(attempt_id: str, now_ms: int) -> dict[str, Any]:
    return {"id": attempt_id, "event_time": rfc3339_millis(now_ms - 60_000), "account_id": HOSTILE_TARGET,
            "identity": {"iam_id": "IBMid-1", "type": "user", "account_id": "0b1c2d3e4f5a69788796a5b4c3d2e1f0"},
            "action": "cloud-object-storage.object.read"}


def _set(obj: dict[str, Any], path: tuple[str, ...], value: Any) -> dict[str, Any]:
    obj = json.loads(json.dumps(obj))
    inner = obj
    for part in path[:-1]:
        inner = inner[part]
    if value is _DROP:
        del inner[path[-1]]
    else:
        inner[path[-1]] = value
    return obj


_DROP = object()
_NOT_A_STRING = st.one_of(st.none(), st.booleans(), st.integers(), st.lists(st.integers(), max_size=3),
                          st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))
_NOT_A_TIME = st.one_of(st.none(), st.booleans(), st.lists(st.integers(), max_size=2), st.just({}),
                        st.sampled_from(["", "yesterday", "2026-13-45T00:00:00Z", "2026-11-27T12:00:00",
                                         "2026-11-27 12:00", "12:00:00Z", "2026-11-27T25:00:00Z"]))


@st.composite
def hostile_payloads(draw: st.DrawFn, now_ms: int) -> tuple[str, bytes]:
    """(category, bytes): one valid attempt with exactly one mutation that SPEC §4 makes invalid."""
    base = good_attempt(f"h-{draw(st.integers(0, 10**9))}", now_ms)
    kind = draw(st.sampled_from(["missing", "wrong_type", "bad_time", "time_range", "identity_type",
                                 "bad_string", "bad_utf8", "deep", "duplicate_key", "nan", "truncated",
                                 "not_object"]))
    if kind == "missing":
        return kind, json.dumps(_set(base, draw(st.sampled_from(REQUIRED_PATHS)), _DROP)).encode()
    if kind == "wrong_type":
        path = draw(st.sampled_from([p for p in REQUIRED_PATHS if p != ("event_time",)]))
        value = draw(_NOT_A_STRING.filter(lambda v: not isinstance(v, dict)) if len(path) == 1 and path[0] == "identity"
                     else _NOT_A_STRING)
        return kind, json.dumps(_set(base, path, value)).encode()
    if kind == "bad_time":
        return kind, json.dumps(_set(base, ("event_time",), draw(_NOT_A_TIME))).encode()
    if kind == "time_range":  # before 2000, or more than the 1 h allowance ahead of the clock
        ms = draw(st.one_of(st.integers(-62_135_596_800_000, MIN_EVENT_MS - 1),
                            st.integers(now_ms + 3_600_000 + 60_000, 253_402_300_799_000)))
        return kind, json.dumps(_set(base, ("event_time",), rfc3339_millis(ms))).encode()
    if kind == "identity_type":
        value = draw(st.text(max_size=12).filter(lambda t: t not in IDENTITY_TYPES))
        return kind, json.dumps(_set(base, ("identity", "type"), value)).encode()
    if kind == "bad_string":  # empty, blank or overlong ids
        path = draw(st.sampled_from([("id",), ("account_id",), ("identity", "iam_id"), ("identity", "account_id"),
                                     ("action",)]))
        value = draw(st.sampled_from(["", "   ", "x" * 5000]))
        if value == "   " and path in (("id",), ("identity", "iam_id"), ("action",)):
            value = ""  # only account ids are trimmed before the emptiness check
        return kind, json.dumps(_set(base, path, value)).encode()
    if kind == "bad_utf8":
        raw = json.dumps(base).encode()
        cut = raw.index(b'"h-') + 2
        return kind, raw[:cut] + draw(st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf8\x88\x80\x80"])) \
            + raw[cut:]
    if kind == "deep":
        depth = draw(st.integers(300, 100_000))
        return kind, json.dumps(base).encode()[:-1] + b', "extra": ' + b"[" * depth + b"]" * depth + b"}"
    if kind == "duplicate_key":  # the last occurrence is invalid
        path = draw(st.sampled_from(["id", "event_time", "account_id", "identity"]))
        return kind, json.dumps(base).encode()[:-1] + f', "{path}": null}}'.encode()
    if kind == "nan":  # not JSON (RFC 8259), also where the model would ignore the field ("extra")
        path = draw(st.sampled_from(["id", "event_time", "account_id", "action", "extra"]))
        raw = json.dumps(_set(base, (path,), "@@")).encode()
        return kind, raw.replace(b'"@@"', draw(st.sampled_from([b"NaN", b"Infinity", b"-Infinity"])))
    if kind == "truncated":
        raw = json.dumps(base).encode()
        return kind, raw[:draw(st.integers(0, len(raw) - 1))]
    value = draw(st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=20),
                           st.lists(st.integers(), max_size=3)))
    return kind, json.dumps(value).encode()


def draw_examples(strategy: st.SearchStrategy[Any], n: int, seed: int) -> list[Any]:
    """n examples of a strategy, reproducibly for a seed, outside a @given test."""
    out: list[Any] = []

    @hypothesis.seed(seed)
    @hypothesis.settings(max_examples=n, database=None, deadline=None, phases=[hypothesis.Phase.generate],
                         suppress_health_check=list(hypothesis.HealthCheck))
    @hypothesis.given(strategy)
    def collect(value: Any) -> None:
        out.append(value)

    collect()
    return out


#: The DLQ reasons a mutation may honestly produce (the first problem pydantic reports wins).
HOSTILE_REASONS = {
    "missing": {"missing_field"}, "wrong_type": {"wrong_type", "unknown_identity_type"},
    "bad_time": {"bad_timestamp"}, "time_range": {"bad_timestamp"}, "identity_type": {"unknown_identity_type"},
    "bad_string": {"invalid_field"}, "bad_utf8": {"bad_json"}, "deep": {"bad_json"},
    "duplicate_key": {"wrong_type", "bad_timestamp"}, "nan": {"bad_json", "wrong_type", "bad_timestamp"},
    "truncated": {"bad_json"}, "not_object": {"wrong_type"}, "random_bytes": {"bad_json", "wrong_type"},
    "huge": {"oversize"}, "tombstone": {"bad_json"}, "empty": {"bad_json"},
}


def _hostile_records(now_ms: int, rng: random.Random) -> tuple[list[tuple[bytes | None, bytes | None]],
                                                                  list[str | None]]:
    """The hostile inputs, shuffled, with valid attempts among them (kind None), including one whose
    keys repeat: the last occurrence counts. Returns the records and each record's kind."""
    hostile: list[tuple[str, bytes | None]] = draw_examples(hostile_payloads(now_ms), 500, SEED)
    hostile += [("random_bytes", rng.randbytes(rng.randint(1, 3000))) for _ in range(150)]
    hostile += [("huge", b'{"id": "' + b"x" * (10 * MB) + b'"}'), ("huge", rng.randbytes(10 * MB)),
                ("huge", json.dumps({**good_attempt("big", now_ms), "user_agent": "u" * 300_000}).encode()),
                ("tombstone", None), ("empty", b"")]
    rng.shuffle(hostile)
    keys = [None, b"", HOSTILE_TARGET.encode(), b"\xff\xfe binary key"]
    # Valid attempts among them, including one whose keys repeat: the last occurrence counts.
    valid = [json.dumps(good_attempt(f"canary-{i}", now_ms)).encode() for i in range(len(hostile) // 20)]
    valid.append(json.dumps(good_attempt("dup-first", now_ms)).encode()[:-1] + b', "id": "dup-last"}')
    records: list[tuple[bytes | None, bytes | None]] = []
    kinds: list[str | None] = []
    for i, (kind, value) in enumerate(hostile):
        records.append((keys[i % len(keys)], value))
        kinds.append(kind)
        if i % 20 == 0 and valid:
            records.append((HOSTILE_TARGET.encode(), valid.pop()))
            kinds.append(None)
    records += [(HOSTILE_TARGET.encode(), v) for v in valid]
    kinds += [None] * len(valid)
    return records, kinds


def _dead_letters_not_as_sent(bootstrap: str, dlq: str, sent: dict[tuple[int, int], Any]) -> list[str]:
    """Dead letters whose reason, detail, key or value do not match the hostile input at their source
    coordinates (a value over 1 MB may be truncated, and then says so)."""
    wrong: list[str] = []
    for m in read_topic(bootstrap, dlq):
        h = dict(m.headers() or [])
        (key, value), kind = sent[(int(h["source.partition"]), int(h["source.offset"]))]
        reason = h["error.reason"].decode()
        if reason not in HOSTILE_REASONS[kind] or not h.get("error.detail") or m.key() != key:
            wrong.append(f"{kind}: {reason} {h.get('error.detail', b'')[:80]!r}")
        if m.value() != value and not (value and len(value) > MB and h.get("error.value.truncated")):
            wrong.append(f"{kind}: value not forwarded ({len(m.value() or b'')} of {len(value or b'')} bytes)")
    return wrong


def test_hostile_attempts_all_dead_lettered_processor_alive_rss_bounded(topics: Topics, tmp_path: Path) -> None:
    """Hypothesis-generated mutations of a valid attempt (each invalid by SPEC §4), random bytes, 10 MB
    values, tombstones: each lands in the DLQ once with its reason and source coordinates; valid
    attempts in between are evaluated; the processor stays up and its memory stays bounded."""
    started = time.monotonic()
    rng = random.Random(SEED + 5)
    now_ms = int(time.time() * 1000)
    topics.create(partitions=2, config={"max.message.bytes": str(12 * MB)})
    monitor_all = {"account_id": HOSTILE_TARGET, "updated_at": rfc3339_millis(now_ms - 3_600_000),
                   "external_account_identity_interaction": {"identity_types": {
                       t: {"state": "monitor", "external_allowed_accounts": []} for t in IDENTITY_TYPES}}}
    produce_tracked(topics.bootstrap, topics.settings, [settings_record(monitor_all)])
    records, kinds = _hostile_records(now_ms, rng)
    warmup = [(HOSTILE_TARGET.encode(), json.dumps(good_attempt(f"warm-{i}", now_ms)).encode()) for i in range(200)]
    big = {"message.max.bytes": str(12 * MB)}

    p = start_processor(topics, tmp_path)
    try:
        p.wait_ready()
        produce_tracked(topics.bootstrap, topics.attempts, warmup, config=big)
        wait_all_committed(topics.bootstrap, topics.group, topics.attempts)
        rss_before = rss_kb(p.proc.pid)
        coords = produce_tracked(topics.bootstrap, topics.attempts, records, config=big)
        try:
            wait_all_committed(topics.bootstrap, topics.group, topics.attempts, timeout=120)
        except AssertionError:
            raise AssertionError(f"stuck on hostile input:\n{stacks(p.proc.pid)}\n{p.log()}") from None
        assert p.proc.poll() is None, f"hostile input must not crash the processor:\n{p.log()}"
        rss_after = rss_kb(p.proc.pid)
        assert p.terminate() == 0, p.log()
    finally:
        p.kill()
    sent = {coords[i]: (records[i], kind) for i, kind in enumerate(kinds) if kind is not None}
    valid_values = [v for (_, v), kind in zip(records, kinds, strict=True) if kind is None]
    # The contract's model: the valid attempts are would-be denies of the monitor_all account, and
    # every hostile input is invalid (the DLQ reasons are checked below).
    good = [v for _, v in warmup] + valid_values
    bad = [v for (_, v), kind in zip(records, kinds, strict=True) if kind is not None]
    spec = expect([(*settings_record(monitor_all), None)], good + bad, now_ms=now_ms)
    assert spec.invalid == list(range(len(good), len(good) + len(bad))), \
        "the model must find exactly the hostile inputs invalid"
    expected = spec.events
    assert "dup-last" in expected and "dup-first" not in expected
    result = check_exactly_once(topics.bootstrap, topics.evals, topics.dlq, topics.attempts, expected, set(sent))
    assert result.ok, result.explain()
    wrong = _dead_letters_not_as_sent(topics.bootstrap, topics.dlq, sent)
    assert not wrong, wrong[:10]
    record_figures("hostile_attempts", seed=SEED, bad_inputs=len(sent),
                   categories=dict(Counter(k for k in kinds if k)), valid_among_them=len(valid_values),
                   rss_before_kb=rss_before, rss_after_kb=rss_after,
                   events_checked=result.events_checked, dead_letters_checked=result.dead_letters_checked,
                   lost=result.lost, duplicated=result.duplicated, seconds=round(time.monotonic() - started, 1))
    assert rss_after - rss_before < 150 * 1024, f"RSS grew from {rss_before} kB to {rss_after} kB"


# --------------------------------------------------------------------------------------------------
# 6. Misconfiguration


def test_unreachable_bootstrap_with_startup_timeout_exits_2_naming_the_flag(tmp_path: Path) -> None:
    nowhere = Topics.for_test(f"127.0.0.1:{free_port()}", "unreachable")
    p = start_processor(nowhere, tmp_path, "--startup-timeout-s", "3")
    started = time.monotonic()
    rc, lines = run_to_exit(p, 30)
    took = time.monotonic() - started
    errors = problem_lines(lines)
    assert rc == 2, "\n".join(lines)
    assert len(errors) == 1 and "--bootstrap-servers" in errors[0], errors
    assert not any("Traceback" in line for line in lines)
    assert took < 15, f"exit took {took:.1f} s"


def test_unreachable_bootstrap_without_timeout_stays_up_unready(tmp_path: Path) -> None:
    nowhere = Topics.for_test(f"127.0.0.1:{free_port()}", "unreachable")
    p = start_processor(nowhere, tmp_path, "--shutdown-timeout-s", "5")
    try:
        body = wait_until(lambda: (r := p.get("/readyz"))[0] == 503 and r[1], 30, "/readyz to answer 503")
        assert json.loads(body)["reasons"], body
        # Still retrying (with backoff) a while later, and still saying why it is not ready.
        wait_until(lambda: p.log_path.read_text().count("kafka not reachable yet") >= 3, 30, "repeated retry lines")
        assert p.proc.poll() is None and p.get("/readyz")[0] == 503
        assert p.get("/livez")[0] == 200, "an unreachable broker is no reason to restart the pod"
        started = time.monotonic()
        assert p.terminate(timeout=20) == 0, p.log()
        assert time.monotonic() - started < 10, "SIGTERM must end the wait for the broker promptly"
    finally:
        p.kill()


def test_missing_topics_exit_2_naming_topic_and_create_topics(topics: Topics, tmp_path: Path) -> None:
    topics.create(partitions=1, only=[topics.settings, topics.attempts])  # evals and dlq missing
    p = start_processor(topics, tmp_path)
    rc, lines = run_to_exit(p, 60)
    errors = problem_lines(lines)
    assert rc == 2, "\n".join(lines)
    assert len(errors) == 1, errors
    assert topics.evals in errors[0] and topics.dlq in errors[0] and "--create-topics" in errors[0], errors
    assert not any("Traceback" in line for line in lines)


def test_settings_topic_not_compacted_warns(topics: Topics, tmp_path: Path) -> None:
    topics.create(partitions=1, settings_config={"cleanup.policy": "delete"})
    p = start_processor(topics, tmp_path)
    try:
        p.wait_ready()
        warnings = [line for line in p.log().splitlines() if "not compacted" in line]
        assert len(warnings) == 1 and '"level": "warning"' in warnings[0] and topics.settings in warnings[0], warnings
        assert p.terminate() == 0, p.log()
    finally:
        p.kill()


def test_wrong_sasl_credentials_exit_2_naming_the_setting(own: tuple[OwnBroker, Topics], tmp_path: Path) -> None:
    broker, topics = own
    topics.create(partitions=1)  # through the PLAINTEXT listener; the processor uses the SASL one
    sasl = dataclasses.replace(topics, bootstrap=broker.sasl_bootstrap)
    env = {"ACCESS_EVAL_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "ACCESS_EVAL_KAFKA_SASL_MECHANISM": "PLAIN",
           "ACCESS_EVAL_KAFKA_SASL_USERNAME": "alice"}
    # Control: the right password works, so the failure below is the credentials, not the listener.
    # ssl.key.password: a secret librdkafka accepts (and ignores) on a non-SSL connection.
    key_password = f"key-pw-{SEED}"
    good = start_processor(sasl, tmp_path, "--log-level", "DEBUG", instance="good",
                           env={**env, "ACCESS_EVAL_KAFKA_SASL_PASSWORD": SASL_USERS["alice"],
                                "ACCESS_EVAL_KAFKA_SSL_KEY_PASSWORD": key_password})
    try:
        good.wait_ready()
        assert good.terminate() == 0, good.log()
    finally:
        good.kill()
    good_log = good.log_path.read_text(errors="replace")
    assert '"sasl.password": "***"' in good_log, "the start-up line should show the redacted config"
    for secret in (SASL_USERS["alice"], key_password):
        assert secret not in good_log, f"a successful run logged a secret ({secret[:3]}...)"
    bad = start_processor(sasl, tmp_path, instance="bad", env={**env, "ACCESS_EVAL_KAFKA_SASL_PASSWORD": "wrong"})
    try:
        rc, lines = run_to_exit(bad, 60)
    finally:
        bad.kill()
    errors = problem_lines(lines)
    # docs/contract.md §8: rejected credentials found at start-up are a misconfiguration: exactly 2
    # (3 is for authentication/authorization failures while running).
    assert rc == 2, "\n".join(lines)
    assert len(errors) == 1, errors
    assert "ACCESS_EVAL_KAFKA_SASL_USERNAME" in errors[0] and "sasl.password" in errors[0], errors
    assert "wrong" not in "\n".join(lines).replace("wrong_", ""), "the password must not be logged"
    assert not any("Traceback" in line for line in lines)
    assert len(lines) < 40, "\n".join(lines)
    # librdkafka repeats the failure per broker and retry: within 10 s a line appears once (digits aside)
    rdkafka = [json.loads(line) for line in lines if '"logger": "access_eval.librdkafka"' in line]
    shapes = Counter((e["level"], re.sub(r"\d+", "#", e["msg"])) for e in rdkafka)
    print(f"wrong SASL password: {len(rdkafka)} librdkafka lines, {len(shapes)} distinct")
    assert all(n == 1 for n in shapes.values()), shapes
