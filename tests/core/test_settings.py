"""SPEC §3 settings records and §5 "Time": versions, event-time lookup, retention by stream time, rejection."""

from __future__ import annotations

import itertools
import json
import zlib
from collections.abc import Hashable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from processor.codec.avro import EvalCodec
from processor.core.attempts import parse_attempt
from processor.core.evaluator import assess, assess_at
from processor.core.events import build_event
from processor.core.settings import (
    BEGINNING_OF_TIME,
    InvalidSettings,
    SettingsHistory,
    TombstoneLine,
    parse_settings_line,
)
from processor.core.times import from_millis, to_millis
from tests.support.spec_rules import (
    IDENTITY_TYPES,
    norm,
    spec_decide,
    spec_is_reset,
    spec_retained_answers,
    spec_standing,
    spec_version_index,
)
from tests.support.strategies import (
    ACCOUNTS,
    BASE_MS,
    HOUR,
    MINUTE,
    NOW_MS,
    Scenario,
    attempt_obj,
    dumps,
    iso,
    parse_ms,
    scenarios,
    settings_obj,
)

#: 9999-12-31T23:59:59.999Z, the last instant SPEC §3 accepts.
MAX_MS = to_millis(datetime(9999, 12, 31, 23, 59, 59, 999_000, tzinfo=UTC))

ACC = ACCOUNTS[0]
EXT = ACCOUNTS[1]
T1 = BASE_MS + 10 * MINUTE
T2 = BASE_MS + 20 * MINUTE
T3 = BASE_MS + 30 * MINUTE

# Each version is distinguishable by the outcome of one external `user` attempt.
LIMITED = {"user": {"state": "limited"}}
MONITOR = {"user": {"state": "monitor"}}
ENABLED: dict[str, Any] = {}
OUTCOME_OF = {"limited": "enforced_deny", "monitor": "would_be_deny", "enabled": "unrestricted"}
TYPES = {"limited": LIMITED, "monitor": MONITOR, "enabled": ENABLED}


def record(types: dict[str, Any] | None, updated_ms: int | None = None, account: str = ACC) -> bytes:
    return dumps(settings_obj(account, types, iso(updated_ms) if updated_ms is not None else None))


def put(h: SettingsHistory, state: str, t_ms: int, account: str = ACC, *, via: str = "updated_at",
        offset: int | None = None) -> None:
    """Apply a version effective at t_ms, either through updated_at or through the record timestamp."""
    if via == "updated_at":
        err = h.apply_record(account.encode(), record(TYPES[state], t_ms, account), 0, "s", 0, offset)
    else:
        err = h.apply_record(account.encode(), record(TYPES[state], None, account), t_ms, "s", 0, offset)
    assert err is None


def decide(h: SettingsHistory, t_ms: int, account: str = ACC) -> tuple[str, int | None, bool]:
    """(outcome, effective ms of the version used, exact) of an external user attempt at t_ms."""
    attempt = parse_attempt(dumps(attempt_obj(account, EXT, "user", t_ms)), NOW_MS)
    verdict, version, exact = assess(h, attempt)
    return verdict.outcome, (version.effective_ms if version else None), exact


@pytest.mark.parametrize("via", ["updated_at", "timestamp"])
@pytest.mark.parametrize("order", list(itertools.permutations([(T1, "monitor"), (T2, "limited"), (T3, "enabled")])))
def test_event_time_lookup_any_arrival_order(order: tuple[tuple[int, str], ...], via: str) -> None:
    """Any publication order: the version the contract's model (tests/support/spec_rules.py) puts in force,
    exact or not; a record supersedes the versions published before it from its effective time on."""
    h = SettingsHistory()
    for t, state in order:
        put(h, state, t, via=via)
    effs = [t for t, _ in order]
    assert h.versions == len(spec_standing(effs))
    for t in (T1 - 1, T1, T2 - 1, T2, T3 - 1, T3, T3 + HOUR):
        j, exact = spec_version_index(effs, t)
        assert j is not None
        assert decide(h, t) == (OUTCOME_OF[order[j][1]], order[j][0], exact), iso(t)
    if [t for t, _ in order] == [T1, T2, T3]:  # published in effective-time order: all three stand
        assert decide(h, T1 - 1) == ("would_be_deny", T1, False)
        assert decide(h, T2) == ("enforced_deny", T2, True)
        assert decide(h, T3 + HOUR) == ("unrestricted", T3, True)


def test_single_version_account_before_its_time_is_inexact() -> None:
    h = SettingsHistory()
    put(h, "limited", T2)
    assert decide(h, T1) == ("enforced_deny", T2, False)
    assert decide(h, T2) == ("enforced_deny", T2, True)


