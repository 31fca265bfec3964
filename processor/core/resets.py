"""Which accounts hold only a reset, so pruning can forget them (SPEC §3: a tombstone resets an account).

A reset account whose reset is its only version, older than retention, behaves exactly like an account
never configured (every type enabled, no event). The history keeps a plain list of candidates (8 bytes
each; a set took 16 MB for a third of 1M accounts): an account may be listed twice, or be no longer a
reset; pruning checks each one against the table.
"""

from __future__ import annotations

from processor.core.compact import packed_effective, packed_resets
from processor.core.rules import DEFAULT_RULES
from processor.core.versions import SettingsVersion

Held = bytes | SettingsVersion | list[SettingsVersion]


def is_reset(held: Held) -> bool:
    """Whether an account's latest version has every identity type `enabled`."""
    if isinstance(held, bytes):
        return packed_resets(held)
    return (held[-1] if isinstance(held, list) else held).rules == DEFAULT_RULES


def prune_resets(accounts: dict[int | str, Held], candidates: list[int | str], watermark: int,
                 unpacked: dict[int | str, SettingsVersion]) -> tuple[list[int | str], int]:
    """Forget the accounts whose only version is a reset at or before `watermark`: (the candidates left,
    each once, that are still resets; how many accounts were forgotten)."""
    kept: dict[int | str, None] = {}
    dropped = 0
    for account in candidates:
        held = accounts.get(account)
        if held is None or account in kept or not is_reset(held):
            continue
        if not isinstance(held, list) and (
                packed_effective(held) if isinstance(held, bytes) else held.effective_ms) <= watermark:
            del accounts[account]
            unpacked.pop(account, None)
            dropped += 1
        else:
            kept[account] = None
    return list(kept), dropped
