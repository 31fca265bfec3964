"""Contract §3 guards on settings records: near misses of an identity type, size caps, downgrades made
visible, and bounded state for rejected records.

Each guard keeps the previous version in force when it rejects (never a silent downgrade).
"""

from __future__ import annotations

import logging
from typing import Any

import pytest

from processor.core.attempts import parse_attempt
from processor.core.evaluator import assess
from processor.core.settings import (
    MAX_ALLOWLIST_IDS,
    MAX_RECORD_BYTES,
    REJECT_REASONS,
    SettingsHistory,
)
from tests.support.spec_model import Invalid, settings_version
from tests.support.strategies import ACCOUNTS, BASE_MS, HOUR, MINUTE, NOW_MS, attempt_obj, dumps, iso, settings_obj

ACC, EXT = ACCOUNTS[0], ACCOUNTS[1]
T1, T2 = BASE_MS + 10 * MINUTE, BASE_MS + 20 * MINUTE


def doc(types: dict[str, Any], t_ms: int = T2, account: str = ACC) -> bytes:
    return dumps(settings_obj(account, types, iso(t_ms)))


def limited(h: SettingsHistory) -> None:
    assert h.apply_record(ACC.encode(), doc({"user": {"state": "limited"}, "service_id": {"state": "monitor"}}, T1),
                          0, "s", 0, 1) is None


def outcome(h: SettingsHistory, itype: str = "user", t_ms: int = T2 + HOUR) -> str:
    attempt = parse_attempt(dumps(attempt_obj(ACC, EXT, itype, t_ms)), NOW_MS)
    return assess(h, attempt)[0].outcome


# --- near misses ------------------------------------------------------------------------------------

NEAR_MISSES = ["users", "User", "USER", "Service_ID", "service-id", "serviceId", "service id", "service_ids",
               "services", "usr", "uesr", "servce", "service\u200bid", " user", "user\t"]
UNKNOWN = ["trusted_profile", "computed_resource", "crn", "apikey"]


@pytest.mark.parametrize("key", NEAR_MISSES)
def test_a_near_miss_of_an_identity_type_rejects_the_record(key: str) -> None:
    h = SettingsHistory()
    limited(h)
    err = h.apply_record(ACC.encode(), doc({key: {"state": "enabled"}}), 0, "s", 0, 2)
    assert err is not None and err.reason == "near_miss_identity_type", err
    assert repr(key)[1:-1] in err.detail or key in err.detail
    assert outcome(h) == "enforced_deny"  # the previous version stays in force
    assert h.invalid_latest_count() == 1


@pytest.mark.parametrize("key", UNKNOWN)
def test_a_genuinely_unknown_identity_type_is_ignored_and_counted(key: str) -> None:
    h = SettingsHistory()
    limited(h)
    assert h.apply_record(ACC.encode(), doc({key: {"state": "limited"}, "user": {"state": "limited"}}), 0) is None
    assert h.unknown_identity_types == 1
    assert outcome(h, "service_id") == "unrestricted"  # the new version governs: service_id left out


def test_reject_reasons_are_a_closed_set_with_the_new_ones() -> None:
    assert {"near_miss_identity_type", "record_too_large", "allowlist_too_large"} <= set(REJECT_REASONS)


# --- caps ---------------------------------------------------------------------------------------------


def test_an_allowlist_over_the_cap_rejects_the_record() -> None:
    h = SettingsHistory()
    limited(h)
    ids = [f"{i:x}" for i in range(MAX_ALLOWLIST_IDS)]
    assert h.apply_record(ACC.encode(), doc({"user": {"state": "limited", "external_allowed_accounts": ids}}),
                          0) is None
    err = h.apply_record(ACC.encode(), doc({"user": {"state": "monitor", "external_allowed_accounts": [*ids, "x"]}},
                                           T2 + 1), 0)
    assert err is not None and err.reason == "allowlist_too_large", err
    assert str(MAX_ALLOWLIST_IDS) in err.detail and "user" in err.detail
    assert outcome(h, "user", T2 + HOUR) == "enforced_deny"


