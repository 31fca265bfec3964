"""SPEC §5 "Time": retention of settings versions by stream time (never the wall clock), stream time
per input partition, the retention property under out-of-order arrival against an independent model, and
memory (reset accounts are forgotten)."""

from __future__ import annotations

import itertools
import zlib
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from processor.core.attempts import parse_attempt
from processor.core.evaluator import assess, assess_at
from processor.core.settings import (
    SettingsHistory,
)
from tests.support.settings_versions import (
    ACC,
    T1,
    T2,
    T3,
    decide,
    put,
)
from tests.support.spec_rules import (
    norm,
    spec_decide,
    spec_is_reset,
    spec_retained_answers,
    spec_standing,
    spec_version_index,
)
from tests.support.strategies import (
    ACCOUNTS,
    HOUR,
    MINUTE,
    NOW_MS,
    Scenario,
    dumps,
    iso,
    parse_ms,
    scenarios,
)

# --- retention by stream time --------------------------------------------------------------------


def test_retention_prunes_superseded_versions_by_stream_time() -> None:
    retention = 2 * HOUR
    h = SettingsHistory(retention_ms=retention, prune_every_ms=1)
    single = ACCOUNTS[7]
    stale_latest = ACCOUNTS[8]
    put(h, "monitor", T1)
    put(h, "limited", T2)
    put(h, "enabled", T3)
    put(h, "limited", T1, account=single)
    put(h, "monitor", T1, account=stale_latest)
    put(h, "limited", T2, account=stale_latest)
    assert h.versions == 6

    # Stream time T2 + retention: watermark == T2, the t1 version was superseded at T2 -> dropped.
    # The t2 version is still in force at the watermark (T3 > watermark) -> kept.
    decide(h, T2 + retention, ACCOUNTS[9])
    assert h.stream_time_ms == T2 + retention
    assert h.versions == 4
    assert decide(h, T1 + 1) == ("enforced_deny", T2, False)  # older than every kept version
    assert decide(h, T2 + 1) == ("enforced_deny", T2, True)
    assert decide(h, T1, stale_latest) == ("enforced_deny", T2, False)
    assert decide(h, T1 + 1, single) == ("enforced_deny", T1, True)  # single version untouched

    # Far in stream time: every account keeps exactly its latest version.
    # (ACC's latest version has every type enabled: once it is the only one and older than retention the
    # account is forgotten, which behaves exactly like an account without settings.)
    decide(h, T3 + 100 * retention, ACCOUNTS[9])
    assert h.versions == 2
    assert decide(h, T1, single) == ("enforced_deny", T1, True)
    assert decide(h, T1) == ("unrestricted", None, True)
    assert decide(h, T2, stale_latest) == ("enforced_deny", T2, True)


def test_version_in_force_at_the_watermark_is_kept() -> None:
    retention = 2 * HOUR
    h = SettingsHistory(retention_ms=retention, prune_every_ms=1)
    put(h, "monitor", T1)
    put(h, "limited", T2)
    decide(h, T2 + retention - 1, ACCOUNTS[9])  # watermark just before T2: t1 still in force there
    assert h.versions == 2
    assert decide(h, T2 - 1) == ("would_be_deny", T1, True)


def test_retention_uses_stream_time_not_wall_clock() -> None:
    """Old data (2001) replayed today: nothing is pruned until *stream* time passes the window."""
    old = 978_307_200_000  # 2001-01-01T00:00:00Z
    h = SettingsHistory(retention_ms=HOUR, prune_every_ms=1)
    put(h, "monitor", old)
    put(h, "limited", old + 10 * MINUTE)
    h.prune()
    assert h.versions == 2
    assert decide(h, old + 30 * MINUTE) == ("enforced_deny", old + 10 * MINUTE, True)
    assert h.versions == 2
    assert decide(h, old + 5 * MINUTE) == ("would_be_deny", old, True)
    decide(h, old + 10 * MINUTE + HOUR, ACCOUNTS[9])
    assert h.versions == 1


def test_stream_time_never_moves_backwards() -> None:
    h = SettingsHistory(retention_ms=HOUR, prune_every_ms=1)
    decide(h, T3, ACCOUNTS[9])
    decide(h, T1, ACCOUNTS[9])
    assert h.stream_time_ms == T3


# --- stream time per input partition (SPEC §5) ---------------------------------------------------------


def lookup_state(h: SettingsHistory, t_ms: int) -> tuple[str, bool]:
    """(state of the user rule in force at t_ms, exact), read without moving stream time."""
    version, exact = h.lookup(ACC, t_ms)
    assert version is not None
    rule = version.rules[0]
    return (rule.state if rule is not None else "enabled"), exact


