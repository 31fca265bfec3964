"""Settings churn on a compacted topic (the settings-under-fire test, the CLI tests and the soak): valid
and invalid documents, a compacting topic configuration, reading the log before and after the cleaner."""

from __future__ import annotations

import dataclasses
import json
import random
from collections import Counter
from pathlib import Path
from typing import Any

from processor.core.ids import IDENTITY_TYPES
from processor.core.times import rfc3339_millis
from tests.support.fault_harness import (
    Delivery,
    check_exactly_once,
    produce_tracked,
)
from tests.support.fault_inputs import (
    FAST_GROUP,
    T0,
)
from tests.support.kafka_harness import Topics, wait_until
from tests.support.processor_harness import (
    RunningProcessor,
    read_topic,
    start_processor,
    wait_all_committed,
)
from tests.support.spec_model import Expectation, SettingsRecord, expect, parse_rfc3339

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
