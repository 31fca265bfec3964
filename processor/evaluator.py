"""The one evaluation path shared by the stream processor and `simulate`: history lookup + policy."""

from __future__ import annotations

from processor.attempts import Attempt
from processor.policy import Verdict, evaluate
from processor.settings import SettingsHistory, SettingsVersion


def assess(history: SettingsHistory, attempt: Attempt) -> tuple[Verdict, SettingsVersion | None, bool]:
    """Advance stream time, find the version in force at the attempt's event time, decide."""
    m = attempt.model
    history.advance(attempt.event_ms)
    version, exact = history.lookup(m.account_id, attempt.event_ms)
    verdict = evaluate(m.account_id, m.identity.account_id, m.identity.type, version.rules if version else None)
    return verdict, version, exact