def test_updated_at_with_offset_is_the_same_instant() -> None:
    h = SettingsHistory()
    doc = settings_obj(ACC, LIMITED, iso(T2, offset_minutes=-330))  # 2026-... -05:30
    assert h.apply_record(ACC.encode(), dumps(doc), 0) is None
    assert decide(h, T2 - 1)[1:] == (T2, False)
    assert decide(h, T2)[1:] == (T2, True)


def test_updated_at_wins_over_record_timestamp() -> None:
    h = SettingsHistory()
    assert h.apply_record(ACC.encode(), record(LIMITED, T2), T1) is None
    assert h.latest(ACC) is not None and h.latest(ACC).effective_ms == T2  # type: ignore[union-attr]


def test_same_effective_time_replaces() -> None:
    h = SettingsHistory()
    put(h, "monitor", T1, offset=1)
    put(h, "limited", T2, offset=2)
    put(h, "enabled", T2, offset=3)  # replaces the t2 version
    assert h.versions == 2
    assert decide(h, T1) == ("would_be_deny", T1, True)
    assert decide(h, T2) == ("unrestricted", T2, True)
    v = h.lookup(ACC, T2)[0]
    assert v is not None and v.offset == 3


def test_a_record_supersedes_every_version_from_its_effective_time_on() -> None:
    """Contract §3: a record dated before a scheduled version cancels it (out-of-order updated_at)."""
    h = SettingsHistory()
    put(h, "limited", T2, offset=1)
    put(h, "monitor", T1, offset=2)  # published later, dated earlier
    assert h.versions == 1
    assert decide(h, T2 + HOUR) == ("would_be_deny", T1, True)


def test_a_tombstone_cancels_a_scheduled_version() -> None:
    """`settings delete` now cancels a version scheduled for later, on a running processor too."""
    h = SettingsHistory()
    put(h, "monitor", T1, offset=1)
    put(h, "limited", T3, offset=2)  # scheduled
    assert h.apply_record(ACC.encode(), None, T2, "s", 0, 3) is None
    assert decide(h, T3 + HOUR) == ("unrestricted", T2, True)
    assert decide(h, T1) == ("would_be_deny", T1, True)


def test_replacing_a_single_version() -> None:
    h = SettingsHistory()
    put(h, "monitor", T1)
    put(h, "limited", T1)
    assert h.versions == 1 and len(h) == 1
    assert decide(h, T1) == ("enforced_deny", T1, True)


def test_accounts_are_independent() -> None:
    h = SettingsHistory()
    other = ACCOUNTS[5]
    put(h, "limited", T1)
    put(h, "monitor", T1, account=other)
    assert decide(h, T2)[0] == "enforced_deny"
    assert decide(h, T2, other)[0] == "would_be_deny"
    assert decide(h, T2, ACCOUNTS[6]) == ("unrestricted", None, True)


def test_tombstone_reverts_to_defaults_from_its_timestamp() -> None:
    h = SettingsHistory()
    put(h, "limited", T1)
    assert h.apply_record(f" {ACC.upper()} ".encode(), None, T2) is None
    assert decide(h, T2 - 1)[0] == "enforced_deny"
    assert decide(h, T2) == ("unrestricted", T2, True)


def test_a_null_document_field_never_resets_only_a_tombstone_does() -> None:
    """SPEC §3: `null` is a wrong type; a document never resets an account, a tombstone does."""
    h = SettingsHistory()
    put(h, "limited", T1)
    err = h.apply_record(ACC.encode(), record(None, T2), 0)
    assert err is not None and err.reason == "invalid_value"
    assert "external_account_identity_interaction" in err.detail
    assert decide(h, T2) == ("enforced_deny", T1, True)
    assert h.apply_record(ACC.encode(), None, T3) is None
    assert decide(h, T3) == ("unrestricted", T3, True)


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


# --- the inexact flag reaches the event ------------------------------------------------------------


@pytest.mark.parametrize(("t_ms", "exact"), [(T1 - 1, False), (T1, True)])
def test_inexact_flag_in_built_event(t_ms: int, exact: bool) -> None:
    h = SettingsHistory()
    put(h, "limited", T1)
    attempt = parse_attempt(dumps(attempt_obj(ACC, EXT, "user", t_ms)), NOW_MS)
    verdict, version, ex = assess(h, attempt)
    ev = build_event(attempt, verdict, version, ex, NOW_MS)
    assert ev["responseData"]["settingsVersion"]["exact"] is exact
    assert ev["responseData"]["settingsVersion"]["effectiveTime"] == T1


