"""The settings topic as the tools see it (`settings get|list|put|delete`, `report`): which version the
processor would apply now, each accepted record's raw document, the rejected records and the key
spellings in use. Pure: `processor.kafka.settings_log` reads the topic into it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from processor.core.ids import IDENTITY_TYPES, normalize_account
from processor.core.settings import (
    InvalidSettings,
    RejectedRecord,
    SettingsDocument,
    SettingsHistory,
    document_from_json,
)
from processor.core.times import rfc3339_millis


@dataclass(slots=True)
class Entry:
    """One accepted settings record (a document or a tombstone)."""

    account: str
    effective_ms: int
    timestamp_ms: int
    topic: str | None
    partition: int | None
    offset: int | None
    raw: dict[str, Any] | None  # the JSON object as published; None = tombstone


@dataclass(slots=True)
class Rejection:
    account: str
    partition: int | None
    offset: int | None
    reason: str
    detail: str


class DocumentView:
    """What the tools show of the settings topic: the processor's own `SettingsHistory` (which version is
    in force when), plus what it does not keep: each accepted record's raw document (for merging and
    display), the rejected records, and the exact key spellings in use.

    Composition, not a subclass: the history decides every record (`SettingsHistory.apply_record`, the
    processor's one rule), and the reader hands the view each record with that decision (`note`; the
    table's `on_record` hook). The version a record made is the history's latest for its account: a
    record supersedes its account's versions from its effective time on, so it is always the last one.
    """

    def __init__(self, history: SettingsHistory | None = None) -> None:
        #: Kept whole: the tools look at any time, so nothing is pruned.
        self.history = history if history is not None else SettingsHistory(retention_ms=2**62)
        self.entries: dict[str, list[Entry]] = {}
        self.rejections: dict[str, list[Rejection]] = {}
        #: account -> every record key spelling it (exact bytes) -> whether that key's last record is
        #: an accepted tombstone. The log cleaner compacts raw key bytes, so a write meant to replace or
        #: delete what a key holds must use that key (contract §3).
        self.keys: dict[str, dict[bytes, bool]] = {}
        self.records = 0

    def note(
        self,
        key: bytes | None,
        value: bytes | None,
        timestamp_ms: int,
        topic: str | None,
        partition: int | None,
        offset: int | None,
        problem: InvalidSettings | None,
    ) -> None:
        """Keep what the tools show of a record the history has just decided (`problem` None: accepted)."""
        self.records += 1
        try:
            account = normalize_account(key.decode("utf-8")) if key else ""
        except UnicodeDecodeError:
            account = ""
        if account and key is not None:
            self.keys.setdefault(account, {})[key] = problem is None and value is None
        if problem is not None:
            self.rejections.setdefault(account, []).append(
                Rejection(account, partition, offset, problem.reason, problem.detail)
            )
            return
        raw = None if value is None else json.loads(value)
        version = self.history.latest(account)
        assert version is not None, "an accepted record leaves a version"
        self._add(Entry(account, version.effective_ms, timestamp_ms, topic, partition, offset, raw))

    def _add(self, entry: Entry) -> None:
        entries = self.entries.setdefault(entry.account, [])
        # It supersedes every entry in force from its own time on, as SettingsHistory.put does (SPEC §3).
        entries[:] = [e for e in entries if e.effective_ms < entry.effective_ms]
        entries.append(entry)

    def live_keys(self, account: str) -> list[bytes]:
        """The exact keys of the account whose last record is not a tombstone (a document, valid or
        rejected): what a tombstone must be written under so that nothing of the account survives
        compaction, and what a new document must replace."""
        return [k for k, deleted in self.keys.get(account, {}).items() if not deleted]

    def invalid_latest(self) -> list[RejectedRecord]:
        """The history's accounts whose latest record was rejected (`SettingsHistory.invalid_latest`)."""
        return self.history.invalid_latest()

    def has_invalid_latest(self, account_id: str) -> bool:
        return self.history.has_invalid_latest(account_id)

    def current(self, account: str, at_ms: int) -> Current:
        """The entry the processor would use for an attempt at `at_ms`, plus what follows it."""
        version, _exact = self.history.lookup(account, at_ms)
        entries = self.entries.get(account, [])
        entry = None
        if version is not None:
            entry = next((e for e in entries if (e.partition, e.offset) == (version.partition, version.offset)), None)
        scheduled = [e for e in entries if e.effective_ms > at_ms and e is not entry]
        rejected = [
            r
            for r in self.rejections.get(account, [])
            if entry is None or (r.offset is not None and entry.offset is not None and r.offset > entry.offset)
        ]
        return Current(account, entry, scheduled, rejected)


@dataclass
class Current:
    account: str
    entry: Entry | None
    scheduled: list[Entry] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)

    @property
    def exists(self) -> bool:
        return self.entry is not None and self.entry.raw is not None

    def document(self) -> SettingsDocument | None:
        if self.entry is None or self.entry.raw is None:
            return None
        return document_from_json(self.entry.raw)

    def identity_types(self) -> dict[str, dict[str, Any]]:
        """Every known identity type with its effective state (missing = enabled) and allowlist."""
        out = {t: {"state": "enabled", "external_allowed_accounts": []} for t in IDENTITY_TYPES}
        doc = self.document()
        interaction = doc.external_account_identity_interaction if doc is not None else None
        if interaction is not None:
            for t in IDENTITY_TYPES:
                cfg = getattr(interaction.identity_types, t)
                if cfg is not None:
                    out[t] = {"state": cfg.state, "external_allowed_accounts": list(cfg.external_allowed_accounts)}
        return out

    def as_json(self) -> dict[str, Any]:
        e = self.entry
        doc = self.document()
        return {
            "account_id": self.account,
            "exists": self.exists,
            "deleted": e is not None and e.raw is None,
            "source": None
            if e is None
            else {
                "topic": e.topic,
                "partition": e.partition,
                "offset": e.offset,
                "timestamp": rfc3339_millis(e.timestamp_ms),
                "effective_time": rfc3339_millis(e.effective_ms),
            },
            "identity_types": self.identity_types(),
            "unknown_identity_types": doc.unknown_identity_types if doc is not None else [],
            "document": e.raw if e is not None else None,
            "scheduled": [
                {"effective_time": rfc3339_millis(s.effective_ms), "partition": s.partition, "offset": s.offset}
                for s in self.scheduled
            ],
            "rejected_newer_records": [
                {"partition": r.partition, "offset": r.offset, "reason": r.reason, "detail": r.detail}
                for r in self.rejected
            ],
        }
