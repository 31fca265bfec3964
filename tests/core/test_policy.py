"""SPEC §5 decision table and the §6 event content, against an independent model of the SPEC.

Expected results come from `strategies.spec_decide`, written from the SPEC text, never from
running the processor.
"""

from __future__ import annotations

import itertools
import json
import uuid
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from processor import PRODUCT, __version__
from processor.core.attempts import parse_attempt
from processor.core.evaluator import assess
from processor.core.events import EVENT_ID_NAMESPACE, build_event, event_id
from processor.core.policy import OUTCOMES, evaluate
from processor.core.settings import SettingsHistory, parse_settings, rules_of
from tests.support.spec_model import expected_event_id
from tests.support.spec_rules import IDENTITY_TYPES, STATES, spec_decide
from tests.support.strategies import ACCOUNTS, BASE_MS, NOW_MS, attempt_obj, dumps, messy, settings_obj

TARGET = ACCOUNTS[0]
EXTERNAL = ACCOUNTS[1]
OTHER = ACCOUNTS[2]


def shout(account: str) -> str:
    """Upper-case with surrounding whitespace: must compare equal to `account` (SPEC §3)."""
    return f"  {account.upper()}\t"


def _other_state(state: str) -> str:
    """A different, restrictive state for the identity types not under test (detects cross-talk)."""
    return "limited" if state != "limited" else "monitor"


def _table_types(itype: str, state: str, allowlisted: bool, ident: str, fmt: Any) -> dict[str, Any]:
    """Settings for the type under test, plus the other types set to a different state and the
    opposite allowlist, so a lookup of the wrong type changes the result."""
    types: dict[str, Any] = {}
    for t in IDENTITY_TYPES:
        if t == itype:
            allow = [fmt(ident)] if allowlisted else [fmt(OTHER)]
            types[t] = {"state": state, "external_allowed_accounts": allow}
        else:
            allow = [] if allowlisted else [fmt(ident)]
            types[t] = {"state": _other_state(state), "external_allowed_accounts": allow}
    return types


TABLE = list(itertools.product(IDENTITY_TYPES, STATES, ["same", "cross"], [True, False], ["clean", "messy"]))


@pytest.mark.parametrize(("itype", "state", "relation", "allowlisted", "ids"), TABLE)
def test_decision_table(itype: str, state: str, relation: str, allowlisted: bool, ids: str) -> None:
    fmt = shout if ids == "messy" else str
    ident = TARGET if relation == "same" else EXTERNAL
    types = _table_types(itype, state, allowlisted, ident, fmt)
    doc = settings_obj(fmt(TARGET), types)
    expected = spec_decide(doc, TARGET, ident, itype)

    # 1. the pure function over the parsed rules
    rules = rules_of(parse_settings(dumps(doc)))
    v = evaluate(TARGET, ident, itype, rules)
    assert v.outcome == expected.outcome
    assert v.emit == expected.emitted
    if expected.decision is not None:
        assert (v.decision, v.is_enforced, v.state, v.allowlisted) == (
            expected.decision,
            expected.is_enforced,
            expected.state,
            expected.allowlisted,
        )

    # 2. end to end: settings record with a messy key, raw attempt JSON with messy ids
    history = SettingsHistory()
    assert history.apply_record(fmt(TARGET).encode(), dumps(doc), BASE_MS - 1000) is None
    raw = dumps(attempt_obj(fmt(TARGET), fmt(ident), itype, BASE_MS))
    attempt = parse_attempt(raw, NOW_MS)
    verdict, version, exact = assess(history, attempt)
    assert verdict.outcome == expected.outcome
    assert verdict.emit == expected.emitted
    assert exact
    assert (version is None) == (relation == "same")  # step 1 needs no settings: the lookup is skipped
    if expected.emitted:
        _check_event(build_event(attempt, verdict, version, exact, NOW_MS), expected, itype, ident)


def _check_event(ev: dict[str, Any], expected: Any, itype: str, ident: str) -> None:
    rd = ev["responseData"]
    assert rd["decision"] == expected.decision
    assert rd["isEnforced"] is expected.is_enforced
    assert rd["state"] == expected.state
    assert rd["allowlisted"] is expected.allowlisted
    assert ev["outcome"] == ("success" if expected.decision == "Permit" else "failure")
    enforced_deny = expected.decision == "Deny" and expected.is_enforced
    assert ev["severity"] == ("warning" if enforced_deny else "normal")
    assert ev["reason"]["reasonCode"] == (200 if expected.decision == "Permit" else 403)
    assert ev["reason"]["reasonType"]
    assert ev["initiator"]["typeURI"] == itype
    assert ev["initiator"]["authnAccountId"] == ident  # normalised
    assert ev["target"]["accountId"] == TARGET  # normalised


def test_outcome_names_match_spec() -> None:
    assert set(OUTCOMES) == {"same_account", "unrestricted", "permit", "would_be_deny", "enforced_deny", "invalid"}