def test_version_from_beginning_of_time_renders_null_effective_time() -> None:
    h = SettingsHistory()
    assert h.apply_record(ACC.encode(), record(LIMITED), BEGINNING_OF_TIME) is None
    attempt = parse_attempt(dumps(attempt_obj(ACC, EXT, "user", T1)), NOW_MS)
    verdict, version, ex = assess(h, attempt)
    ev = build_event(attempt, verdict, version, ex, NOW_MS)
    assert ev["responseData"]["settingsVersion"]["effectiveTime"] is None
    assert ev["responseData"]["settingsVersion"]["exact"] is True


# --- rejection: the previous version stays in force ------------------------------------------------


def _bad(doc_patch: Any) -> bytes:
    doc = settings_obj(ACC, {"user": {"state": "enabled"}}, iso(T2))
    if callable(doc_patch):
        doc_patch(doc)
        return dumps(doc)
    return doc_patch  # type: ignore[no-any-return]


def _set_state(value: Any) -> Any:
    return lambda d: d["external_account_identity_interaction"]["identity_types"]["user"].__setitem__("state", value)


def _set_allow(value: Any) -> Any:
    return lambda d: d["external_account_identity_interaction"]["identity_types"]["user"].__setitem__(
        "external_allowed_accounts", value
    )


REJECTED: list[tuple[str, bytes | None, Any, str]] = [
    ("unknown state", ACC.encode(), _set_state("off"), "state"),
    ("state wrong case", ACC.encode(), _set_state("Enabled"), "state"),
    ("state not a string", ACC.encode(), _set_state(1), "state"),
    ("malformed JSON", ACC.encode(), b'{"account_id": "' + ACC.encode() + b'", ', "JSON"),
    ("not UTF-8", ACC.encode(), b'{"account_id": "\xff"}', "JSON"),
    ("JSON array", ACC.encode(), b"[]", ""),
    ("JSON null literal", ACC.encode(), b"null", ""),
    ("allowlist is a string", ACC.encode(), _set_allow(EXT), "external_allowed_accounts"),
    ("allowlist item is a number", ACC.encode(), _set_allow([5]), "external_allowed_accounts"),
    ("identity_types is a list", ACC.encode(),
     lambda d: d["external_account_identity_interaction"].__setitem__("identity_types", []), "identity_types"),
    ("interaction is null", ACC.encode(),
     lambda d: d.__setitem__("external_account_identity_interaction", None), "external_account_identity_interaction"),
    ("identity_types is null", ACC.encode(),
     lambda d: d["external_account_identity_interaction"].__setitem__("identity_types", None), "identity_types"),
    ("identity type is null", ACC.encode(),
     lambda d: d["external_account_identity_interaction"]["identity_types"].__setitem__("user", None), "user"),
    ("service_id is null", ACC.encode(),
     lambda d: d["external_account_identity_interaction"]["identity_types"].__setitem__("service_id", None),
     "service_id"),
    ("state is null", ACC.encode(), _set_state(None), "state"),
    ("allowlist is null", ACC.encode(), _set_allow(None), "external_allowed_accounts"),
    ("allowlist item is null", ACC.encode(), _set_allow([None]), "external_allowed_accounts"),
    ("account_id is null", ACC.encode(), lambda d: d.__setitem__("account_id", None), "account_id"),
    ("identity type is a string", ACC.encode(),
     lambda d: d["external_account_identity_interaction"]["identity_types"].__setitem__("user", "enabled"), "user"),
    ("account_id missing", ACC.encode(), lambda d: d.pop("account_id"), "account_id"),
    ("account_id a number", ACC.encode(), lambda d: d.__setitem__("account_id", 7), "account_id"),
    ("updated_at without offset", ACC.encode(), lambda d: d.__setitem__("updated_at", "2026-06-01T00:20:00"),
     "updated_at"),
    ("updated_at garbage", ACC.encode(), lambda d: d.__setitem__("updated_at", "yesterday"), "updated_at"),
    ("key differs from account_id", ACCOUNTS[3].encode(), _set_state("enabled"), ""),
    ("missing key", None, _set_state("enabled"), ""),
    ("empty key", b"", _set_state("enabled"), ""),
]


