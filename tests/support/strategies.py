"""Hypothesis strategies, builders and fixed examples of settings documents, access attempts and
eval events, for the tests of the decision, the settings history and the codec.

The independent model of the contract they are checked against is elsewhere: tests/support/spec_rules.py
(decision, event-time lookup, retention) and tests/support/spec_model.py (the expected output).

    from tests.support.strategies import ACCOUNTS, attempt_obj, scenarios, eval_events
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from math import prod
from typing import Any

from hypothesis import strategies as st

from tests.support.spec_rules import IDENTITY_TYPES, STATES, SpecDecision, norm, spec_decide, spec_version_index

#: Deterministic 32-hex account ids, like real IBM Cloud account ids.
ACCOUNTS: list[str] = [hashlib.md5(f"account-{i}".encode()).hexdigest() for i in range(64)]

#: Other forms the contract allows (§3.2: 1-256 of ASCII letters, digits and `. _ : @ / -` after
#: trimming, compared after lower-casing), of varied lengths, related so that only equality tells
#: them apart: prefixes and suffixes of one another, a substring, one character more, an alias, a
#: CRN-like and an e-mail-like id sharing a tail. A scenario drawn from these catches an allowlist
#: matched by prefix, suffix or substring instead of equality.
ACCOUNT_FAMILY: list[str] = [
    "a3f1",
    ACCOUNTS[5],
    ACCOUNTS[5] + "0",
    ACCOUNTS[5][:31],
    "a3f1c0",
    ACCOUNTS[5][4:12],
    ACCOUNTS[5][-6:],
    "strasse",
    "crn:v1:a/strasse",
    "ops@strasse",
    "acct-alias",
    "alias",
    "z" * 256,
    "z" * 255,
]

#: 2026-06-01T00:00:00Z; scenarios happen within a few days of it.
BASE_MS = 1_780_272_000_000
#: A clock comfortably after every generated event time (no "future" rejections).
NOW_MS = BASE_MS + 30 * 24 * 3600 * 1000
MINUTE = 60_000
HOUR = 60 * MINUTE

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


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


# --- strategies -----------------------------------------------------------------------------------


_BYTES: dict[int, st.SearchStrategy[bytes]] = {}


def _choices(draw: st.DrawFn, *radix: int) -> list[int]:
    """Several independent choices, choice i uniform in range(radix[i]), from ONE draw of random bytes
    read as a mixed-radix number (the first choice most significant; all shrink towards 0 with the
    bytes).

    Hypothesis' cost is per draw (tens of microseconds each): a scenario of 200 attempts drawn field
    by field took ~100 ms to generate, too slow for 500 examples per CI run. One draw per attempt and
    per settings version keeps it to a few milliseconds.
    """
    total = prod(radix)
    size = (total.bit_length() + 7) // 8 + 1  # a spare byte: each choice within 1/256 of uniform
    if size not in _BYTES:
        _BYTES[size] = st.binary(min_size=size, max_size=size)
    n = int.from_bytes(draw(_BYTES[size]), "big") % total
    out = []
    for r in reversed(radix):
        n, d = divmod(n, r)
        out.append(d)
    return out[::-1]


_PADS = ("", " ", "  ", "\t")


def _messy(draw: st.DrawFn, account: str) -> str:
    left, right, mask = _choices(draw, len(_PADS), len(_PADS), 2 ** min(len(account), 64))
    # only letters whose upper case lower-cases back (`ß`.upper() is `SS`, another id)
    chars = [c.upper() if c.upper().lower() == c and mask >> i & 1 else c for i, c in enumerate(account)]
    return _PADS[left] + "".join(chars) + _PADS[right]


@st.composite
def messy(draw: st.DrawFn, account: str) -> str:
    """The same account id with random case and surrounding whitespace (compares equal after norm)."""
    return _messy(draw, account)


@dataclass
class Scenario:
    """Settings versions (account, effective ms, document incl. updated_at) in publication order, and
    attempt lines in arrival order."""

    versions: list[tuple[str, int, dict[str, Any]]] = field(default_factory=list)
    attempts: list[bytes] = field(default_factory=list)
    #: parsed attempt objects, None for deliberately invalid lines
    attempt_objs: list[dict[str, Any] | None] = field(default_factory=list)

    def settings_lines(self) -> list[bytes]:
        return [dumps(doc) for _, _, doc in self.versions]

    def versions_of(self, target: str) -> list[int]:
        """Indices (in `versions`, so in publication order) of the versions of one normalised account."""
        return [i for i, (acct, _, _) in enumerate(self.versions) if acct == target]

    def expected(self) -> list[tuple[SpecDecision, int | None, bool]]:
        """Per attempt line: the SPEC decision, the index (in `versions`) of the version used, exact."""
        out: list[tuple[SpecDecision, int | None, bool]] = []
        for obj in self.attempt_objs:
            if obj is None:
                out.append((SpecDecision("invalid", None, False, None, False, False), None, True))
                continue
            mine = self.versions_of(norm(obj["account_id"]))
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


#: How far behind the newest attempt a late one may arrive: beyond every retention tested.
MAX_LATENESS_MS = 4 * HOUR
#: Spellings per account in one scenario: the clean id and two `messy` ones.
_SPELLINGS = 3
#: updated_at renderings of the same instant: UTC, +02:00, -05:30.
_OFFSETS_MIN = (0, 0, 120, -330)
#: A list of versions (attempts) ends where an element's first choice is 0, one in this many: a
#: geometric length, mean 4 versions per account (60 attempts), cut at the maximum. An element is one
#: draw, so the shrinker drops elements by deleting draws or ends the list by zeroing one.
_VERSIONS_STOP = 8
_ATTEMPTS_STOP = 200


def _version(
    draw: st.DrawFn, effs: list[int], spellings: list[str], allowable: list[str], max_versions: int
) -> tuple[int, int, dict[str, Any]] | None:
    """The next settings version of an account whose versions so far took effect at `effs`, or None
    (no more): its publication rank, effective time and document (one time in ten a simulate
    tombstone line, SPEC §11.4), all from one draw.

    The time lies within six hours of BASE_MS; one in four shares the very millisecond of an earlier
    version (then the later published replaces the earlier, SPEC §3.3), one in four its minute. The
    account id is one of `spellings`, updated_at one of the renderings `_OFFSETS_MIN`. Each identity
    type is left out or has a state and up to three ids of `allowable` (repeats allowed: the same id
    twice is one id), the list sometimes present though empty.
    """
    n = len(allowable)
    more, rank, kind, j, anywhen, second, spelling, offset, tomb, *types = _choices(
        draw, _VERSIONS_STOP, 1000, 4, max_versions, 6 * HOUR, MINUTE, len(spellings), len(_OFFSETS_MIN), 10,
        *[4, 4, 2, n, n, n] * len(IDENTITY_TYPES))
    if not more:
        return None
    if effs and kind == 2:  # the same instant as an earlier version
        eff = effs[j % len(effs)]
    elif effs and kind == 3:  # the same minute as an earlier version
        eff = effs[j % len(effs)] // MINUTE * MINUTE + second
    else:
        eff = BASE_MS + anywhen
    updated_at = iso(eff, _OFFSETS_MIN[offset])
    if tomb == 9:
        return rank, eff, {"account_id": spellings[spelling], "tombstone": True, "updated_at": updated_at}
    doc_types: dict[str, Any] = {}
    for k, t in enumerate(IDENTITY_TYPES):
        state, size, listed, *ids = types[6 * k : 6 * k + 6]
        if state == 0:  # left out
            continue
        cfg: dict[str, Any] = {"state": STATES[state - 1]}
        if size or listed:
            cfg["external_allowed_accounts"] = [allowable[i] for i in ids[:size]]
        doc_types[t] = cfg
    return rank, eff, settings_obj(spellings[spelling], doc_types, updated_at)


def _family_order(draw: st.DrawFn) -> list[str]:
    """ACCOUNT_FAMILY in a drawn order (so any of them may be a target, an allowlisted id or an
    identity), padded with hex ids."""
    order = list(ACCOUNT_FAMILY)
    for i in range(len(order) - 1, 0, -1):  # Fisher-Yates from one draw per step
        (j,) = _choices(draw, i + 1)
        order[i], order[j] = order[j], order[i]
    return order + [a for a in ACCOUNTS if a not in order]


def _draw_versions(draw: st.DrawFn, pool: list[str], spellings: dict[str, list[str]], allowable: list[str],
                   max_versions: int) -> tuple[list[tuple[str, int, dict[str, Any]]], dict[str, list[int]]]:
    """Each account's versions, in publication order (by drawn rank), and each account's effective times."""
    ranked: list[tuple[int, int, tuple[str, int, dict[str, Any]]]] = []
    by_account: dict[str, list[int]] = {}
    for account in pool:
        effs = by_account[account] = []
        while len(effs) < max_versions and (v := _version(draw, effs, spellings[account], allowable, max_versions)):
            rank, eff, doc = v
            effs.append(eff)
            ranked.append((rank, len(ranked), (account, eff, doc)))
    return [version for _, _, version in sorted(ranked)], by_account


def _plan_attempts(draw: st.DrawFn, pool: list[str], by_account: dict[str, list[int]], n_externals: int,
                   max_accounts: int, max_versions: int, max_attempts: int,
                   invalid: bool) -> list[tuple[int, int, str | None, list[int]]]:
    """(event time, lateness, target or None for an invalid line, who) of each attempt, in arrival order."""
    planned: list[tuple[int, int, str | None, list[int]]] = []
    while len(planned) < max_attempts:
        # kind 0-14: any time; 15-18: at or next to one of the target's effective times; 19: invalid line
        more, kind, late, k, near, anywhen, lateness, *who = _choices(
            draw, _ATTEMPTS_STOP, 20, 4, max_accounts, 3 * max_versions, 8 * HOUR, MAX_LATENESS_MS + 1,
            _SPELLINGS, n_externals, _SPELLINGS, len(IDENTITY_TYPES), 4)
        if not more:
            break
        target = pool[k % len(pool)]
        effs = by_account[target]
        if 15 <= kind <= 18 and effs:
            t = effs[near // 3 % len(effs)] + (0, -1, 1)[near % 3]
        else:
            t = BASE_MS - HOUR + anywhen
        planned.append((t, lateness if late == 3 else 0, None if kind == 19 and invalid else target, who))
    return planned


@st.composite
def scenarios(
    draw: st.DrawFn, max_accounts: int = 8, max_versions: int = 8, max_attempts: int = 200, invalid: bool = True
) -> Scenario:
    """Random settings histories and attempts around them.

    Up to `max_accounts` accounts with up to `max_versions` versions each (`_version`: equal minutes
    and equal instants included), published in a random order (accounts interleaved, not sorted by
    time). Up to `max_attempts` attempts (about 60 on average), arriving in random event-time order,
    or mostly in order with one in four arriving late (up to MAX_LATENESS_MS behind); one in five at
    exactly one of its target's effective times or 1 ms either side; one in twenty an invalid line.
    Ids are spelt as `messy` variants, a few per account and scenario. Half the scenarios take their
    ids from ACCOUNT_FAMILY (prefixes, suffixes, substrings, CRN- and e-mail-like ids, lengths 4 to
    256) instead of 32-hex ids, so only an equality match of allowlists passes.

    One draw per version and per attempt (`_choices`), no nested strategies: cheap enough for 500
    examples per CI run, and shrinkable element by element.
    """
    accounts, in_order, family = _choices(draw, max_accounts, 2, 2)
    ids = _family_order(draw) if family else ACCOUNTS
    pool = ids[: 1 + accounts]
    externals = pool + ids[max_accounts : max_accounts + 2]
    spellings = {a: [a] + [_messy(draw, a) for _ in range(_SPELLINGS - 1)] for a in externals}
    allowable = [s for a in externals for s in spellings[a]]
    sc = Scenario()
    sc.versions, by_account = _draw_versions(draw, pool, spellings, allowable, max_versions)
    planned = _plan_attempts(draw, pool, by_account, len(externals), max_accounts, max_versions, max_attempts,
                             invalid)
    if in_order:  # mostly in event-time order, one in four arriving late
        planned.sort(key=lambda p: p[0])
        planned = [(t - lateness, 0, a, w) for t, lateness, a, w in planned]

    for i, (t, _, target, (spelt, ident, ident_spelt, itype, iam)) in enumerate(planned):
        if target is None:
            sc.attempts.append(_INVALID_LINES[(ident * 4 + iam) % len(_INVALID_LINES)])
            sc.attempt_objs.append(None)
            continue
        obj = attempt_obj(
            spellings[target][spelt],
            spellings[externals[ident]][ident_spelt],
            IDENTITY_TYPES[itype],
            t,
            attempt_id=f"att-{i}",
            iam_id=f"iam-{iam}",
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
