"""An independent model of SPEC §3-§6: the decision, event-time lookup and retention.

Written from the contract's text alone (no processor imports, checked by
tests/core/test_spec_model.py), so tests that compare the processor against it check the code
against the contract, not against itself. The Hypothesis strategies that feed it are
tests/support/strategies.py; the expected output of a whole run is tests/support/spec_model.py.

    from tests.support.spec_rules import spec_decide, spec_version_index
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

IDENTITY_TYPES = ("user", "service_id", "service")
STATES = ("enabled", "monitor", "limited")
OUTCOMES = ("same_account", "unrestricted", "permit", "would_be_deny", "enforced_deny", "invalid")


def norm(account: str) -> str:
    """SPEC §3: account ids are compared after trimming and lower-casing."""
    return account.strip().lower()


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


def spec_standing(effective: list[int]) -> list[int]:
    """SPEC §3: the versions (indices, publication order) not superseded. A version is superseded by
    every later-published one whose effective time is at or before its own (so of two equal times the
    later published stands); what stands is in increasing effective time."""
    return [i for i, eff in enumerate(effective) if all(later > eff for later in effective[i + 1 :])]


def spec_in_force(effective: list[int], t_ms: int) -> int | None:
    """SPEC §6.2: the index of the version in force at t, the newest standing one (`spec_standing`)
    with effective time <= t (None: t precedes them all). `effective` is in publication order."""
    best: int | None = None
    for i in spec_standing(effective):
        if effective[i] <= t_ms:
            best = i
    return best


def spec_oldest(effective: list[int]) -> int | None:
    """The oldest standing version (`spec_standing`)."""
    standing = spec_standing(effective)
    return standing[0] if standing else None


def spec_version_index(effective: list[int], t_ms: int) -> tuple[int | None, bool]:
    """SPEC §6.2: newest version with effective time <= t; older than all: the oldest, inexact."""
    if not effective:
        return None, True
    best = spec_in_force(effective, t_ms)
    if best is None:
        return spec_oldest(effective), False
    return best, True


def spec_is_reset(doc: dict[str, Any]) -> bool:
    """A tombstone, or a document with every identity type `enabled` (SPEC §3.5)."""
    return all(state == "enabled" for state, _ in spec_rules(doc).values())


def spec_kept(effective: list[int], watermark: int | None) -> list[int]:
    """SPEC §6.3: the versions (indices, publication order) kept once pruned at `watermark` (None: not
    pruned): the version in force at the watermark and every later one, so the latest always stays. A
    superseded version (SPEC §3, `spec_standing`) is not kept at all."""
    live = spec_standing(effective)
    floor = None if watermark is None else spec_in_force(effective, watermark)
    if floor is None:
        return live
    return [i for i in live if effective[i] >= effective[floor]]


def spec_pruned_lookup(
    effective: list[int], resets: list[bool], t_ms: int, watermark: int | None
) -> tuple[int | None, bool]:
    """SPEC §6.2 over what SPEC §6.3 keeps at `watermark`: (version index or None, exact).

    An account whose only remaining version is a reset effective at or before the watermark is
    forgotten (SPEC §3.5): it answers like an account without settings, (None, True).
    """
    kept = spec_kept(effective, watermark)
    if not kept:
        return None, True
    latest = max(kept, key=lambda i: effective[i])
    if watermark is not None and resets[latest] and effective[latest] <= watermark:
        return None, True
    j, exact = spec_version_index([effective[i] for i in kept], t_ms)
    assert j is not None
    return kept[j], exact


def spec_retained_answers(
    effective: list[int], resets: list[bool], t_ms: int, low: int | None, high: int | None
) -> set[tuple[int | None, bool]]:
    """Every answer `spec_pruned_lookup` gives for some watermark in [low, high] (None: never pruned).

    Pruning runs now and then, not at every step: the versions held are those kept at the watermark
    of the last pruning run, which lies between `low` and `high`. The answer only changes where a
    version takes effect, so those watermarks and the two ends cover the range.
    """
    if high is None:
        return {spec_pruned_lookup(effective, resets, t_ms, None)}
    assert low is not None and low <= high
    marks = {low, high} | {eff for eff in effective if low < eff <= high}
    return {spec_pruned_lookup(effective, resets, t_ms, w) for w in marks}
