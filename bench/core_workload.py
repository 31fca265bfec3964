"""The workload of bench_core.py: a settings table of N accounts (a few with huge allowlists) and
attempt bytes in fixed shares of outcomes, generated deterministically for a seed, with the outcome
each attempt must get (the benchmark checks every result against it)."""

from __future__ import annotations

import json
import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from processor.core.ids import IDENTITY_TYPES
from processor.core.times import rfc3339_millis

SHARES = {"same": 0.50, "unrestricted": 0.20, "monitor": 0.15, "limited": 0.15}
BASE_MS = 1_795_780_800_000  # 2026-11-27T12:00:00Z

# attempt categories -> (expected outcome, emitted, decision, state)
SAME, UNRES, MON_ALLOW, MON_DENY, LIM_ALLOW, LIM_DENY = range(6)
EXPECT: dict[int, tuple[str, bool, str | None, str | None]] = {
    SAME: ("same_account", False, None, None),
    UNRES: ("unrestricted", False, None, None),
    MON_ALLOW: ("permit", True, "Permit", "monitor"),
    MON_DENY: ("would_be_deny", True, "Deny", "monitor"),
    LIM_ALLOW: ("permit", False, "Permit", "limited"),
    LIM_DENY: ("enforced_deny", True, "Deny", "limited"),
}


def _acct(rng: random.Random) -> str:
    return f"{rng.getrandbits(128):032x}"


@dataclass
class Workload:
    accounts: list[str] = field(default_factory=list)
    unrestricted: list[int] = field(default_factory=list)
    monitor: list[int] = field(default_factory=list)
    limited: list[int] = field(default_factory=list)
    huge: dict[str, list[int]] = field(default_factory=lambda: {"monitor": [], "limited": []})
    rtype: dict[int, str] = field(default_factory=dict)  # restricted identity type of restricted accounts
    allow: dict[int, list[str]] = field(default_factory=dict)
    records: list[tuple[bytes, bytes, int]] = field(default_factory=list)  # (key, value, timestamp)
    allowlist_ids: int = 0


def make_workload(n_accounts: int, n_huge: int, seed: int) -> Workload:
    rng = random.Random(seed)
    w = Workload()
    huge_left = {"monitor": (n_huge + 1) // 2, "limited": n_huge // 2}
    for i in range(n_accounts):
        acct = _acct(rng)
        w.accounts.append(acct)
        kind = ("unrestricted",) * 4 + ("monitor",) * 3 + ("limited",) * 3
        state = kind[i % 10]
        types: dict[str, Any]
        if state == "unrestricted":
            w.unrestricted.append(i)
            variant = i % 3
            if variant == 0:
                types = {"user": {"state": "enabled"}}  # explicit enabled, no allowlist (null is rejected)
            elif variant == 1:
                types = {}
            else:
                types = {t: {"state": "enabled", "external_allowed_accounts": [_acct(rng)]} for t in IDENTITY_TYPES}
        else:
            (w.monitor if state == "monitor" else w.limited).append(i)
            rtype = IDENTITY_TYPES[(i // 10) % 3]
            w.rtype[i] = rtype
            if huge_left[state] > 0:
                huge_left[state] -= 1
                size = 10_000
                w.huge[state].append(i)
            else:
                size = rng.randint(1, 50)
            allowed = [_acct(rng) for _ in range(size)]
            w.allow[i] = allowed
            w.allowlist_ids += size
            types = {rtype: {"state": state, "external_allowed_accounts": allowed}}
            if i % 2:
                other = IDENTITY_TYPES[((i // 10) + 1) % 3]
                types[other] = {"state": "enabled"}
        doc = {"account_id": acct, "external_account_identity_interaction": {"identity_types": types}}
        value = json.dumps(doc, separators=(",", ":")).encode()
        if i % 50 == 7:  # an older identical version: exercises the multi-version lookup
            w.records.append((acct.encode(), value, BASE_MS - 2 * 86_400_000))
        w.records.append((acct.encode(), value, BASE_MS - 86_400_000))
    return w


def categories(n: int, seed: int) -> bytearray:
    """Exactly the mix's shares (rounding remainder to same-account), shuffled."""
    counts = {
        UNRES: int(n * SHARES["unrestricted"]),
        MON_ALLOW: int(n * SHARES["monitor"]) // 2,
        MON_DENY: int(n * SHARES["monitor"]) - int(n * SHARES["monitor"]) // 2,
        LIM_ALLOW: int(n * SHARES["limited"]) // 2,
        LIM_DENY: int(n * SHARES["limited"]) - int(n * SHARES["limited"]) // 2,
    }
    counts[SAME] = n - sum(counts.values())
    out = bytearray()
    for cat, c in counts.items():
        out += bytes([cat]) * c
    rng = random.Random(seed + 1)
    shuffled = list(out)
    rng.shuffle(shuffled)
    return bytearray(shuffled)


def expected_outcomes(cats: bytearray) -> Counter[str]:
    c: Counter[str] = Counter()
    for cat, k in Counter(cats).items():
        c[EXPECT[cat][0]] += k
    return c


_ACTIONS = ["cloud-object-storage.object.read", "cloud-object-storage.object.write", "iam-identity.apikey.list",
            "kms.secrets.read"]


def attempt_bytes(w: Workload, cats: bytearray, start: int, stop: int, seed: int) -> list[bytes]:
    rng = random.Random(seed * 1_000_003 + start)
    out = []
    n_acc = len(w.accounts)
    for i in range(start, stop):
        cat = cats[i]
        if cat == SAME:
            t = rng.randrange(n_acc)
            target = ext = w.accounts[t]
            itype = IDENTITY_TYPES[rng.randrange(3)]
        elif cat == UNRES:
            ext = _acct(rng)
            if rng.random() < 0.5:
                t = w.unrestricted[rng.randrange(len(w.unrestricted))]
                itype = IDENTITY_TYPES[rng.randrange(3)]
            else:
                pool = w.monitor if rng.random() < 0.5 else w.limited
                t = pool[rng.randrange(len(pool))]
                itype = rng.choice([x for x in IDENTITY_TYPES if x != w.rtype[t]])
            target = w.accounts[t]
        else:
            state = "monitor" if cat in (MON_ALLOW, MON_DENY) else "limited"
            pool, huge = (w.monitor if state == "monitor" else w.limited), w.huge[state]
            t = huge[rng.randrange(len(huge))] if huge and rng.random() < 0.05 else pool[rng.randrange(len(pool))]
            target = w.accounts[t]
            itype = w.rtype[t]
            allowed = w.allow[t]
            ext = allowed[rng.randrange(len(allowed))] if cat in (MON_ALLOW, LIM_ALLOW) else _acct(rng)
        if rng.random() < 0.05:
            target = f" {target.upper()}"  # ids are compared trimmed and lower-cased
        obj = {
            "id": f"{rng.getrandbits(128):032x}",
            "event_time": rfc3339_millis(BASE_MS + i),
            "account_id": target,
            "identity": {"iam_id": f"IBMid-{ext[:10].upper()}", "type": itype, "account_id": ext,
                         "name": "jane@example.com" if itype == "user" else "svc"},
            "action": _ACTIONS[i % len(_ACTIONS)],
            "resource": {"crn": f"crn:v1:bluemix:public:cloud-object-storage:global:a/{w.accounts[t]}:bucket:b{i % 9}",
                         "service_name": "cloud-object-storage"},
            "source_ip": f"203.0.113.{i % 250}",
            "user_agent": "ibmcloud-cli/2.30",
        }
        out.append(json.dumps(obj, separators=(",", ":")).encode())
    return out