def test_pruning_waits_for_the_slowest_assigned_partition() -> None:
    retention = 2 * HOUR
    h = SettingsHistory(retention_ms=retention, prune_every_ms=1)
    put(h, "monitor", T1)
    put(h, "limited", T2)
    h.assign([0, 1])
    h.observe(0, T2 + 10 * retention)  # partition 0 runs far ahead
    assert h.versions == 2  # partition 1 has seen nothing yet: its attempts may still need T1
    h.observe(1, T1 + MINUTE)  # a backlog on partition 1, before T2
    assert h.versions == 2 and h.stream_time_ms == T1 + MINUTE
    assert lookup_state(h, T1 + MINUTE) == ("monitor", True)
    h.observe_batch({0: T2 + 11 * retention, 1: T2 + retention})  # partition 1 catches up
    assert h.stream_time_ms == T2 + retention
    assert h.versions == 1
    assert lookup_state(h, T1 + MINUTE) == ("limited", False)


def test_released_partition_no_longer_holds_pruning_and_a_new_one_never_unprunes() -> None:
    retention = HOUR
    h = SettingsHistory(retention_ms=retention, prune_every_ms=1)
    put(h, "monitor", T1)
    put(h, "limited", T2)
    h.assign(["attempts-0", "attempts-1"])
    h.observe_batch({"attempts-0": T3 + 5 * retention, "attempts-1": T1})
    assert h.versions == 2
    h.release(["attempts-1"])
    assert h.versions == 1 and h.stream_time_ms == T3 + 5 * retention
    h.assign(["attempts-2"])  # a newly assigned partition: stream time (and what was pruned) stays
    h.observe("attempts-2", T1)
    assert h.stream_time_ms == T3 + 5 * retention
    put(h, "monitor", T3)
    assert h.versions == 2  # nothing more is pruned while attempts-2 lags behind
    h.observe("attempts-2", T3 + 10 * retention)
    assert h.versions == 2 and h.stream_time_ms == T3 + 5 * retention  # attempts-0 is now the slowest
    h.observe("attempts-0", T3 + 20 * retention)
    assert h.versions == 1 and h.stream_time_ms == T3 + 10 * retention


def test_pruning_does_not_depend_on_which_partitions_share_an_instance() -> None:
    """Partition 0's attempts get the same versions whether its instance also holds a partition far ahead."""
    retention = HOUR
    alone = SettingsHistory(retention_ms=retention, prune_every_ms=1)
    shared = SettingsHistory(retention_ms=retention, prune_every_ms=1)
    for h, parts in ((alone, [0]), (shared, [0, 1])):
        put(h, "monitor", T1)
        put(h, "limited", T2)
        h.assign(parts)
    shared.observe(1, T3 + 100 * retention)
    for t in (T1 + MINUTE, T2 - MINUTE, T2 + retention - 1):
        for h in (alone, shared):
            h.observe(0, t)
        assert alone.versions == shared.versions
        assert lookup_state(alone, T1 + MINUTE) == lookup_state(shared, T1 + MINUTE)
    assert alone.versions == 2


def test_without_assignment_every_observed_partition_counts() -> None:
    """simulate's single attempts file is one partition; callers that never assign still prune."""
    h = SettingsHistory(retention_ms=HOUR, prune_every_ms=1)
    put(h, "monitor", T1)
    put(h, "limited", T2)
    h.observe("b", T1)
    h.observe("a", T2 + 2 * HOUR)
    assert h.versions == 2
    h.observe("b", T2 + HOUR)
    assert h.versions == 1


# --- the retention property: out-of-order arrival against an independent model -------------------------


def _stream_times(sc: Scenario, mode: str, partitions: int, assigned: bool, batches: list[int]
                  ) -> list[tuple[int | None, int]]:
    """The model's stream time (SPEC §6.3) in force at each attempt's lookup, and its partition.

    `assess` (one implicit partition) moves stream time to the attempt's own event time before its
    lookup. The stream loop evaluates a batch against the stream time before it, then moves each
    partition's stream time to its newest event time in the batch; stream time is the minimum over
    the partitions that count (all assigned ones, unknown while one of them has not been seen; without
    assignment, every one seen), and never moves backwards. Attempts go to a partition by account,
    like keyed records. None: no stream time yet.
    """
    times = [parse_ms(o["event_time"]) for o in sc.attempt_objs if o is not None]
    parts = [zlib.crc32(norm(o["account_id"]).encode()) % partitions for o in sc.attempt_objs if o is not None]
    out: list[tuple[int | None, int]] = []
    stream: int | None = None
    if mode == "assess":
        for t, p in zip(times, parts, strict=True):
            stream = t if stream is None else max(stream, t)
            out.append((stream, p))
        return out
    newest: dict[int, int] = {}
    start = 0
    for size in batches:
        chunk = list(zip(times[start : start + size], parts[start : start + size], strict=True))
        start += size
        out.extend((stream, p) for _, p in chunk)
        for t, p in chunk:
            newest[p] = max(newest.get(p, t), t)
        counted = range(partitions) if assigned else newest.keys()
        if all(p in newest for p in counted):
            low = min(newest[p] for p in counted)
            stream = low if stream is None else max(stream, low)
    return out


