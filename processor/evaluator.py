"""The one evaluation path shared by the stream processor and `simulate`: history lookup + policy."""

from __future__ import annotations

from processor.attempts import Attempt
from processor.policy import Verdict, evaluate
from processor.settings import SettingsHistory, SettingsVersion


def assess(history: SettingsHistory, attempt: Attempt) -> tuple[Verdict, SettingsVersion | None, bool]:
    """Advance stream time, find the version in force at the attempt's event time, decide."""
    d = attempt.data
    ident = d["identity"]
    t = attempt.event_ms
    history.advance(t)
    version, exact = history.lookup(d["account_id"], t)
    verdict = evaluate(d["account_id"], ident["account_id"], ident["type"], version.rules if version else None)
    return verdict, version, exact
