"""The "what breaks if I switch to limited" aggregation, shared by `simulate --summary` and `report`.

Pure counting and grouping; the text rendering (tables, the verdict) is in `processor.tools`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from processor.core.ids import rfc3339_millis
from processor.core.policy import OUTCOMES

MAX_ACTIONS = 20


@dataclass(slots=True)
class DenyGroup:
    """Would-be denies of one (account, identity type, external account)."""

    attempts: int = 0
    identities: set[str] = field(default_factory=set)
    actions: set[str] = field(default_factory=set)
    first_ms: int = 0
    last_ms: int = 0


@dataclass(slots=True)
class IdentityGroup:
    """Would-be denies of one identity from one external account (kept with `per_identity=True`)."""

    attempts: int = 0
    actions: set[str] = field(default_factory=set)
    first_ms: int = 0
    last_ms: int = 0
    name: str | None = None


class DenyAggregator:
    """Groups would-be denies; memory grows with distinct groups and identities, not attempts.

    `per_identity=True` (used by `report`) also keeps one group per (account, external account,
    identity type, iam_id) for the per-identity breakdown.
    """

    def __init__(self, per_identity: bool = False) -> None:
        self.groups: dict[tuple[str, str, str], DenyGroup] = {}
        self.outcomes: dict[str, int] = dict.fromkeys(OUTCOMES, 0)
        self.per_identity = per_identity
        self.identities: dict[tuple[str, str, str, str], IdentityGroup] = {}

    def count(self, outcome: str) -> None:
        self.outcomes[outcome] += 1

    def add_deny(
        self,
        account_id: str,
        identity_type: str,
        external_account: str,
        iam_id: str,
        event_ms: int,
        action: str,
        name: str | None = None,
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
        if self.per_identity:
            ikey = (account_id, external_account, identity_type, iam_id)
            ig = self.identities.get(ikey)
            if ig is None:
                ig = self.identities[ikey] = IdentityGroup(first_ms=event_ms, last_ms=event_ms)
            ig.attempts += 1
            if len(ig.actions) < MAX_ACTIONS:
                ig.actions.add(action)
            ig.first_ms = min(ig.first_ms, event_ms)
            ig.last_ms = max(ig.last_ms, event_ms)
            if name:
                ig.name = name

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


    # -- one account (the `report` command) ------------------------------------------------------

    def _account_groups(self, account_id: str) -> list[tuple[str, str, DenyGroup]]:
        return [(itype, ext, g) for (acct, itype, ext), g in self.groups.items() if acct == account_id]

    def external_accounts(self, account_id: str) -> list[dict[str, Any]]:
        """Per external account: would-be-denied attempts, distinct identities, types, times, actions."""
        merged: dict[str, dict[str, Any]] = {}
        for itype, ext, g in self._account_groups(account_id):
            m = merged.setdefault(
                ext,
                {"attempts": 0, "ids": set(), "types": set(), "actions": set(), "first": g.first_ms, "last": g.last_ms},
            )
            m["attempts"] += g.attempts
            m["ids"] |= g.identities
            m["types"].add(itype)
            m["actions"] |= g.actions
            m["first"] = min(m["first"], g.first_ms)
            m["last"] = max(m["last"], g.last_ms)
        ordered = sorted(merged.items(), key=lambda kv: (-kv[1]["attempts"], kv[0]))
        return [
            {
                "account_id": ext,
                "attempts": m["attempts"],
                "identities": len(m["ids"]),
                "identity_types": sorted(m["types"]),
                "first_seen": rfc3339_millis(m["first"]),
                "last_seen": rfc3339_millis(m["last"]),
                "actions": sorted(m["actions"])[:MAX_ACTIONS],
            }
            for ext, m in ordered
        ]

    def identity_rows(self, account_id: str) -> list[dict[str, Any]]:
        """Per identity (needs per_identity=True), most attempts first."""
        rows = [(k, g) for k, g in self.identities.items() if k[0] == account_id]
        rows.sort(key=lambda kv: (-kv[1].attempts, kv[0]))
        return [
            {
                "iam_id": iam_id,
                "name": g.name,
                "identity_type": itype,
                "external_account_id": ext,
                "attempts": g.attempts,
                "first_seen": rfc3339_millis(g.first_ms),
                "last_seen": rfc3339_millis(g.last_ms),
                "actions": sorted(g.actions),
            }
            for (_acct, ext, itype, iam_id), g in rows
        ]

    def allowlist_additions(self, account_id: str) -> dict[str, list[str]]:
        """Per identity type, the external accounts whose allowlisting would have permitted every deny."""
        out: dict[str, set[str]] = {}
        for itype, ext, _g in self._account_groups(account_id):
            out.setdefault(itype, set()).add(ext)
        return {t: sorted(v) for t, v in sorted(out.items())}

    def account_report(
        self,
        account_id: str,
        start_ms: int,
        end_ms: int,
        window: str,
        current: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """The `report --format json` object (SPEC §10), without the verdict (`tools.report.verdict`).

        `current`: the account's settings in force now (`settings get --format json` shape), used to say
        which suggested allowlist additions are already in place.
        """
        groups = self._account_groups(account_id)
        attempts = sum(g.attempts for _t, _e, g in groups)
        identities: set[str] = set()
        for _t, _e, g in groups:
            identities |= g.identities
        externals = self.external_accounts(account_id)
        additions = self.allowlist_additions(account_id)
        already: dict[str, list[str]] = {}
        covered = 0
        if current is not None:
            types = current.get("identity_types", {})
            for itype, ext, g in groups:
                allowed = set(types.get(itype, {}).get("external_allowed_accounts", []))
                if ext in allowed:
                    covered += g.attempts
                    already.setdefault(itype, []).append(ext)
            additions = {
                t: [e for e in exts if e not in set(already.get(t, []))] for t, exts in additions.items()
            }
            additions = {t: e for t, e in additions.items() if e}
            already = {t: sorted(e) for t, e in sorted(already.items())}
        report: dict[str, Any] = {
            "account_id": account_id,
            "window": {"since": rfc3339_millis(start_ms), "until": rfc3339_millis(end_ms), "text": window},
            "would_be_denies": attempts,
            "identities": len(identities),
            "external_accounts": externals,
            "by_identity": self.identity_rows(account_id) if self.per_identity else None,
            "allowlist_additions": additions,
            "already_allowlisted": already if current is not None else None,
            "denies_with_current_allowlist": attempts - covered if current is not None else None,
            "report_only_permits": self.outcomes.get("permit", 0),
            "enforced_denies": self.outcomes.get("enforced_deny", 0),
            "current_settings": current,
        }
        return report