def test_a_record_over_the_size_cap_is_rejected_before_it_is_parsed() -> None:
    h = SettingsHistory()
    limited(h)
    base = settings_obj(ACC, {"user": {"state": "enabled"}}, iso(T2))
    pad = MAX_RECORD_BYTES - len(dumps({**base, "pad": ""}))
    at_cap = dumps({**base, "pad": "p" * pad})
    assert len(at_cap) == MAX_RECORD_BYTES
    assert h.apply_record(ACC.encode(), at_cap + b"", 0) is None
    over = dumps({**settings_obj(ACC, {"user": {"state": "limited"}}, iso(T2 + 1)), "pad": "p" * (pad + 1)})
    err = h.apply_record(ACC.encode(), over, 0)
    assert err is not None and err.reason == "record_too_large", err
    assert outcome(h) == "unrestricted"  # the record at the cap stays in force


# --- downgrades ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "types"), [
    (doc({}), ["user", "service_id"]),
    (doc({"user": {"state": "enabled"}, "service_id": {"state": "limited"}}), ["user"]),
    (None, ["user", "service_id"]),
    (doc({"user": {"state": "monitor"}, "service_id": {"state": "monitor"}}), []),
])
def test_a_downgrade_to_unrestricted_is_reported_with_its_types(value: bytes | None, types: list[str]) -> None:
    h = SettingsHistory()
    limited(h)
    assert h.last_downgrade is None
    assert h.apply_record(b" " + ACC.upper().encode(), value, T2, "s", 0, 2) is None
    assert h.last_downgrade == ((ACC, types) if types else None)


def test_no_downgrade_for_a_first_record_or_a_rejected_one() -> None:
    h = SettingsHistory()
    assert h.apply_record(ACC.encode(), doc({}), 0) is None
    assert h.last_downgrade is None
    limited(h)
    h.apply_record(ACC.encode(), b"{", 0)
    assert h.last_downgrade is None


def test_the_table_logs_one_info_line_and_counts_a_downgrade(caplog: pytest.LogCaptureFixture) -> None:
    from prometheus_client import CollectorRegistry

    from processor.kafka.table import log_downgrade
    from processor.metrics import Metrics

    m = Metrics(CollectorRegistry())
    with caplog.at_level(logging.INFO, logger="access_eval.settings"):
        log_downgrade(m, "acct\x1b[2J", ["user", "service"], "settings", 0, 7)
    lines = [r for r in caplog.records if "unrestricted" in r.getMessage()]
    assert len(lines) == 1 and lines[0].levelno == logging.INFO
    fields = lines[0].fields  # type: ignore[attr-defined]
    assert fields["account"] == "acct\\x1b[2J"  # escaped for a terminal (display.printable)
    assert (fields["identity_types"], fields["partition"], fields["offset"]) == ("user,service", 0, 7)
    for t, n in (("user", 1), ("service", 1), ("service_id", 0)):
        got = m.registry.get_sample_value("access_eval_settings_downgrades_total", {"identity_type": t})
        assert got == n, t


# --- rejected records with unique keys: bounded state -------------------------------------------------


def test_rejected_records_of_accounts_without_a_version_are_pruned_like_resets() -> None:
    h = SettingsHistory(retention_ms=HOUR, prune_every_ms=1)
    n = 100_000
    for i in range(n):
        h.apply_record(f"junk-{i}".encode(), b"{", BASE_MS + i)
    assert h.invalid_latest_count() == n
    limited(h)
    assert h.apply_record(ACC.encode(), b"{", BASE_MS, "s", 0, 3) is not None  # has a valid version: kept
    h.advance(BASE_MS + n + HOUR + 1)
    h.prune()
    assert h.invalid_latest_count() == 1
    assert [r.account for r in h.invalid_latest()] == [ACC]
    # a newer rejected record of a forgotten key is tracked again
    assert h.apply_record(b"junk-5", b"{", BASE_MS + n + HOUR + 2) is not None
    assert h.invalid_latest_count() == 2


@pytest.mark.parametrize("key", NEAR_MISSES + UNKNOWN + ["servicei", "serv", "us", "profile"])
def test_the_contract_model_and_the_processor_agree_on_near_misses(key: str) -> None:
    value = doc({key: {"state": "enabled"}})
    try:
        settings_version(0, ACC.encode(), value, 0)
        model = None
    except Invalid as exc:
        model = exc.reason
    err = SettingsHistory().apply_record(ACC.encode(), value, 0)
    assert (err.reason if err is not None else None) == model
