"""The decision of SPEC §5 as one pure function over plain data: no I/O, no clock, no allocation.

Shared by the stream processor and `access-eval simulate`, so both can only ever agree.
"""

from __future__ import annotations

from processor.core.settings import TYPE_INDEX, Rules

SAME_ACCOUNT = "same_account"
UNRESTRICTED = "unrestricted"
PERMIT = "permit"
WOULD_BE_DENY = "would_be_deny"
ENFORCED_DENY = "enforced_deny"
INVALID = "invalid"
#: Every attempt lands in exactly one of these (SPEC §5).
OUTCOMES: tuple[str, ...] = (SAME_ACCOUNT, UNRESTRICTED, PERMIT, WOULD_BE_DENY, ENFORCED_DENY, INVALID)


class Verdict:
    """The result of one evaluation. There are only six, so they are shared constants."""

    __slots__ = ("allowlisted", "decision", "emit", "is_enforced", "outcome", "state")

    def __init__(
        self, outcome: str, decision: str | None, is_enforced: bool, state: str, allowlisted: bool, emit: bool
    ) -> None:
        self.outcome = outcome
        self.decision = decision
        self.is_enforced = is_enforced
        self.state = state
        self.allowlisted = allowlisted
        self.emit = emit

    def __repr__(self) -> str:
        return f"Verdict({self.outcome}, state={self.state}, emit={self.emit})"


SAME_ACCOUNT_VERDICT = Verdict(SAME_ACCOUNT, None, False, "", False, False)
UNRESTRICTED_VERDICT = Verdict(UNRESTRICTED, None, False, "enabled", False, False)
MONITOR_PERMIT = Verdict(PERMIT, "Permit", False, "monitor", True, True)
MONITOR_DENY = Verdict(WOULD_BE_DENY, "Deny", False, "monitor", False, True)
LIMITED_PERMIT = Verdict(PERMIT, "Permit", True, "limited", True, False)
LIMITED_DENY = Verdict(ENFORCED_DENY, "Deny", True, "limited", False, True)


def evaluate(account_id: str, identity_account_id: str, identity_type: str, rules: Rules | None) -> Verdict:
    """SPEC §5 steps 1-5 for one attempt, given the rules of the version in force at its event time.

    Ids must already be normalised (the boundary models do it).
    """
    if identity_account_id == account_id:
        return SAME_ACCOUNT_VERDICT
    rule = rules[TYPE_INDEX[identity_type]] if rules is not None else None
    if rule is None:
        return UNRESTRICTED_VERDICT
    allowed = identity_account_id in rule.allowed
    if rule.state == "monitor":
        return MONITOR_PERMIT if allowed else MONITOR_DENY
    return LIMITED_PERMIT if allowed else LIMITED_DENY
