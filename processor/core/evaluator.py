"""The one evaluation path shared by the stream processor and `simulate`: history lookup + policy."""

from __future__ import annotations

from processor.core.attempts import Attempt
from processor.core.policy import Verdict, evaluate
from processor.core.settings import SettingsHistory, SettingsVersion


def assess(history: SettingsHistory, attempt: Attempt) -> tuple[Verdict, SettingsVersion | None, bool]:
    """Advance stream time (one implicit input partition: `SettingsHistory.advance`), then `assess_at`.

    For `simulate` and callers with one input; the stream loop, which tracks stream time per input
    partition (`SettingsHistory.observe_batch`), uses `assess_at`.
    """
    history.advance(attempt.event_ms)
    return assess_at(history, attempt)


def assess_at(history: SettingsHistory, attempt: Attempt) -> tuple[Verdict, SettingsVersion | None, bool]:
    """Find the version in force at the attempt's event time and decide; stream time is not touched.

    An attempt within one account (SPEC §5 step 1) needs no settings: its lookup, a cache miss on a
    large table, is skipped and it reports no version.
    """
    d = attempt.data
    ident = d["identity"]
    t = attempt.event_ms
    account = d["account_id"]
    ident_account = ident["account_id"]
    if ident_account == account:
        return evaluate(account, ident_account, ident["type"], None), None, True
    version, exact = history.lookup(account, t)
    return evaluate(account, ident_account, ident["type"], version.rules if version else None), version, exact