@pytest.mark.parametrize(("key", "value", "field"), [r[1:] for r in REJECTED], ids=[r[0] for r in REJECTED])
def test_rejected_record_keeps_previous_version(key: bytes | None, value: Any, field: str) -> None:
    h = SettingsHistory()
    put(h, "limited", T1)
    raw = _bad(value)
    err = h.apply_record(key, raw, T2)
    assert err is not None
    assert err.reason in ("bad_json", "invalid_value", "key_mismatch", "missing_key")
    assert field in err.detail
    assert h.rejected == 1 and h.applied == 1 and h.versions == 1
    # enforcement is never silently downgraded: the limited version still governs later attempts
    assert decide(h, T2 + HOUR) == ("enforced_deny", T1, True)
    if key == ACCOUNTS[3].encode():
        assert len(h) == 1  # nothing was created for the key's account either


def test_rejection_reasons() -> None:
    h = SettingsHistory()
    assert h.apply_record(ACC.encode(), b"{", 0).reason == "bad_json"  # type: ignore[union-attr]
    assert h.apply_record(ACC.encode(), _bad(_set_state("x")), 0).reason == "invalid_value"  # type: ignore[union-attr]
    assert h.apply_record(EXT.encode(), record(LIMITED), 0).reason == "key_mismatch"  # type: ignore[union-attr]
    assert h.apply_record(None, record(LIMITED), 0).reason == "missing_key"  # type: ignore[union-attr]
    assert h.rejected == 4 and len(h) == 0


def test_unknown_identity_types_ignored_and_counted() -> None:
    h = SettingsHistory()
    types = {
        "user": {"state": "limited"},
        "trusted_profile": {"state": "limited"},
        "future_kind": {"state": "something-new", "extra": [1, 2]},
    }
    assert h.apply_record(ACC.encode(), record(types, T1), 0) is None
    assert h.unknown_identity_types == 2
    assert decide(h, T2)[0] == "enforced_deny"
    for t in ("service_id", "service"):
        attempt = parse_attempt(dumps(attempt_obj(ACC, EXT, t, T2)), NOW_MS)
        assert assess(h, attempt)[0].outcome == "unrestricted"
    assert h.apply_record(ACC.encode(), record({"trusted_profile": {"state": "monitor"}}, T2), 0) is None
    assert h.unknown_identity_types == 3


def test_unknown_fields_in_settings_are_ignored() -> None:
    h = SettingsHistory()
    doc = settings_obj(ACC, {"user": {"state": "limited", "note": "x", "external_allowed_accounts": [EXT]}}, iso(T1))
    doc["etag"] = "abc"
    doc["external_account_identity_interaction"]["version"] = 3
    assert h.apply_record(ACC.encode(), json.dumps(doc).encode(), 0) is None
    assert decide(h, T2)[0] == "permit"


def test_missing_allowlist_is_empty_and_enabled_types_do_not_restrict() -> None:
    h = SettingsHistory()
    types = {t: {"state": "enabled", "external_allowed_accounts": [EXT]} for t in IDENTITY_TYPES}
    types["user"] = {"state": "limited"}
    assert h.apply_record(ACC.encode(), record(types, T1), 0) is None
    assert decide(h, T2)[0] == "enforced_deny"


def test_numeric_updated_at_is_rejected() -> None:
    h = SettingsHistory()
    doc = settings_obj(ACC, LIMITED)
    doc["updated_at"] = T1 // 1000
    assert h.apply_record(ACC.encode(), dumps(doc), 0) is not None


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
@pytest.mark.parametrize("where", ["top", "identity_types", "allowlist"])
def test_non_json_numbers_reject_the_record(constant: str, where: str) -> None:
    """SPEC §3: malformed JSON includes NaN/Infinity, even in a field that is otherwise ignored."""
    h = SettingsHistory()
    put(h, "limited", T1)
    doc = settings_obj(ACC, {"user": {"state": "enabled"}}, iso(T2))
    target = {"top": doc, "identity_types": doc["external_account_identity_interaction"]["identity_types"],
              "allowlist": doc["external_account_identity_interaction"]["identity_types"]["user"]}[where]
    target["x_extra"] = "__C__"
    raw = dumps(doc).replace(b'"__C__"', constant.encode())
    err = h.apply_record(ACC.encode(), raw, T2)
    assert err is not None and err.reason == "bad_json", err
    assert decide(h, T2 + HOUR) == ("enforced_deny", T1, True)
    # the same text inside a string is fine
    assert h.apply_record(ACC.encode(), raw.replace(constant.encode(), f'"{constant}"'.encode()), T2) is None


# --- updated_at range (SPEC §3: 1970-9999 UTC) ---------------------------------------------------------


