"""The outcome of an eval event: which of the six outcomes (contract §5.2) one event stands for.

An eval event carries `responseData.state` and `responseData.decision`, not the outcome. Readers of
events (`report`, the demo's workload, the metrics) map them back here, from the policy's own
verdict constants, so the mapping cannot drift from the decision that produced the event.
"""

from __future__ import annotations

from processor.core.policy import (
    ENFORCED_DENY,
    INVALID,
    LIMITED_DENY,
    LIMITED_PERMIT,
    MONITOR_DENY,
    MONITOR_PERMIT,
    OUTCOMES,
    PERMIT,
    SAME_ACCOUNT,
    UNRESTRICTED,
    WOULD_BE_DENY,
)

__all__ = [
    "ENFORCED_DENY",
    "ENFORCING_STATE",
    "INVALID",
    "OUTCOMES",
    "PERMIT",
    "REPORT_ONLY_STATE",
    "SAME_ACCOUNT",
    "UNRESTRICTED",
    "UNRESTRICTED_STATE",
    "WOULD_BE_DENY",
    "event_outcome",
]

#: `responseData.state` of a report-only evaluation ("monitor") and of an enforcing one ("limited").
REPORT_ONLY_STATE: str = MONITOR_DENY.state
ENFORCING_STATE: str = LIMITED_DENY.state
#: The state of an identity type without restriction ("enabled"): such attempts emit no event.
UNRESTRICTED_STATE = "enabled"

_BY_FIELDS: dict[tuple[str, str], str] = {
    (v.state, v.decision): v.outcome
    for v in (MONITOR_PERMIT, MONITOR_DENY, LIMITED_PERMIT, LIMITED_DENY)
    if v.decision is not None
}


def event_outcome(state: str, decision: str) -> str | None:
    """`permit`, `would_be_deny` or `enforced_deny` for an event's (state, decision); None for a
    pair no verdict produces (a foreign or damaged event: counted by no outcome)."""
    return _BY_FIELDS.get((state, decision))
