"""SPEC §3 settings records and §5 "Time": versions and the event-time lookup, the inexact flag,
rejection (the previous version stays in force), the `updated_at` range and accounts whose latest record
was rejected. Retention by stream time: `test_settings_retention.py`."""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime
from typing import Any

import pytest

from processor.codec.avro import EvalCodec
from processor.core.attempts import parse_attempt
from processor.core.evaluator import assess
from processor.core.events import build_event
from processor.core.settings import (
    BEGINNING_OF_TIME,
    InvalidSettings,
    SettingsHistory,
    TombstoneLine,
    parse_settings_line,
)
from processor.core.times import from_millis
from tests.support.settings_versions import (
    ACC,
    ENABLED,
    EXT,
    LIMITED,
    MAX_MS,
    MONITOR,
    OUTCOME_OF,
    T1,
    T2,
    T3,
    decide,
    put,
    record,
)
from tests.support.spec_rules import (
    IDENTITY_TYPES,
    spec_standing,
    spec_version_index,
)
from tests.support.strategies import (
    ACCOUNTS,
    HOUR,
    NOW_MS,
    attempt_obj,
    dumps,
    iso,
    settings_obj,
)


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