@pytest.mark.parametrize(("updated_at", "ok"), [
    ("1970-01-01T00:00:00Z", True),
    ("1970-01-01T01:00:00+01:00", True),
    ("9999-12-31T23:59:59.999Z", True),
    ("9999-12-31T23:59:59.999999Z", True),
    ("9999-12-31T23:59:59+00:00", True),
    ("1969-12-31T23:59:59.999Z", False),
    ("1970-01-01T00:30:00+01:00", False),
    ("0001-01-01T00:00:00Z", False),
    ("0001-01-01T00:00:00+01:00", False),
    ("9999-12-31T23:59:59-01:00", False),
    ("9999-12-31T23:30:00-00:45", False),
])
def test_updated_at_outside_1970_9999_utc_is_rejected(updated_at: str, ok: bool) -> None:
    h = SettingsHistory()
    put(h, "limited", T1)
    doc = settings_obj(ACC, {}, updated_at)
    err = h.apply_record(ACC.encode(), dumps(doc), T2)
    if not ok:
        assert err is not None and err.reason == "invalid_value" and "updated_at" in err.detail
        assert h.versions == 1 and decide(h, T2 + HOUR) == ("enforced_deny", T1, True)
        return
    assert err is None
    # every accepted effective time reads back through Avro timestamp-millis and Python datetime
    h2 = SettingsHistory()
    assert h2.apply_record(ACC.encode(), dumps(settings_obj(ACC, MONITOR, updated_at)), 0) is None
    v = h2.latest(ACC)
    assert v is not None
    want = datetime.fromisoformat(updated_at.replace("Z", "+00:00")).astimezone(UTC)
    assert from_millis(v.effective_ms) == want.replace(microsecond=want.microsecond // 1000 * 1000)
    attempt = parse_attempt(dumps(attempt_obj(ACC, EXT, "user", T2)), NOW_MS)
    verdict, version, exact = assess(h2, attempt)
    codec = EvalCodec()
    decoded = codec.decode(codec.encode(build_event(attempt, verdict, version, exact, NOW_MS)))
    eff = decoded["responseData"]["settingsVersion"]["effectiveTime"]
    assert eff == from_millis(v.effective_ms)


@pytest.mark.parametrize(("timestamp_ms", "ok"), [
    (0, True), (MAX_MS, True), (MAX_MS + 1, False), (2**62, False)])
def test_record_timestamp_beyond_year_9999_is_rejected(timestamp_ms: int, ok: bool) -> None:
    """Without updated_at the record timestamp is the effective time: the same range applies."""
    h = SettingsHistory()
    put(h, "limited", T1)
    for value in (record(ENABLED), None):
        err = h.apply_record(ACC.encode(), value, timestamp_ms)
        assert (err is None) == ok
        if not ok:
            assert err is not None and err.reason == "invalid_value"
    latest = h.latest(ACC)
    assert latest is not None and latest.effective_ms == (timestamp_ms if ok else T1)


def test_simulate_tombstone_line_updated_at_range() -> None:
    assert isinstance(parse_settings_line(dumps({"account_id": ACC, "tombstone": True})), TombstoneLine)
    with pytest.raises(InvalidSettings, match="updated_at"):
        parse_settings_line(dumps({"account_id": ACC, "tombstone": True, "updated_at": "9999-12-31T23:59:59-01:00"}))


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


# --- accounts whose latest record is invalid (the compaction hazard) -------------------------------------


def test_accounts_whose_latest_record_was_rejected_are_listed() -> None:
    h = SettingsHistory()
    a, b, c = ACCOUNTS[10], ACCOUNTS[11], ACCOUNTS[12]
    put(h, "limited", T1, account=a)
    assert h.apply_record(a.encode(), b"{", T2, "s", 0, 7) is not None  # a keeps its version, latest invalid
    assert h.apply_record(b.encode(), _bad(_set_state("off")), T2, "s", 1, 3) is not None  # never valid
    put(h, "limited", T1, account=c)
    assert h.apply_record(c.encode(), b"{", T2, "s", 0, 8) is not None
    put(h, "monitor", T2, account=c)  # a valid record after the invalid one: no longer listed
    assert h.apply_record(None, b"{", T2) is not None  # no key: no account to list
    listed = h.invalid_latest()
    assert [(r.account, r.reason, r.topic, r.partition, r.offset, r.has_valid_version) for r in listed] == sorted([
        (a, "bad_json", "s", 0, 7, True), (b, "invalid_value", "s", 1, 3, False)])
    assert (h.invalid_latest_count(), h.without_valid_version_count()) == (2, 1)
    assert h.apply_record(b.encode(), None, T3) is None  # a tombstone is a valid record
    assert (h.invalid_latest_count(), h.without_valid_version_count()) == (1, 0)
