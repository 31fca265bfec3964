"""Generated settings and attempts: the demo's sample traffic and the benchmark's reference mix.

Deterministic for a seed, so tests and benchmarks can compare runs.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from processor.core.ids import IDENTITY_TYPES
from processor.core.outcomes import (
    ENFORCED_DENY,
    ENFORCING_STATE,
    INVALID,
    PERMIT,
    REPORT_ONLY_STATE,
    SAME_ACCOUNT,
    UNRESTRICTED,
    UNRESTRICTED_STATE,
    WOULD_BE_DENY,
)
from processor.core.times import rfc3339_millis


def account_id(rng: random.Random) -> str:
    return f"{rng.getrandbits(128):032x}"


@dataclass
class Mix:
    """Shares of the reference mix (SPEC-derived benchmark issue): must add up to 1."""

    same_account: float = 0.50
    unrestricted: float = 0.20
    monitor: float = 0.15
    limited: float = 0.15
    allowlisted: float = 0.5  # of the restricted ones
    invalid: float = 0.0


@dataclass
class Workload:
    """Accounts with settings, split by state, and their allowlists."""

    seed: int = 7
    accounts: int = 1000
    allowlist_min: int = 1
    allowlist_max: int = 50
    huge_allowlists: int = 0
    huge_size: int = 10_000
    mix: Mix = field(default_factory=Mix)
    unrestricted_ids: list[str] = field(default_factory=list)
    monitor_ids: list[str] = field(default_factory=list)
    limited_ids: list[str] = field(default_factory=list)
    allow: dict[str, list[str]] = field(default_factory=dict)

    def settings(self) -> Iterator[dict[str, object]]:
        """One settings document per account: a third each enabled, monitor and limited (all types)."""
        rng = random.Random(self.seed)
        for i in range(self.accounts):
            acct = account_id(rng)
            state = (UNRESTRICTED_STATE, REPORT_ONLY_STATE, ENFORCING_STATE)[i % 3]
            size = self.huge_size if i < self.huge_allowlists * 3 and state != UNRESTRICTED_STATE else rng.randint(
                self.allowlist_min, self.allowlist_max
            )
            allowed = [account_id(rng) for _ in range(size)]
            {UNRESTRICTED_STATE: self.unrestricted_ids, REPORT_ONLY_STATE: self.monitor_ids,
             ENFORCING_STATE: self.limited_ids}[state].append(acct)
            self.allow[acct] = allowed
            yield {
                "account_id": acct,
                "external_account_identity_interaction": {
                    "identity_types": {
                        t: {"state": state, "external_allowed_accounts": allowed} for t in IDENTITY_TYPES
                    }
                },
            }

    def attempts(
        self, n: int, start_ms: int | None = None, step_ms: int | None = 1
    ) -> Iterator[tuple[bytes, bytes, str]]:
        """(key, value, expected outcome) triples following the mix. Call settings() first.

        event_time is start_ms + i * step_ms, or the wall clock when step_ms is None (live traffic).
        """
        rng = random.Random(self.seed + 1)
        t0 = start_ms if start_ms is not None else int(time.time() * 1000) - n * (step_ms or 0)
        m = self.mix
        bounds = [
            (m.invalid, INVALID),
            (m.same_account, SAME_ACCOUNT),
            (m.unrestricted, UNRESTRICTED),
            (m.monitor, REPORT_ONLY_STATE),
            (m.limited, ENFORCING_STATE),
        ]
        for i in range(n):
            r = rng.random()
            kind = ENFORCING_STATE
            for share, name in bounds:
                if r < share:
                    kind = name
                    break
                r -= share
            if kind == INVALID:
                yield b"bad", rng.choice(_INVALID), INVALID
                continue
            pool = {SAME_ACCOUNT: self.monitor_ids or self.unrestricted_ids, UNRESTRICTED: self.unrestricted_ids,
                    REPORT_ONLY_STATE: self.monitor_ids, ENFORCING_STATE: self.limited_ids}[kind]
            target = pool[rng.randrange(len(pool))]
            if kind == SAME_ACCOUNT:
                ext, outcome = target, SAME_ACCOUNT
            elif kind == UNRESTRICTED:
                ext, outcome = account_id(rng), UNRESTRICTED
            else:
                allowed = rng.random() < m.allowlisted
                ext = rng.choice(self.allow[target]) if allowed else account_id(rng)
                outcome = PERMIT if allowed else (WOULD_BE_DENY if kind == REPORT_ONLY_STATE else ENFORCED_DENY)
            itype = IDENTITY_TYPES[rng.randrange(3)]
            attempt = {
                "id": f"{self.seed}-{i}",
                "event_time": rfc3339_millis(t0 + i * step_ms if step_ms is not None else int(time.time() * 1000)),
                "account_id": target,
                "identity": {"iam_id": f"iam-{ext[:6]}-{rng.randrange(5)}", "type": itype, "account_id": ext,
                             "name": "svc" if itype != "user" else "jane@example.com"},
                "action": rng.choice(_ACTIONS),
                "resource": {"crn": f"crn:v1:bluemix:public:cloud-object-storage:global:a/{target}:bucket:b{i % 7}",
                             "service_name": "cloud-object-storage"},
                "source_ip": "203.0.113.7",
                "user_agent": "ibmcloud-cli/2.30",
            }
            yield target.encode(), json.dumps(attempt, separators=(",", ":")).encode(), outcome


_ACTIONS = ["cloud-object-storage.object.read", "cloud-object-storage.object.write", "iam-identity.apikey.list"]
_INVALID = [
    b"{not json",
    b'{"id":"x","event_time":"2026-11-27T12:00:00Z"}',
    b'{"id":"x","event_time":"yesterday","account_id":"a","identity":{"iam_id":"i","type":"user","account_id":"b"},'
    b'"action":"r"}',
    b'{"id":"x","event_time":"2026-11-27T12:00:00Z","account_id":"a","identity":{"iam_id":"i","type":"robot",'
    b'"account_id":"b"},"action":"r"}',
]
