"""Hypothesis strategies and an independent model of SPEC §3-§5 that tests can reuse.

The `spec_*` functions are written from the SPEC text alone (no processor imports), so tests that
compare the processor against them are checking the code against the contract, not against itself.

    from strategies import ACCOUNTS, attempt_obj, scenarios, spec_decide, eval_events
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import strategies as st

IDENTITY_TYPES = ("user", "service_id", "service")
STATES = ("enabled", "monitor", "limited")
OUTCOMES = ("same_account", "unrestricted", "permit", "would_be_deny", "enforced_deny", "invalid")

#: Deterministic 32-hex account ids, like real IBM Cloud account ids.
ACCOUNTS: list[str] = [hashlib.md5(f"account-{i}".encode()).hexdigest() for i in range(64)]

#: 2026-06-01T00:00:00Z; scenarios happen within a few days of it.
BASE_MS = 1_780_272_000_000
#: A clock comfortably after every generated event time (no "future" rejections).
NOW_MS = BASE_MS + 30 * 24 * 3600 * 1000
MINUTE = 60_000
HOUR = 60 * MINUTE

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def norm(account: str) -> str:
    """SPEC §3: account ids are compared after trimming and lower-casing."""
    return account.strip().lower()


def iso(ms: int, offset_minutes: int = 0) -> str:
    """RFC 3339 with milliseconds; offset 0 renders as `Z`, else `+hh:mm`/`-hh:mm` (same instant)."""
    local = _EPOCH + timedelta(milliseconds=ms) + timedelta(minutes=offset_minutes)
    text = local.strftime("%Y-%m-%dT%H:%M:%S.") + f"{local.microsecond // 1000:03d}"
    if offset_minutes == 0:
        return text + "Z"
    sign = "+" if offset_minutes > 0 else "-"
    hh, mm = divmod(abs(offset_minutes), 60)
    return f"{text}{sign}{hh:02d}:{mm:02d}"


def iso_z(ms: int) -> str:
    return iso(ms)


# --- builders -------------------------------------------------------------------------------------


def settings_obj(
    account: str,
    types: dict[str, Any] | None,
    updated_at: str | None = None,
) -> dict[str, Any]:
    """A settings document; `types=None` gives a null external_account_identity_interaction (rejected)."""
    doc: dict[str, Any] = {
        "account_id": account,
        "external_account_identity_interaction": None if types is None else {"identity_types": types},
    }
    if updated_at is not None:
        doc["updated_at"] = updated_at
    return doc


def attempt_obj(
    target: str,
    ident_account: str,
    itype: str = "user",
    event_ms: int = BASE_MS,
    *,
    attempt_id: str = "att-1",
    iam_id: str = "IBMid-1",
    action: str = "cloud-object-storage.object.read",
    **extra: Any,
) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "id": attempt_id,
        "event_time": iso(event_ms),
        "account_id": target,
        "identity": {"iam_id": iam_id, "type": itype, "account_id": ident_account},
        "action": action,
    }
    obj.update(extra)
    return obj


def dumps(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False).encode()


# --- the independent SPEC model --------------------------------------------------------------------


@dataclass(frozen=True)
class SpecDecision:
    outcome: str
    decision: str | None  # "Permit" | "Deny" | None (no evaluation)
    is_enforced: bool
    state: str | None
    allowlisted: bool
    emitted: bool


def spec_rules(doc: dict[str, Any] | None) -> dict[str, tuple[str, frozenset[str]]]:
    """identity type -> (state, normalised allowlist) per SPEC §3 (missing type: enabled, no list: [])."""
    out = {t: ("enabled", frozenset[str]()) for t in IDENTITY_TYPES}
    if doc is None:
        return out
    if doc.get("tombstone") is True:  # a `simulate` tombstone line (SPEC §10): back to defaults
        return out
    interaction = doc["external_account_identity_interaction"]
    for t, cfg in interaction["identity_types"].items():
        if t in out:
            out[t] = (cfg["state"], frozenset(norm(a) for a in cfg.get("external_allowed_accounts", [])))
    return out


def spec_decide(doc: dict[str, Any] | None, target: str, ident_account: str, itype: str) -> SpecDecision:
    """SPEC §5 steps 1-5 and the outcome names, given the settings document in force (or None)."""
    if norm(ident_account) == norm(target):
        return SpecDecision("same_account", None, False, None, False, False)
    state, allowlist = spec_rules(doc)[itype]
    if state == "enabled":
        return SpecDecision("unrestricted", None, False, None, False, False)
    allowed = norm(ident_account) in allowlist
    decision = "Permit" if allowed else "Deny"
    enforced = state == "limited"
    outcome = {True: "permit", False: "enforced_deny" if enforced else "would_be_deny"}[allowed]
    emitted = state == "monitor" or decision == "Deny"
    return SpecDecision(outcome, decision, enforced, state, allowed, emitted)


def spec_version_index(effective: list[int], t_ms: int) -> tuple[int | None, bool]:
    """SPEC §5 Time: newest version with effective time <= t; older than all: the oldest, inexact."""
    if not effective:
        return None, True
    order = sorted(range(len(effective)), key=lambda i: effective[i])
    best = None
    for i in order:
        if effective[i] <= t_ms:
            best = i
    if best is None:
        return order[0], False
    return best, True


# --- strategies -----------------------------------------------------------------------------------


@st.composite
def messy(draw: st.DrawFn, account: str) -> str:
    """The same account id with random case and surrounding whitespace (compares equal after norm)."""
    chars = [c.upper() if c.isalpha() and draw(st.booleans()) else c for c in account]
    pad = st.sampled_from(["", " ", "  ", "\t"])
    return draw(pad) + "".join(chars) + draw(pad)


@st.composite
def identity_type_settings(draw: st.DrawFn, pool: list[str]) -> dict[str, Any]:
    cfg: dict[str, Any] = {"state": draw(st.sampled_from(STATES))}
    allowed = draw(st.lists(st.sampled_from(pool), max_size=3, unique=True))
    if allowed or draw(st.booleans()):
        cfg["external_allowed_accounts"] = [draw(messy(a)) for a in allowed]
    return cfg


@st.composite
def settings_doc(draw: st.DrawFn, account: str, pool: list[str]) -> dict[str, Any]:
    if draw(st.integers(0, 9)) == 0:  # a tombstone, in simulate's syntax (SPEC §10)
        return {"account_id": draw(messy(account)), "tombstone": True}
    types: dict[str, Any] = {}
    for t in IDENTITY_TYPES:
        if draw(st.booleans()):
            types[t] = draw(identity_type_settings(pool))
    return settings_obj(draw(messy(account)), types)


@dataclass
class Scenario:
    """Settings versions (account, effective ms, document incl. updated_at) and attempt lines."""

    versions: list[tuple[str, int, dict[str, Any]]] = field(default_factory=list)
    attempts: list[bytes] = field(default_factory=list)
    #: parsed attempt objects, None for deliberately invalid lines
    attempt_objs: list[dict[str, Any] | None] = field(default_factory=list)

    def settings_lines(self) -> list[bytes]:
        return [dumps(doc) for _, _, doc in self.versions]

    def expected(self) -> list[tuple[SpecDecision, int | None, bool]]:
        """Per attempt line: the SPEC decision, the index (in `versions`) of the version used, exact."""
        out: list[tuple[SpecDecision, int | None, bool]] = []
        for obj in self.attempt_objs:
            if obj is None:
                out.append((SpecDecision("invalid", None, False, None, False, False), None, True))
                continue
            target = norm(obj["account_id"])
            mine = [i for i, (acct, _, _) in enumerate(self.versions) if acct == target]
            t = parse_ms(obj["event_time"])
            j, exact = spec_version_index([self.versions[i][1] for i in mine], t)
            idx = mine[j] if j is not None else None
            doc = self.versions[idx][2] if idx is not None else None
            ident = obj["identity"]
            out.append((spec_decide(doc, obj["account_id"], ident["account_id"], ident["type"]), idx, exact))
        return out


def parse_ms(text: str) -> int:
    dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return (dt - _EPOCH) // timedelta(milliseconds=1)


_INVALID_LINES = [
    b"{not json",
    b"[]",
    b"null",
    b'{"id": "x"}',
    json.dumps(attempt_obj(ACCOUNTS[0], ACCOUNTS[1], "robot")).encode(),
    json.dumps(attempt_obj(ACCOUNTS[0], ACCOUNTS[1]) | {"event_time": "2026-06-01T00:00:00"}).encode(),
]


@st.composite
def scenarios(draw: st.DrawFn, n_accounts: int = 4, max_attempts: int = 30, invalid: bool = True) -> Scenario:
    """Random settings histories (distinct updated_at per account) and attempts around them."""
    pool = ACCOUNTS[:n_accounts]
    externals = pool + ACCOUNTS[n_accounts : n_accounts + 2]
    sc = Scenario()
    for account in pool:
        minutes = draw(st.lists(st.integers(0, 6 * 60), max_size=3, unique=True))
        for m in minutes:
            eff = BASE_MS + m * MINUTE + draw(st.integers(0, 999))
            doc = draw(settings_doc(account, pool))
            doc["updated_at"] = iso(eff, draw(st.sampled_from([0, 0, 120, -330])))
            sc.versions.append((account, eff, doc))
    n = draw(st.integers(1, max_attempts))
    for i in range(n):
        if invalid and draw(st.integers(0, 14)) == 0:
            sc.attempts.append(draw(st.sampled_from(_INVALID_LINES)))
            sc.attempt_objs.append(None)
            continue
        target = draw(st.sampled_from(pool))
        ident = draw(st.sampled_from(externals))
        t = BASE_MS + draw(st.integers(-60, 7 * 60)) * MINUTE + draw(st.integers(0, 999))
        obj = attempt_obj(
            draw(messy(target)),
            draw(messy(ident)),
            draw(st.sampled_from(IDENTITY_TYPES)),
            t,
            attempt_id=f"att-{i}",
            iam_id=f"iam-{draw(st.integers(0, 3))}",
        )
        sc.attempts.append(dumps(obj))
        sc.attempt_objs.append(obj)
    return sc


# --- Avro eval events -------------------------------------------------------------------------------

LONGS = st.integers(-(2**63), 2**63 - 1)
INTS = st.integers(-(2**31), 2**31 - 1)
#: Timestamps fastavro can turn into datetimes when decoding (years 1..9999).
TIMESTAMPS = st.integers(-62_135_596_800_000, 253_402_300_799_999)


def _opt(s: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.none() | s


def eval_events(longs: st.SearchStrategy[int] = LONGS) -> st.SearchStrategy[dict[str, Any]]:
    """Records valid for schemas/eval_event.avsc: every nullable field None or not, unicode text."""
    text = st.text(max_size=40)
    return st.fixed_dictionaries(
        {
            "id": text,
            "action": text,
            "eventTime": longs,
            "attemptId": text,
            "initiator": st.fixed_dictionaries(
                {
                    "id": text,
                    "typeURI": st.sampled_from(["user", "service_id", "service", "unknown"]),
                    "name": _opt(text),
                    "authnAccountId": text,
                    "host": st.fixed_dictionaries({"address": _opt(text), "agent": _opt(text)}),
                }
            ),
            "target": st.fixed_dictionaries(
                {"accountId": text, "id": _opt(text), "serviceName": _opt(text), "action": text}
            ),
            "responseData": st.fixed_dictionaries(
                {
                    "decision": st.sampled_from(["Permit", "Deny", "Unknown"]),
                    "isEnforced": st.booleans(),
                    "state": st.sampled_from(["monitor", "limited", "unknown"]),
                    "allowlisted": st.booleans(),
                    "settingsVersion": st.fixed_dictionaries(
                        {
                            "effectiveTime": _opt(longs),
                            "topic": _opt(text),
                            "partition": _opt(INTS),
                            "offset": _opt(longs),
                            "exact": st.booleans(),
                        }
                    ),
                }
            ),
            "outcome": st.sampled_from(["success", "failure", "unknown"]),
            "severity": st.sampled_from(["normal", "warning", "critical"]),
            "reason": st.fixed_dictionaries({"reasonCode": INTS, "reasonType": text}),
            "observer": st.fixed_dictionaries({"name": text, "version": text, "evaluatedAt": longs}),
            "truncated": st.booleans(),
        }
    )


#: The access attempt example of SPEC §4, shared by the tests that check the example itself.
SPEC_EXAMPLE = {
    "id": "5b0f0b4e-8c1a-4a36-9d55-0d8b1b7a2c11",
    "event_time": "2026-11-27T12:00:00.123Z",
    "account_id": "a3f1c0d2e4b5968778695a4b3c2d1e0f",
    "identity": {
        "iam_id": "IBMid-270000ABCD",
        "type": "user",
        "account_id": "0b1c2d3e4f5a69788796a5b4c3d2e1f0",
        "name": "jane@example.com",
    },
    "action": "cloud-object-storage.object.read",
    "resource": {
        "crn": "crn:v1:bluemix:public:cloud-object-storage:global:a/a3f1...:bucket:b1",
        "service_name": "cloud-object-storage",
    },
    "source_ip": "203.0.113.7",
    "user_agent": "ibmcloud-cli/2.30",
}
SPEC_EXAMPLE_EVENT_MS = 1_795_780_800_123  # its event_time, 2026-11-27T12:00:00.123Z