def test_limited_permit_is_counted_not_emitted_and_monitor_emits_both() -> None:
    rules = rules_of(
        parse_settings(
            dumps(
                settings_obj(
                    TARGET,
                    {
                        "user": {"state": "monitor", "external_allowed_accounts": [EXTERNAL]},
                        "service": {"state": "limited", "external_allowed_accounts": [EXTERNAL]},
                    },
                )
            )
        )
    )
    assert evaluate(TARGET, EXTERNAL, "user", rules).emit  # monitor Permit reported
    assert evaluate(TARGET, OTHER, "user", rules).emit  # monitor Deny reported
    limited_permit = evaluate(TARGET, EXTERNAL, "service", rules)
    assert (limited_permit.outcome, limited_permit.emit) == ("permit", False)
    limited_deny = evaluate(TARGET, OTHER, "service", rules)
    assert (limited_deny.outcome, limited_deny.emit, limited_deny.is_enforced) == ("enforced_deny", True, True)


@pytest.mark.parametrize("state", ["monitor", "limited"])
@pytest.mark.parametrize("allow_key", ["empty", "missing"])
def test_empty_or_missing_allowlist_allows_nobody_external(state: str, allow_key: str) -> None:
    cfg: dict[str, Any] = {"state": state}
    if allow_key == "empty":
        cfg["external_allowed_accounts"] = []
    rules = rules_of(parse_settings(dumps(settings_obj(TARGET, {"service_id": cfg}))))
    v = evaluate(TARGET, EXTERNAL, "service_id", rules)
    assert v.decision == "Deny"
    assert v.outcome == ("would_be_deny" if state == "monitor" else "enforced_deny")
    assert evaluate(TARGET, TARGET, "service_id", rules).outcome == "same_account"


@pytest.mark.parametrize("itype", IDENTITY_TYPES)
def test_identity_type_missing_from_settings_is_enabled(itype: str) -> None:
    others = {t: {"state": "limited"} for t in IDENTITY_TYPES if t != itype}
    rules = rules_of(parse_settings(dumps(settings_obj(TARGET, others))))
    assert evaluate(TARGET, EXTERNAL, itype, rules).outcome == "unrestricted"
    for t in others:
        assert evaluate(TARGET, EXTERNAL, t, rules).outcome == "enforced_deny"


def test_empty_identity_types_and_no_settings_are_unrestricted() -> None:
    rules = rules_of(parse_settings(dumps(settings_obj(TARGET, {}))))
    history = SettingsHistory()
    for t in IDENTITY_TYPES:
        assert evaluate(TARGET, EXTERNAL, t, rules).outcome == "unrestricted"
        assert evaluate(TARGET, EXTERNAL, t, None).outcome == "unrestricted"
        attempt = parse_attempt(dumps(attempt_obj(TARGET, EXTERNAL, t)), NOW_MS)
        verdict, version, _ = assess(history, attempt)
        assert (verdict.outcome, version) == ("unrestricted", None)


def test_null_interaction_is_rejected_and_tombstone_resets_to_enabled() -> None:
    history = SettingsHistory()
    limited = settings_obj(TARGET, {t: {"state": "limited"} for t in IDENTITY_TYPES})
    assert history.apply_record(TARGET.encode(), dumps(limited), BASE_MS) is None
    rejected = history.apply_record(TARGET.encode(), dumps(settings_obj(TARGET, None)), BASE_MS + 10_000)
    assert rejected is not None and rejected.reason == "invalid_value"
    assert history.apply_record(TARGET.encode(), dumps(limited), BASE_MS + 20_000) is None
    assert history.apply_record(shout(TARGET).encode(), None, BASE_MS + 30_000) is None  # tombstone

    def outcome(t_ms: int) -> str:
        attempt = parse_attempt(dumps(attempt_obj(TARGET, EXTERNAL, "service", t_ms)), NOW_MS)
        return assess(history, attempt)[0].outcome

    assert outcome(BASE_MS + 5_000) == "enforced_deny"
    assert outcome(BASE_MS + 15_000) == "enforced_deny"  # the null interaction was rejected
    assert outcome(BASE_MS + 25_000) == "enforced_deny"
    assert outcome(BASE_MS + 35_000) == "unrestricted"  # tombstone in force


def test_large_allowlist_membership() -> None:
    allow = [f"{i:032x}" for i in range(10_000)]
    rules = rules_of(parse_settings(dumps(settings_obj(TARGET, {"user": {"state": "limited",
                                                                          "external_allowed_accounts": allow}}))))
    rule = rules[0]
    assert rule is not None and isinstance(rule.allowed, frozenset | set) and len(rule.allowed) == 10_000
    assert evaluate(TARGET, allow[9_999], "user", rules).outcome == "permit"
    assert evaluate(TARGET, f"{10_001:032x}", "user", rules).outcome == "enforced_deny"


