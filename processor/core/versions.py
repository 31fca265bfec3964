"""One settings version and one rejected record as the table holds them, and what a record key names.

Plain data for the decision and the tools; `settings.SettingsHistory` holds them (packed when it can,
see `compact`).
"""

from __future__ import annotations

from processor.core.ids import account_problem, hex_key, normalize_account
from processor.core.rules import Rules
from processor.core.settings_doc import GUARD_REASONS

#: Effective time of a version that is in force "from the beginning of time" (simulate lines without updated_at).
BEGINNING_OF_TIME = -(2**62)
#: Settings rejection reasons: a closed set, used as a metric label.
REJECT_REASONS: tuple[str, ...] = (
    "bad_json", "invalid_value", "key_mismatch", "missing_key", *GUARD_REASONS,
)


class SettingsVersion:
    """One version of an account's settings and where it came from (reported in eval events)."""

    __slots__ = ("effective_ms", "offset", "partition", "rules", "topic")

    def __init__(
        self,
        effective_ms: int,
        rules: Rules,
        topic: str | None = None,
        partition: int | None = None,
        offset: int | None = None,
    ) -> None:
        self.effective_ms = effective_ms
        self.rules = rules
        self.topic = topic
        self.partition = partition
        self.offset = offset

    def __repr__(self) -> str:
        return f"SettingsVersion(effective_ms={self.effective_ms}, rules={self.rules}, offset={self.offset})"


class RejectedRecord:
    """The latest settings record of an account, rejected: where it is and why."""

    __slots__ = ("account", "detail", "has_valid_version", "offset", "partition", "reason", "timestamp_ms", "topic")

    def __init__(
        self, account: str, reason: str, detail: str, topic: str | None, partition: int | None, offset: int | None,
        timestamp_ms: int = BEGINNING_OF_TIME,
    ) -> None:
        self.account = account
        #: The record's timestamp: pruning forgets it like a reset (see `SettingsHistory.prune`).
        self.timestamp_ms = timestamp_ms
        self.reason = reason
        self.detail = detail
        self.topic = topic
        self.partition = partition
        self.offset = offset
        #: Filled in by `SettingsHistory.invalid_latest`.
        self.has_valid_version = False

    def __repr__(self) -> str:
        return f"RejectedRecord({self.account!r}, {self.reason!r}, partition={self.partition}, offset={self.offset})"


def key_in_normal_form(key: bytes) -> bool:
    """Whether a record key is spelt as its account's normal form (trimmed, lower-case). The log
    cleaner compacts raw key bytes, so another spelling is only replaced or deleted by a write under
    that same spelling (contract §3.2)."""
    try:
        text = key.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return hex_key(text) is not None or normalize_account(text) == text


def key_account(key: bytes | None) -> str | None:
    """The account a record key names (None: no usable key)."""
    if not key:
        return None
    try:
        text = key.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if hex_key(text) is not None:
        return text  # the common form: valid and normal as it is
    return normalize_account(text) if account_problem(text) is None else None
