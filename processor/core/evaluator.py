"""The one evaluation path shared by the stream processor and `simulate`: history lookup + policy."""

from __future__ import annotations

from processor.core.attempts import Attempt
from processor.core.policy import Verdict, evaluate
from processor.core.settings import SettingsHistory, SettingsVersion


def assess(history: SettingsHistory, attempt: Attempt) -> tuple[Verdict, SettingsVersion | None, bool]:
    """Advance stream time, find the version in force at the attempt's event time, decide.

    An attempt within one account (SPEC §5 step 1) needs no settings: its lookup, a cache miss on a
    large table, is skipped and it reports no version.
    """
    d = attempt.data
    ident = d["identity"]
    t = attempt.event_ms
    history.advance(t)
    account = d["account_id"]
    ident_account = ident["account_id"]
    if ident_account == account:
        return evaluate(account, ident_account, ident["type"], None), None, True
    version, exact = history.lookup(account, t)
    return evaluate(account, ident_account, ident["type"], version.rules if version else None), version, exact
