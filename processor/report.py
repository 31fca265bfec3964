"""The "what breaks if I switch to limited" aggregation, shared by `simulate --summary` and `report`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from processor.ids import rfc3339_millis
from processor.policy import OUTCOMES

MAX_ACTIONS = 20


@dataclass(slots=True)
class DenyGroup:
    """Would-be denies of one (account, identity type, external account)."""

    attempts: int = 0
    identities: set[str] = field(default_factory=set)
    actions: set[str] = field(default_factory=set)
    first_ms: int = 0
    last_ms: int = 0


class DenyAggregator:
    """Groups would-be denies; memory grows with distinct groups and identities, not attempts."""

    def __init__(self) -> None:
        self.groups: dict[tuple[str, str, str], DenyGroup] = {}
        self.outcomes: dict[str, int] = dict.fromkeys(OUTCOMES, 0)

    def count(self, outcome: str) -> None:
        self.outcomes[outcome] += 1

    def add_deny(
        self, account_id: str, identity_type: str, external_account: str, iam_id: str, event_ms: int, action: str
    ) -> None:
        key = (account_id, identity_type, external_account)
        g = self.groups.get(key)
        if g is None:
            g = self.groups[key] = DenyGroup(first_ms=event_ms, last_ms=event_ms)
        g.attempts += 1
        g.identities.add(iam_id)
        if len(g.actions) < MAX_ACTIONS:
            g.actions.add(action)
        g.first_ms = min(g.first_ms, event_ms)
        g.last_ms = max(g.last_ms, event_ms)

    def rows(self) -> list[dict[str, Any]]:
        """Groups, most attempts first, as plain JSON-ready dicts."""
        ordered = sorted(self.groups.items(), key=lambda kv: (-kv[1].attempts, kv[0]))
        return [
            {
                "account_id": acct,
                "identity_type": itype,
                "external_account_id": ext,
                "attempts": g.attempts,
                "identities": len(g.identities),
                "first_seen": rfc3339_millis(g.first_ms),
                "last_seen": rfc3339_millis(g.last_ms),
                "actions": sorted(g.actions),
            }
            for (acct, itype, ext), g in ordered
        ]

    def summary(self) -> dict[str, Any]:
        return {"outcomes": dict(self.outcomes), "would_be_denies": self.rows()}


def format_table(headers: list[str], rows: list[list[Any]]) -> str:
    """A plain aligned text table for terminals."""
    cells = [headers, *[[str(c) for c in r] for r in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
