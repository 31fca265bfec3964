"""SPEC §3 supersede rule: the decision does not depend on whether the settings log was compacted.

Compaction keeps the last record of each key by offset. The contract's rule (an accepted record
supersedes every version of its account whose effective time is at or after its own) makes the
newest record by offset govern from its effective time on, so a processor that read the full log and
one that read the compacted log agree on every attempt from that time on. The expectation comes from
tests/support/spec_model.py (the contract's model), not from the processor.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

from hypothesis import event, given
from hypothesis import strategies as st

from processor.core.settings import DEFAULT_RULES, TYPE_INDEX, SettingsHistory
from processor.core.times import rfc3339_millis
from tests.support.fault_harness import check_exactly_once, produce_tracked
from tests.support.kafka_harness import Topics, wait_until
from tests.support.processor_harness import start_processor, wait_all_committed
from tests.support.settings_churn import COMPACTING, fully_compacted, settings_seen
from tests.support.spec_model import SettingsLog, SettingsRecord, expect, settings_version
from tests.support.spec_rules import STATES, norm, spec_rules
from tests.support.strategies import ACCOUNTS, BASE_MS, MINUTE, attempt_obj, dumps, iso, settings_obj

POOL = ACCOUNTS[:3]
#: A few instants only, so equal effective times and out-of-order ones are common.
TIMES = [BASE_MS + k * MINUTE for k in range(6)]
INVALID_VALUES = [b"{not json", dumps(settings_obj(POOL[0], None))]


@st.composite
def records(draw: st.DrawFn, spellings: bool = True) -> tuple[SettingsRecord, ...]:
    """Settings records in publication order: documents with and without `updated_at` (out of order,
    equal times), tombstones and invalid records, for a few accounts spelt a few ways."""
    out: list[SettingsRecord] = []
    for _ in range(draw(st.integers(1, 14))):
        account = draw(st.sampled_from(POOL))
        key = draw(st.sampled_from([account, account.upper(), f" {account}"])) if spellings else account
        kind = draw(st.sampled_from(["updated_at", "timestamp", "tombstone", "invalid"]))
        ts = draw(st.sampled_from(TIMES))
        if kind == "tombstone":
            out.append((key.encode(), None, ts))
        elif kind == "invalid":
            out.append((key.encode(), draw(st.sampled_from(INVALID_VALUES)), ts))
        else:
            types = {"user": {"state": draw(st.sampled_from(STATES)),
                              "external_allowed_accounts": [ACCOUNTS[10]]}}
            updated = iso(draw(st.sampled_from(TIMES))) if kind == "updated_at" else None
            out.append((key.encode(), dumps(settings_obj(key, types, updated)), ts))
    return tuple(out)


def compacted(log: tuple[SettingsRecord, ...], drop_tombstones: bool) -> list[tuple[int, SettingsRecord]]:
    """What the log cleaner leaves: the last record of each key (raw bytes), at its original offset;
    after `delete.retention.ms` a tombstone goes too."""
    last = {r[0]: i for i, r in enumerate(log)}
    return [(i, r) for i, r in enumerate(log) if last[r[0]] == i and not (drop_tombstones and r[1] is None)]


def history(log: list[tuple[int, SettingsRecord]]) -> SettingsHistory:
    h = SettingsHistory()
    for offset, (key, value, ts) in log:
        h.apply_record(key, value, ts or 0, "settings", 0, offset)
    return h


def state_at(h: SettingsHistory, account: str, t_ms: int) -> Any:
    """The `user` rule in force: (state, allowlist) or None for enabled."""
    version, _exact = h.lookup(account, t_ms)
    rule = (version.rules if version is not None else DEFAULT_RULES)[TYPE_INDEX["user"]]
    return None if rule is None else (rule.state, set(rule.allowed))


def spec_state_at(log: SettingsLog, account: str, t_ms: int) -> Any:
    version, _exact = log.at(account, t_ms)
    state, allowed = spec_rules(version.doc if version is not None else None)["user"]
    return None if state == "enabled" else (state, set(allowed))


def checked_times(log: tuple[SettingsRecord, ...], spec: SettingsLog, account: str) -> list[int] | None:
    """Attempt times at and after the account's newest accepted record's effective time. None: the
    contract makes no promise, because a key's last record is rejected (the documented compaction
    hazard that `settings list --invalid` and the AccessEvalSettingsInvalidLatest alert report)."""
    mine = [i for i, (k, _, _) in enumerate(log) if k is not None and norm(k.decode()) == account]
    rejected = {i for i, _ in spec.rejected}
    last_per_key = {log[i][0]: i for i in mine}
    accepted = [i for i in mine if i not in rejected]
    if not accepted or any(i in rejected for i in last_per_key.values()):
        return None
    eff = settings_version(accepted[-1], *log[accepted[-1]]).effective_ms
    return sorted({eff, eff + 1, *(t for t in TIMES if t >= eff), *(t + 1 for t in TIMES if t >= eff)})


@given(log=records(), drop_tombstones=st.booleans())
def test_full_and_compacted_logs_agree_from_the_last_records_effective_time(
    log: tuple[SettingsRecord, ...], drop_tombstones: bool
) -> None:
    if drop_tombstones:  # a removed tombstone of one spelling would resurrect another's document (4c)
        log = tuple((norm(k.decode()).encode() if k else k, v, ts) for k, v, ts in log)
    spec = SettingsLog.read(log)
    full = history(list(enumerate(log)))
    small = history(compacted(log, drop_tombstones))
    for account in POOL:
        times = checked_times(log, spec, account)
        if times is None:
            event("an account whose key's last record is rejected (no promise)")
            continue
        for t in times:
            want = spec_state_at(spec, account, t)
            assert state_at(full, account, t) == want, (account, t, "full log")
            assert state_at(small, account, t) == want, (account, t, "compacted log")


# --- end to end: a real compaction on a real broker -------------------------------------------------


def _doc(account: str, state: str, updated_ms: int) -> bytes:
    return dumps(settings_obj(account, {"user": {"state": state, "external_allowed_accounts": [ALLOWED]}},
                              rfc3339_millis(updated_ms)))


ALLOWED = ACCOUNTS[20]


def test_a_live_processor_and_one_started_after_compaction_agree(topics: Topics, tmp_path: Path) -> None:
    """The issue's cases on a compacted settings topic: a version published later but dated earlier
    (A), a tombstone after a scheduled version (B), equal effective times (C), a rejected record in
    the middle (D). Processor `live` reads the full log; after the cleaner compacted it, processor
    `late` starts and reads what is left. Attempts after every record's effective time then get the
    same events from both, exactly those of the contract's model over the full log (spec_model)."""
    t0 = (time.time_ns() // 1_000_000 // MINUTE - 120) * MINUTE
    a, b, c, d = ACCOUNTS[30:34]
    log: list[SettingsRecord] = [
        (a.encode(), _doc(a, "limited", t0 + 20 * MINUTE), t0),
        (a.encode(), _doc(a, "monitor", t0 + 10 * MINUTE), t0 + MINUTE),  # later, dated earlier
        (b.encode(), _doc(b, "monitor", t0), t0),
        (b.encode(), _doc(b, "limited", t0 + 30 * MINUTE), t0),  # scheduled ...
        (b.encode(), None, t0 + 15 * MINUTE),  # ... and cancelled by a tombstone dated before it
        (c.encode(), _doc(c, "limited", t0 + 5 * MINUTE), t0),
        (c.encode(), _doc(c, "monitor", t0 + 5 * MINUTE), t0),  # equal times: the later wins
        (d.encode(), _doc(d, "limited", t0), t0),
        (d.encode(), b"{not json", t0 + MINUTE),
        (d.encode(), _doc(d, "monitor", t0 + 12 * MINUTE), t0 + 2 * MINUTE),
    ]
    topics.create(partitions=1, settings_config=COMPACTING)
    late = dataclasses.replace(topics, evals=topics.evals + ".late", dlq=topics.dlq + ".late",
                               group=topics.group + ".late", created=[])
    live = start_processor(topics, tmp_path, instance="live")
    second = None
    try:
        live.wait_ready()
        produce_tracked(topics.bootstrap, topics.settings, log)
        wait_until(lambda: settings_seen(live) >= len(log), 30, "the live processor to read the settings")
        compacted = wait_until(lambda: fully_compacted(topics.bootstrap, topics.settings), 120,
                               "the cleaner to compact the settings topic", interval=0.5)
        assert len(compacted) < len(log), "the cleaner removed nothing"
        late.create(partitions=1, only=[late.evals, late.dlq])
        second = start_processor(late, tmp_path, instance="late")
        second.wait_ready()
        attempts = [dumps(attempt_obj(acct, ext, "user", t0 + 40 * MINUTE + j * 1000, attempt_id=f"{acct[:6]}-{j}"))
                    for acct in (a, b, c, d) for j, ext in enumerate([ACCOUNTS[40], ALLOWED, ACCOUNTS[41]])]
        produce_tracked(topics.bootstrap, topics.attempts, [(None, v) for v in attempts])
        for names in (topics, late):
            wait_all_committed(names.bootstrap, names.group, names.attempts)
        assert live.terminate() == 0 and second.terminate() == 0
    finally:
        live.kill()
        if second is not None:
            second.kill()
    want = expect(log, attempts).events
    assert {e["target.accountId"] for e in want.values()} == {a, c, d}, "B is unrestricted after its tombstone"
    assert {e["responseData.state"] for e in want.values()} == {"monitor"}
    for names, who in ((topics, "live"), (late, "started after compaction")):
        got = check_exactly_once(names.bootstrap, names.evals, names.dlq, names.attempts, want, set())
        assert got.ok, f"{who}: {got.explain()}"
    late.delete()
