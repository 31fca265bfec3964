"""The demo's traffic: shaped like real cross-account calls, deterministic for a seed.

Real traffic is nothing like "every caller once": per target account a handful of partner accounts
make most cross-account calls (a Zipf-like share), their identities come back again and again, and a
long tail of external accounts calls once. The demo's accounts are chosen so the report has
something to show: one monitor account is ready now, one is ready after adding a few partners, one
is not ready, and limited accounts deny strangers.

Accounts and settings follow from the seed alone, so a second run of the demo on the same broker
reuses them (the settings records carry a fixed `updated_at` and replace themselves). Attempt ids
carry a per-run tag: a second run adds traffic, it does not replace the first run's.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass, field

from processor.core.ids import IDENTITY_TYPES
from processor.core.outcomes import ENFORCING_STATE, REPORT_ONLY_STATE, UNRESTRICTED_STATE
from processor.core.times import rfc3339_millis

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
#: Settings in force before any generated attempt, the same on every run (so they replace themselves).
SETTINGS_UPDATED_AT = "2020-01-01T00:00:00.000Z"
#: Past traffic published when the demo starts, so the report's trend has a shape.
HISTORY_DAYS = 14
HISTORY_ATTEMPTS = 6000
#: Zipf exponent of the partners' shares.
ZIPF_S = 1.3
_ACTIONS = ("cloud-object-storage.object.read", "cloud-object-storage.object.write", "iam-identity.apikey.list",
            "kms.secrets.read", "containers-kubernetes.cluster.read")
_AGENTS = ("ibmcloud-cli/2.30.0", "terraform-provider-ibm/1.70.1", "ibm-cos-sdk-go/1.12.0", "Mozilla/5.0 (console)")


def _acct(rng: random.Random) -> str:
    return f"{rng.getrandbits(128):032x}"


@dataclass
class Target:
    """One target account: its state, allowlisted partners, other repeated callers and one-off share."""

    account: str
    state: str
    role: str
    allowed: list[str] = field(default_factory=list)
    partners: list[str] = field(default_factory=list)  # repeated callers not on the allowlist
    one_off_share: float = 0.0
    weight: float = 1.0


@dataclass
class DemoTraffic:
    """The demo's accounts and their attempts (history over the past days, then live)."""

    seed: int = 7
    run_tag: str = "0"
    invalid_share: float = 0.02
    targets: list[Target] = field(default_factory=list)

    def __post_init__(self) -> None:
        rng = random.Random(self.seed)
        # (role, state, allowlisted partners, repeated callers not allowlisted, one-off share, traffic weight)
        plan = [
            ("ready now", REPORT_ONLY_STATE, 3, 0, 0.0, 1.0),
            ("ready after adding a few", REPORT_ONLY_STATE, 2, 3, 0.06, 1.6),
            ("not ready", REPORT_ONLY_STATE, 1, 9, 0.2, 1.2),
            ("limited", ENFORCING_STATE, 3, 2, 0.1, 1.0),
            ("limited", ENFORCING_STATE, 2, 1, 0.1, 0.6),
            ("unrestricted", UNRESTRICTED_STATE, 0, 4, 0.2, 0.8),
            ("unrestricted", UNRESTRICTED_STATE, 0, 3, 0.2, 0.5),
        ]
        for role, state, n_allowed, n_partners, one_off, weight in plan:
            acct = _acct(rng)
            allowed = [_acct(rng) for _ in range(n_allowed)]
            partners = [_acct(rng) for _ in range(n_partners)]
            self.targets.append(Target(acct, state, role, allowed, partners, one_off, weight))

    @property
    def monitor(self) -> list[Target]:
        return [t for t in self.targets if t.state == REPORT_ONLY_STATE]

    def target(self, role: str) -> Target:
        return next(t for t in self.targets if t.role == role)

    def settings(self) -> Iterator[tuple[bytes, bytes]]:
        """One settings record per target account (all identity types in the account's state)."""
        for t in self.targets:
            doc = {
                "account_id": t.account,
                "updated_at": SETTINGS_UPDATED_AT,
                "external_account_identity_interaction": {
                    "identity_types": {
                        it: {"state": t.state, "external_allowed_accounts": t.allowed} for it in IDENTITY_TYPES
                    }
                },
            }
            yield t.account.encode(), json.dumps(doc).encode()

    # --- attempts ---------------------------------------------------------------------------------

    def history(self, now_ms: int, n: int = HISTORY_ATTEMPTS) -> Iterator[tuple[bytes, bytes]]:
        """`n` attempts spread over the past HISTORY_DAYS, in event-time order, busier in working hours
        and growing towards today (the trend chart has a shape)."""
        rng = random.Random(self.seed * 1000 + 1)
        start = now_ms - HISTORY_DAYS * DAY_MS
        times: list[int] = []
        while len(times) < n:
            t = start + int(rng.random() * (now_ms - start - 60_000))
            hour = (t // HOUR_MS) % 24
            busy = 0.35 + 0.65 * math.exp(-(((hour - 14) / 4.0) ** 2))
            growth = 0.5 + 0.5 * (t - start) / (now_ms - start)
            if rng.random() < busy * growth:
                times.append(t)
        times.sort()
        for i, t in enumerate(times):
            yield self._attempt(rng, f"h{i}", t)

    def live(self, clock: Iterator[int]) -> Iterator[tuple[bytes, bytes]]:
        """Attempts with event_time = the clock's next value, forever."""
        rng = random.Random(self.seed * 1000 + 2)
        for i, t in enumerate(clock):
            yield self._attempt(rng, f"l{i}", t)

    def _attempt(self, rng: random.Random, n: str, event_ms: int) -> tuple[bytes, bytes]:
        if rng.random() < self.invalid_share:
            return b"bad", rng.choice(_INVALID)
        t = rng.choices(self.targets, weights=[x.weight for x in self.targets])[0]
        r = rng.random()
        if r < 0.25:
            ext = t.account  # same account
        elif r < 0.25 + 0.75 * t.one_off_share:
            ext = _acct(rng)  # a one-off caller, never seen again
        else:
            callers = t.allowed + t.partners
            weights = [1 / (k + 1) ** ZIPF_S for k in range(len(callers))]
            ext = rng.choices(callers, weights=weights)[0] if callers else _acct(rng)
        # identities repeat: a few per caller account (of one identity type), the first busiest
        who = min(int(rng.expovariate(1.2)), 3)
        itype = IDENTITY_TYPES[int(ext[:2], 16) % 3]
        attempt = {
            "id": f"demo-{self.seed}-{self.run_tag}-{n}",
            "event_time": rfc3339_millis(event_ms),
            "account_id": t.account,
            "identity": {"iam_id": f"iam-{ext[:8]}-{who}", "type": itype, "account_id": ext,
                         "name": f"{'deploy-bot' if itype != 'user' else 'dev'}-{ext[:4]}-{who}"},
            "action": _ACTIONS[int(rng.expovariate(0.8)) % len(_ACTIONS)],
            "resource": {"crn": f"crn:v1:bluemix:public:cloud-object-storage:global:a/{t.account}:bucket:b{who}",
                         "service_name": "cloud-object-storage"},
            "source_ip": f"203.0.113.{int(ext[2:4], 16) % 250 + 1}",
            "user_agent": _AGENTS[int(ext[4:6], 16) % len(_AGENTS)],
        }
        return t.account.encode(), json.dumps(attempt, separators=(",", ":")).encode()


_INVALID = [
    b"{not json",
    b'{"id":"x","event_time":"2026-11-27T12:00:00Z"}',
    b'{"id":"x","event_time":"yesterday","account_id":"a","identity":{"iam_id":"i","type":"user","account_id":"b"},'
    b'"action":"r"}',
]
