"""The contract model the fault tests take their expectations from (tests/support/spec_model.py), on cases
worked out by hand from docs/contract.md; and its independence from the product."""

from __future__ import annotations

import ast
import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.support.spec_model import EVENT_ID_NAMESPACE, Invalid, expect, parse_rfc3339
from tests.support.strategies import ACCOUNTS, attempt_obj, dumps, iso

SUPPORT = Path(__file__).resolve().parents[1] / "support"
A, X, Y, Z = ACCOUNTS[0], ACCOUNTS[1], ACCOUNTS[2], ACCOUNTS[3]
T = 1_795_000_000_000
MIN = 60_000


def doc(state: str, allowed: list[str], updated_ms: int | None = None, account: str = A) -> bytes:
    d: dict[str, Any] = {"account_id": account, "external_account_identity_interaction": {"identity_types": {
        "user": {"state": state, "external_allowed_accounts": allowed}}}}
    if updated_ms is not None:
        d["updated_at"] = iso(updated_ms, 120)  # same instant, +02:00
    return json.dumps(d).encode()


def test_the_models_import_nothing_from_the_product() -> None:
    for name in ("spec_model.py", "spec_rules.py", "strategies.py"):
        tree = ast.parse((SUPPORT / name).read_text())
        imported = [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
        imported += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
        assert not [m for m in imported if m.split(".")[0] == "processor"], (name, imported)


def test_versions_over_time_tombstones_rejections_and_equal_times() -> None:
    settings = [
        (A.encode(), doc("monitor", [], T), 0),
        (A.encode(), doc("limited", [X], T + 10 * MIN), 0),
        (A.encode(), doc("limited", [X, f" {Y.upper()} "], T + 10 * MIN), 0),  # same time, read later: replaces
        (A.encode(), None, T + 20 * MIN),  # tombstone: reset from its timestamp
        (A.encode(), doc("monitor", [X]), T + 30 * MIN),  # no updated_at: the record timestamp
        (A.encode(), doc("off", [], T + 40 * MIN), 0),  # unknown state: rejected, previous stays
        (A.encode(), doc("limited", [], T + 50 * MIN, account=X), 0),  # key mismatch: rejected
        (b"", doc("limited", [], T + 50 * MIN), 0),  # no key: rejected
    ]

    def at(i: int, minutes: int, ext: str) -> bytes:
        return dumps(attempt_obj(f" {A.upper()}", ext, "user", T + minutes * MIN, attempt_id=f"a{i}"))

    attempts = [at(0, -5, Z), at(1, 15, Y), at(2, 15, Z), at(3, 25, Z), at(4, 45, X), at(5, 45, Z),
                at(6, 5, A), b'{"id": "x"}']
    spec = expect(settings, attempts, now_ms=T + 60 * MIN)
    assert [r for _, r in spec.settings.rejected] == ["invalid_value", "key_mismatch", "missing_key"]
    assert spec.outcomes == ["would_be_deny", "permit", "enforced_deny", "unrestricted", "permit", "would_be_deny",
                             "same_account", "invalid"]
    assert spec.invalid == [7]
    assert sorted(spec.events) == ["a0", "a2", "a4", "a5"]  # a limited permit is counted, not emitted
    got = {a: (e["responseData.state"], e["responseData.decision"], e["responseData.settingsVersion.effectiveTime"],
               e["responseData.settingsVersion.exact"], e["severity"]) for a, e in spec.events.items()}
    assert got == {
        "a0": ("monitor", "Deny", T, False, "normal"),  # older than every version: the oldest, inexact
        "a2": ("limited", "Deny", T + 10 * MIN, True, "warning"),
        "a4": ("monitor", "Permit", T + 30 * MIN, True, "normal"),
        "a5": ("monitor", "Deny", T + 30 * MIN, True, "normal"),
    }
    e = spec.events["a2"]
    assert e["key"] == e["target.accountId"] == A and e["initiator.authnAccountId"] == Z
    name = f"2:a2{len(A)}:{A}4:user7:IBMid-1{len(Z)}:{Z}32:cloud-object-storage.object.read{T + 15 * MIN}"
    assert e["id"] == str(uuid.uuid5(EVENT_ID_NAMESPACE, name))
    assert e["outcome"] == "failure" and e["reason.reasonCode"] == 403 and e["truncated"] is False


def test_optional_fields_are_truncated_or_dropped_and_invalid_attempts_found() -> None:
    settings = [(A.encode(), doc("monitor", []), T)]
    long_agent = attempt_obj(A, X, "user", T + MIN, attempt_id="long", user_agent="u" * 5000, source_ip=5,
                             resource={"crn": "crn:x", "service_name": None})
    plain = attempt_obj(A, X, "user", T + MIN, attempt_id="plain", resource="not-an-object")
    invalid = [
        b"", None, b"{not json", b"[]", b'{"id": NaN}', json.dumps(attempt_obj(A, X, "robot")).encode(),
        json.dumps(attempt_obj(A, X) | {"event_time": "2026-11-18T00:00:00"}).encode(),
        json.dumps(attempt_obj(A, X, event_ms=T + 2 * 3_600_000)).encode(),  # > 1 h ahead of now
        json.dumps(attempt_obj(A, " ")).encode(), b"[" * 300 + b"]" * 300,
        json.dumps(attempt_obj(A, X)).encode()[:-1] + b', "id": null}',  # the last duplicate key wins
    ]
    spec = expect(settings, [dumps(long_agent), dumps(plain), *invalid], now_ms=T + 30 * MIN)
    assert spec.invalid == list(range(2, 2 + len(invalid)))
    e = spec.events["long"]
    assert e["truncated"] is True and e["initiator.host.agent"] == "u" * 4096 and e["initiator.host.address"] is None
    assert (e["target.id"], e["target.serviceName"]) == ("crn:x", None)
    p = spec.events["plain"]
    assert p["truncated"] is True and p["target.id"] is None


def test_rfc3339_needs_an_offset_and_reads_it() -> None:
    assert parse_rfc3339("2026-11-18T11:06:40.5+01:00") == T - 3_600_000 + 500
    assert parse_rfc3339("2026-11-18T11:06:40Z") == T
    for bad in ("2026-11-18T11:06:40", "2026-11-18T11:06Z", "2026-13-01T00:00:00Z", 1_795_000_000):
        with pytest.raises(Invalid):
            parse_rfc3339(bad)