@dataclass
class RetentionCheck:
    """The per-attempt assertions of the retention property below, with what earlier answers showed."""

    sc: Scenario
    retention: int
    prune_every: int
    model: dict[str, tuple[list[int], list[int], list[bool]]] = field(default_factory=dict)  # versions, times, resets
    floor: dict[str, int] = field(default_factory=dict)  # account -> effective time of the oldest kept version shown
    pruned: int = 0
    before_watermark: int = 0

    def versions_of(self, target: str) -> tuple[list[int], list[int], list[bool]]:
        if target not in self.model:
            mine = self.sc.versions_of(target)
            self.model[target] = (mine, [self.sc.versions[j][1] for j in mine],
                                  [spec_is_reset(self.sc.versions[j][2]) for j in mine])
        return self.model[target]

    def attempt(self, i: int, obj: dict[str, Any], t: int, stream: int | None, verdict: Any, version: Any,
                exact: bool) -> None:
        target, ident = norm(obj["account_id"]), obj["identity"]
        if norm(ident["account_id"]) == target:
            assert (verdict.outcome, version, exact) == ("same_account", None, True)
            return
        mine, effs, resets = self.versions_of(target)
        got = (None if version is None else mine.index(version.offset), exact)  # type: ignore[arg-type]
        high = None if stream is None else stream - self.retention
        low = None if high is None else high - self.prune_every
        unpruned = spec_version_index(effs, t)
        latest = spec_standing(effs)[-1] if effs else None
        forgotten = (latest is not None and high is not None and resets[latest] and effs[latest] <= high
                     and got == (None, True))

        def where() -> str:
            return (f"attempt {i} at {iso(t)}, stream time {stream and iso(stream)}, "
                    f"watermark {high and iso(high)}")

        if high is None or t >= high:
            assert got == unpruned or forgotten, where()
        else:
            self.before_watermark += 1
            older = got[0] is not None and not got[1] and effs[got[0]] > t
            assert got == unpruned or older or forgotten, where()
        assert got in spec_retained_answers(effs, resets, t, low, high), where()
        if got != unpruned:
            self.pruned += 1
        if got[0] is not None:
            assert effs[got[0]] >= self.floor.get(target, effs[got[0]]), f"{where()}: a pruned version came back"
            if not got[1]:
                self.floor[target] = max(self.floor.get(target, effs[got[0]]), effs[got[0]])
        elif forgotten:
            self.floor[target] = effs[latest] + 1  # type: ignore[index]
        used = self.sc.versions[mine[got[0]]][2] if got[0] is not None else None
        want = spec_decide(used, obj["account_id"], ident["account_id"], ident["type"])
        assert (verdict.outcome, verdict.decision, verdict.is_enforced, verdict.allowlisted) == (
            want.outcome, want.decision, want.is_enforced, want.allowlisted), where()


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    sc=scenarios(invalid=False),
    retention=st.sampled_from([MINUTE, 10 * MINUTE, HOUR, 3 * HOUR]),
    prune_every=st.sampled_from([1, MINUTE, 10 * MINUTE]),
    partitions=st.integers(0, 3),  # 0: through `assess`, one implicit partition
    assigned=st.booleans(),
    sizes=st.lists(st.integers(1, 40), min_size=1, max_size=8),
)
def test_retention_with_out_of_order_arrival_keeps_what_the_contract_promises(
    sc: Scenario, retention: int, prune_every: int, partitions: int, assigned: bool, sizes: list[int]
) -> None:
    """SPEC §6.2-§6.3 (and §3.5's forgotten resets) on `SettingsHistory`, attempts out of event-time
    order: through `assess` (one input, like simulate) or in batches over 1-3 partitions, `assess_at`
    within a batch and `observe_batch` after it (like the stream loop), with or without `assign`.

    W = stream time - retention is the contract's watermark (`_stream_times`). Pruning is lazy: it
    runs when stream time has moved `prune_every_ms` since the last run, so what is held is what the
    contract keeps at some watermark in [W - prune_every_ms, W] (`spec_retained_answers`). Asserted
    per attempt (expectations from tests/support/spec_rules.py, no processor code):

    - at or after W: the unpruned answer (`spec_version_index` over every version), exact as it is;
    - before W: the unpruned answer, or a version newer than the attempt with exact = false (the
      oldest kept one);
    - precisely: one of the answers `spec_retained_answers` allows for [W - prune_every_ms, W];
    - pruned stays pruned: no answer uses a version older than an earlier answer's oldest kept one;
    - the decision is SPEC §5's (`spec_decide`) for the version answered.

    An account whose only remaining version is a reset at or before the watermark may be forgotten
    (no version, exact): it decides like the reset did.
    """
    mode = "assess" if partitions == 0 else "batches"
    partitions = max(1, partitions)
    assigned = assigned and mode == "batches"
    batches = list(itertools.islice(itertools.cycle(sizes), len(sc.attempts)))  # batch sizes, repeating
    event(f"{mode}: {partitions} partition(s), assigned: {assigned}")

    history = SettingsHistory(retention_ms=retention, prune_every_ms=prune_every)
    if assigned:
        history.assign(range(partitions))
    for idx, (_, eff, doc) in enumerate(sc.versions):  # published in this order; offset = index
        key = doc["account_id"].encode()
        value = None if doc.get("tombstone") is True else dumps(doc)
        assert history.apply_record(key, value, eff, "settings", 0, idx) is None

    streams = _stream_times(sc, mode, partitions, assigned, batches)
    check = RetentionCheck(sc, retention, prune_every)
    pending: dict[Hashable, int] = {}  # partition -> newest event time in the batch
    start = 0
    for size in batches:
        for i in range(start, min(start + size, len(sc.attempts))):
            obj = sc.attempt_objs[i]
            assert obj is not None
            attempt = parse_attempt(sc.attempts[i], NOW_MS)
            verdict, version, exact = (assess if mode == "assess" else assess_at)(history, attempt)
            stream, part = streams[i]
            t = attempt.event_ms
            if mode == "batches":
                pending[part] = max(pending.get(part, t), t)
            check.attempt(i, obj, t, stream, verdict, version, exact)
        if mode == "batches" and pending:
            history.observe_batch(pending)
            pending = {}
        start += size
    event(f"attempts before the watermark: {'some' if check.before_watermark else 'none'}")
    event(f"answers changed by pruning: {'some' if check.pruned else 'none'}")