@settings(max_examples=150, deadline=None)
@given(
    data=st.data(),
    itype=st.sampled_from(IDENTITY_TYPES),
    state=st.sampled_from(STATES),
    allow=st.lists(st.sampled_from(ACCOUNTS[:6]), max_size=4, unique=True),
    target=st.sampled_from(ACCOUNTS[:3]),
    ident=st.sampled_from(ACCOUNTS[:6]),
)
def test_random_ids_case_and_whitespace(
    data: st.DataObject, itype: str, state: str, allow: list[str], target: str, ident: str
) -> None:
    """Any mix of case/whitespace in key, account_id, allowlist and attempt ids decides like the clean ids."""
    doc = settings_obj(
        data.draw(messy(target)),
        {itype: {"state": state, "external_allowed_accounts": [data.draw(messy(a)) for a in allow]}},
    )
    history = SettingsHistory()
    assert history.apply_record(data.draw(messy(target)).encode(), dumps(doc), BASE_MS) is None
    raw = dumps(attempt_obj(data.draw(messy(target)), data.draw(messy(ident)), itype, BASE_MS + 1))
    verdict, _, _ = assess(history, parse_attempt(raw, NOW_MS))
    assert verdict.outcome == spec_decide(doc, target, ident, itype).outcome


# --- SPEC §6 event content ----------------------------------------------------------------------


def test_event_fields_follow_spec_6() -> None:
    history = SettingsHistory()
    doc = settings_obj(TARGET, {"service_id": {"state": "limited", "external_allowed_accounts": [OTHER]}})
    assert history.apply_record(TARGET.encode(), dumps(doc), BASE_MS, "settings-topic", 3, 42) is None
    obj = attempt_obj(
        TARGET.upper(),
        EXTERNAL.upper(),
        "service_id",
        BASE_MS + 123,
        attempt_id="5b0f0b4e-8c1a-4a36-9d55-0d8b1b7a2c11",
        iam_id="ServiceId-1",
        action="cloud-object-storage.object.read",
        resource={"crn": "crn:v1:bluemix:public:cloud-object-storage:global:a/x:bucket:b1",
                  "service_name": "cloud-object-storage"},
        source_ip="203.0.113.7",
        user_agent="ibmcloud-cli/2.30",
    )
    obj["identity"]["name"] = "robot"
    attempt = parse_attempt(json.dumps(obj), NOW_MS)
    verdict, version, exact = assess(history, attempt)
    ev = build_event(attempt, verdict, version, exact, NOW_MS + 5)
    name = (f"36:{obj['id']}{len(TARGET)}:{TARGET}10:service_id11:ServiceId-1{len(EXTERNAL)}:{EXTERNAL}"
            f"32:cloud-object-storage.object.read{BASE_MS + 123}")  # docs/contract.md §7.1
    assert ev["id"] == str(uuid.uuid5(EVENT_ID_NAMESPACE, name))
    assert uuid.UUID(ev["id"]).version == 5
    assert ev["attemptId"] == obj["id"]
    assert ev["action"] == "iam-access-management.account-settings.eval"
    assert ev["eventTime"] == BASE_MS + 123
    assert ev["initiator"] == {
        "id": "ServiceId-1",
        "typeURI": "service_id",
        "name": "robot",
        "authnAccountId": EXTERNAL,
        "host": {"address": "203.0.113.7", "agent": "ibmcloud-cli/2.30"},
    }
    assert ev["target"] == {
        "accountId": TARGET,
        "id": obj["resource"]["crn"],
        "serviceName": "cloud-object-storage",
        "action": "cloud-object-storage.object.read",
    }
    rd = ev["responseData"]
    assert (rd["decision"], rd["isEnforced"], rd["state"], rd["allowlisted"]) == ("Deny", True, "limited", False)
    assert rd["settingsVersion"] == {
        "effectiveTime": BASE_MS, "topic": "settings-topic", "partition": 3, "offset": 42, "exact": True,
    }
    assert (ev["outcome"], ev["severity"], ev["reason"]["reasonCode"]) == ("failure", "warning", 403)
    assert ev["observer"] == {"name": PRODUCT, "version": __version__, "evaluatedAt": NOW_MS + 5}
    assert PRODUCT == "access-eval"


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(max_size=30), min_size=6, max_size=6), st.integers(0, 253402300799999))
def test_event_id_is_uuid5_of_the_attempts_identity(values: list[str], event_ms: int) -> None:
    try:
        "".join(values).encode()
    except UnicodeEncodeError:
        return
    attempt_id, account, itype, iam_id, ident_account, action = values
    a = {"id": attempt_id, "account_id": account, "action": action, "event_ms": event_ms,
         "identity": {"type": itype, "iam_id": iam_id, "account_id": ident_account}}
    assert event_id(attempt_id, account, itype, iam_id, ident_account, action, event_ms) == expected_event_id(a)
