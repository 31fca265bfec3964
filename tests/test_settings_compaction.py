"""SPEC §3 supersede rule: the decision does not depend on whether the settings log was compacted.

Compaction keeps the last record of each key by offset. The contract's rule (an accepted record
supersedes every version of its account whose effective time is at or after its own) makes the
newest record by offset govern from its effective time on, so a processor that read the full log and
one that read the compacted log agree on every attempt from that time on. The expectation comes from
tests/spec_model.py (the contract's model), not from the processor.
"""

from __future__ import annotations

from typing import Any

from hypothesis import event, given
from hypothesis import strategies as st
from spec_model import SettingsLog, SettingsRecord, settings_version
from strategies import ACCOUNTS, BASE_MS, MINUTE, STATES, dumps, iso, norm, settings_obj, spec_rules

from processor.core.settings import DEFAULT_RULES, TYPE_INDEX, SettingsHistory

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