# --- memory: reset accounts are forgotten once their reset is older than retention -----------------------


def test_tombstones_for_random_keys_do_not_grow_memory() -> None:
    h = SettingsHistory(retention_ms=HOUR, prune_every_ms=1)
    for i in range(10_000):
        assert h.apply_record(f"random-{i:05d}".encode(), None, T1 + i) is None
    put(h, "limited", T1, account=ACCOUNTS[5])  # a configured account is never forgotten
    put(h, "limited", T1, account=ACCOUNTS[6])
    assert h.apply_record(ACCOUNTS[6].encode(), None, T2) is None  # ... until it is reset
    assert len(h) == 10_002
    h.advance(T2 + HOUR - 1)  # watermark just before T2: ACCOUNTS[6]'s limited version still needed
    assert len(h) == 2 and h.versions == 3
    h.advance(T3 + 2 * HOUR)
    assert list(h.accounts()) == [ACCOUNTS[5]] and h.versions == 1
    assert decide(h, T3 + 2 * HOUR, ACCOUNTS[6])[0] == "unrestricted"
    assert decide(h, T3 + 2 * HOUR, ACCOUNTS[5])[0] == "enforced_deny"


def test_accounts_reset_again_or_configured_again_are_pruned_by_their_latest_version() -> None:
    """The reset candidates are a list (memory): an account listed twice, or configured again since its
    reset, is decided by its latest version when pruning, and pruning leaves each remaining reset once."""
    h = SettingsHistory(retention_ms=HOUR, prune_every_ms=1)
    twice, again, fresh = ACCOUNTS[2], ACCOUNTS[3], ACCOUNTS[4]
    for account, states in ((twice, ("enabled", "limited", "enabled")), (again, ("enabled", "limited"))):
        for i, state in enumerate(states):
            put(h, state, T1 + i * MINUTE, account=account)
    assert h.reset_accounts() == {twice}
    h.advance(T1 + 2 * MINUTE + HOUR)  # watermark: every version above is older than retention
    assert sorted(h.accounts()) == [again] and h.versions == 1
    assert decide(h, T1 + 3 * HOUR, again)[0] == "enforced_deny"  # configured again: never forgotten
    assert decide(h, T1 + 3 * HOUR, twice)[0] == "unrestricted"
    later = T1 + 4 * HOUR  # after the stream time the decisions above moved to
    put(h, "enabled", later, account=fresh)
    put(h, "enabled", later + 1, account=fresh)
    h.advance(later + HOUR - 1)  # fresh's resets are newer than the watermark: kept, listed once
    assert h.reset_accounts() == {fresh} and h._resets == [int(fresh, 16)]  # hex: an int key
    h.advance(later + 2 * HOUR)
    assert sorted(h.accounts()) == [again] and h._resets == []
