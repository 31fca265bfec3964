"""The settings topic as the tools see it: every accepted version with its raw document, the
rejected records, and the publisher of new versions.

Reading uses the processor's own global-table reader (`SettingsTable`) and acceptance rules
(`SettingsHistory.apply_record`), so a view shows exactly the version the processor would apply now,
and says when a newer record was rejected.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from processor.core.display import printable
from processor.core.ids import IDENTITY_TYPES, normalize_account
from processor.core.settings import InvalidSettings, SettingsDocument, SettingsHistory, document_from_json
from processor.core.times import rfc3339_millis
from processor.errors import OpsError
from processor.kafka import clients


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


class DocumentView(SettingsHistory):
    """A SettingsHistory that also keeps the raw documents (for merging and display) and rejections."""

    def __init__(self) -> None:
        super().__init__(retention_ms=2**62)
        self.entries: dict[str, list[Entry]] = {}
        self.rejections: dict[str, list[Rejection]] = {}
        #: account -> every record key spelling it (exact bytes) -> whether that key's last record is
        #: an accepted tombstone. The log cleaner compacts raw key bytes, so a write meant to replace or
        #: delete what a key holds must use that key (contract §3).
        self.keys: dict[str, dict[bytes, bool]] = {}
        self.records = 0
        self._pending: tuple[Any, ...] | None = None

    def apply_record(
        self,
        key: bytes | None,
        value: bytes | None,
        timestamp_ms: int,
        topic: str | None = None,
        partition: int | None = None,
        offset: int | None = None,
    ) -> InvalidSettings | None:
        self.records += 1
        self._pending = (value, timestamp_ms, topic, partition, offset)
        problem = super().apply_record(key, value, timestamp_ms, topic, partition, offset)
        self._pending = None
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
        elif value is None:
            self._add(Entry(account, timestamp_ms, timestamp_ms, topic, partition, offset, None))
        return problem

    def apply_document(
        self,
        doc: SettingsDocument,
        effective_ms: int,
        topic: str | None = None,
        partition: int | None = None,
        offset: int | None = None,
    ) -> None:
        super().apply_document(doc, effective_ms, topic, partition, offset)
        if self._pending is not None:
            value, timestamp_ms = self._pending[0], self._pending[1]
            raw = json.loads(value)
            self._add(Entry(doc.account_id, effective_ms, timestamp_ms, topic, partition, offset, raw))

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

    def current(self, account: str, at_ms: int) -> Current:
        """The entry the processor would use for an attempt at `at_ms`, plus what follows it."""
        version, _exact = self.lookup(account, at_ms)
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


def read_view(props: dict[str, Any], topic: str, timeout_s: float) -> DocumentView:
    """Read the whole settings topic, up to the end offsets it has now (committed records only)."""
    from processor.kafka.table import SettingsTable

    view = DocumentView()
    table = SettingsTable(props, topic, view)
    try:
        try:
            table.start(timeout_s)
        except RuntimeError as exc:
            raise OpsError(f"--settings-topic: {exc}") from None
        if not table.catch_up(deadline_s=max(timeout_s, 1.0) * 4):
            raise OpsError(f"settings topic {topic!r} not read to its end offsets within {max(timeout_s, 1.0) * 4:g}s")
    finally:
        table.close()
    return view


def publish(
    props: dict[str, Any], topic: str, key: str | bytes, value: bytes | None, timeout_s: float
) -> tuple[int, int]:
    """Produce one record idempotently and wait for the acknowledgement -> (partition, offset)."""
    from confluent_kafka import Producer

    producer = Producer(clients.publisher_conf(props, delivery_timeout_s=timeout_s))
    result: dict[str, Any] = {}

    def on_delivery(err: Any, msg: Any) -> None:
        result["err"] = err
        result["msg"] = msg

    raw_key = key.encode() if isinstance(key, str) else key
    producer.produce(topic, value, raw_key, on_delivery=on_delivery)
    producer.flush(max(timeout_s, 1.0) + 5)
    if "msg" not in result:
        raise OpsError(
            f"record for {printable(raw_key.decode('utf-8', 'replace'))} not acknowledged by Kafka within "
            f"{timeout_s:g}s; it may or may not be written"
        )
    if result["err"] is not None:
        raise OpsError(f"publishing to {topic} failed: {result['err'].str()}")
    msg = result["msg"]
    return int(msg.partition()), int(msg.offset())
