"""Account settings (SPEC §3): the per-account versioned history built from settings records.

The history answers "which settings version was in force for account A at time t", which is what
makes replays deterministic (SPEC §5 "Time"). What one record says (the document model, its
validation, the rules) is `settings_doc`; its names are re-exported here, so callers import one module.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Hashable, Iterable, Iterator, Mapping, Sequence

from processor.core.compact import (
    HEAD_BYTES,
    MAX_TOPICS,
    pack_version,
    unpack_version,
)
from processor.core.ids import IDENTITY_TYPES, account_key, account_problem, key_text, normalize_account
from processor.core.resets import is_reset, prune_resets
from processor.core.rules import DEFAULT_RULES, Rule, Rules
from processor.core.settings_doc import (  # re-exported: callers import one module
    MAX_ALLOWLIST_IDS,
    MAX_RECORD_BYTES,
    RECENT_IDS_MAX,
    SMALL_ALLOWLIST,
    TYPE_INDEX,
    ExternalInteraction,
    IdentityTypes,
    IdentityTypeSettings,
    InvalidSettings,
    SettingsDocument,
    SmallSet,
    TombstoneLine,
    allowed_ids,
    document_from_json,
    parse_settings,
    parse_settings_line,
    rules_of,
)
from processor.core.settings_fast import FastTypes, fast_rules, fast_settings, packed_record
from processor.core.times import MAX_TIME_MS, to_millis
from processor.core.versions import (
    BEGINNING_OF_TIME,
    REJECT_REASONS,
    RejectedRecord,
    SettingsVersion,
    key_account,
    key_in_normal_form,
)

__all__ = [
    "BEGINNING_OF_TIME", "DEFAULT_RETENTION_MS", "DEFAULT_RULES", "MAX_ALLOWLIST_IDS", "MAX_RECORD_BYTES",
    "RECENT_IDS_MAX", "REJECT_REASONS", "SMALL_ALLOWLIST", "TYPE_INDEX", "ExternalInteraction",
    "IdentityTypeSettings", "IdentityTypes", "InvalidSettings", "RejectedRecord", "Rule", "Rules",
    "SettingsDocument", "SettingsHistory", "SettingsVersion", "SmallSet", "TombstoneLine", "allowed_ids",
    "document_from_json", "key_in_normal_form", "parse_settings", "parse_settings_line", "rules_of"
]

DEFAULT_RETENTION_MS = 24 * 3600 * 1000
#: Unpacked versions kept for the hot path (~0.5 µs saved per lookup of a recently read account).
UNPACKED_MAX = 65_536
_UNBOUND = object()
#: A settings record as `apply_canonical_run` reads it: key, value, timestamp (ms), partition, offset.
CanonicalRecord = tuple[bytes | None, bytes | None, int, int, int]
#: What a record key in the normal form of a hex account id holds: 32 of these (`apply_canonical_run`
#: deletes them and finds nothing left; a C call, cheaper than a regular expression per record).
_HEX_DIGITS = b"0123456789abcdef"
class SettingsHistory:
    """Per-account settings versions ordered by effective time, pruned by stream time.

    An account with one version stores it directly (the common case), packed when it fits the compact
    form (`compact`), several as a sorted list. Accounts are keyed by `compact.account_key`.
    """

    def __init__(self, retention_ms: int = DEFAULT_RETENTION_MS, prune_every_ms: int = 60_000) -> None:
        self.retention_ms = retention_ms
        self._prune_every_ms = prune_every_ms
        self._accounts: dict[int | str, bytes | SettingsVersion | list[SettingsVersion]] = {}
        #: Topics of packed versions, by the index a packed version holds (few: one per settings topic).
        self._topics: list[str | None] = []
        #: Packed versions recently read, unpacked (bounded): the hot path reads the same accounts again.
        self._unpacked: dict[int | str, SettingsVersion] = {}
        #: The topic `apply_canonical_run` takes records of, and its index (see `bind_topic`).
        self._topic_last: tuple[object, int] = (_UNBOUND, -1)
        self._multi: set[int | str] = set()
        #: Accounts whose latest version had every type `enabled` (a reset) when it was applied: forgotten
        #: once that version is the only one left and older than retention, so they do not stay in memory
        #: forever. A list of candidates, checked by `prune` (8 bytes each; a set took 16 MB for a third of
        #: 1M accounts): an account may be listed twice, or no longer be a reset.
        self._resets: list[int | str] = []
        #: Account -> its latest record, when that record was rejected (SPEC §3 compaction hazard).
        self._invalid_latest: dict[str, RejectedRecord] = {}
        #: What pruning goes by: the minimum over the partitions that count of their newest event time,
        #: never moving backwards (SPEC §5).
        self.stream_time_ms = BEGINNING_OF_TIME
        self._last_prune_ms = BEGINNING_OF_TIME
        #: Input partition -> newest attempt event time seen on it.
        self._partition_ms: dict[Hashable, int] = {}
        #: The partitions this instance holds (None until `assign`: then every observed one counts).
        self._assigned: set[Hashable] | None = None
        self._advance_ms = BEGINNING_OF_TIME
        self.versions = 0
        self.applied = 0
        self.rejected = 0
        self.unknown_identity_types = 0
        #: (account, identity types) the last record applied turned from restricted to unrestricted
        #: (`enabled`): downgrades are what an auditor asks about, so the table logs and counts them.
        self.last_downgrade: tuple[str, list[str]] | None = None

    # -- writing -------------------------------------------------------------------------------

    def put(self, account_id: str, version: SettingsVersion) -> None:
        """Insert a version read after every one held: it supersedes each version of the account whose
        effective time is at or after its own (SPEC §3), so the newest record by offset governs from its
        effective time on, which is what survives compaction (the last record of a key)."""
        key = account_key(account_id)
        current = self._accounts.get(key)
        if current is None:
            self._store(key, version)
            self.versions += 1
            self._note_latest(key, version)
            return
        versions = current if isinstance(current, list) else [self._version(key, current)]
        self._note_downgrade(account_id, versions[-1].rules, version.rules)
        i = bisect_left(versions, version.effective_ms, key=_effective)
        self.versions += 1 - (len(versions) - i)
        del versions[i:]
        versions.append(version)
        if len(versions) == 1:
            self._store(key, versions[0])
            self._multi.discard(key)
        else:
            self._unpacked.pop(key, None)
            self._accounts[key] = versions
            self._multi.add(key)
        self._note_latest(key, version)

    def _store(self, key: int | str, version: SettingsVersion) -> None:
        """Hold an account's only version, packed when it fits."""
        self._unpacked.pop(key, None)
        topics = self._topics
        try:
            topic_index = topics.index(version.topic)
        except ValueError:
            topic_index = len(topics)
            if topic_index < MAX_TOPICS:
                topics.append(version.topic)
        packed = pack_version(version.effective_ms, version.rules, topic_index, version.partition, version.offset)
        self._accounts[key] = version if packed is None else packed

    def _version(self, key: int | str, held: bytes | SettingsVersion) -> SettingsVersion:
        """A single held version as plain data (packed ones unpacked, through a bounded cache)."""
        if isinstance(held, SettingsVersion):
            return held
        version = self._unpacked.get(key)
        if version is None:
            effective_ms, rules, topic_index, partition, offset = unpack_version(held)
            version = SettingsVersion(effective_ms, rules, self._topics[topic_index], partition, offset)
            if len(self._unpacked) >= UNPACKED_MAX:
                self._unpacked.clear()
            self._unpacked[key] = version
        return version

    def _note_downgrade(self, account_id: str, before: Rules, after: Rules) -> None:
        types = [t for t, b, a in zip(IDENTITY_TYPES, before, after, strict=True) if b is not None and a is None]
        self.last_downgrade = (account_id, types) if types else None

    def _note_latest(self, key: int | str, latest: SettingsVersion) -> None:
        if latest.rules == DEFAULT_RULES:
            self._resets.append(key)

    def apply_canonical_run(self, records: Sequence[CanonicalRecord], start: int, topic: str | None) -> int:
        """`apply_record` for the bootstrap's common case, records[start], records[start + 1], ... in one
        step each (same effect and counters): a canonical record (`settings_fast`) under a normal 32-hex
        key, of an account not held yet, whose version packs. Stops at the first that is not; returns its
        index (len(records): all taken), for `apply_record`. One call per run of a fetched batch."""
        if self._topic_last[0] != topic:
            return start
        index = self._topic_last[1]
        accounts, resets, invalid = self._accounts, self._resets, self._invalid_latest
        i, end = start, len(records)
        while i < end:
            key, value, timestamp_ms, partition, offset = records[i]
            if not value or not key or len(key) != 32 or key.translate(None, _HEX_DIGITS):
                break
            kb = int(key, 16)  # exact: 32 lower-case hex digits, nothing else (checked above)
            if kb in accounts:
                break
            account = key.decode("ascii")
            packed = packed_record(value, account, timestamp_ms, index, partition, offset)
            if packed is None:
                break
            accounts[kb] = packed
            if not packed[HEAD_BYTES - 1] & 0x3F:  # `compact.packed_resets`, inlined (once per record)
                resets.append(kb)
            if invalid:
                invalid.pop(account, None)
            i += 1
        if i > start:
            self.versions += i - start
            self.applied += i - start
            self.last_downgrade = None
        return i

    def bind_topic(self, topic: str | None) -> None:
        """Records of this topic may take `apply_canonical_run` (the topic's index in packed versions)."""
        if topic not in self._topics:
            self._topics.append(topic)
        index = self._topics.index(topic)
        if index < MAX_TOPICS:
            self._topic_last = (topic, index)

    def apply_record(
        self,
        key: bytes | None,
        value: bytes | None,
        timestamp_ms: int,
        topic: str | None = None,
        partition: int | None = None,
        offset: int | None = None,
    ) -> InvalidSettings | None:
        """Apply one settings-topic record; a rejected record leaves the account as it was.

        Whether each account's latest record (by reading order) was rejected is remembered: see
        `invalid_latest`. `last_downgrade` says which identity types this record made unrestricted.
        """
        self.last_downgrade = None
        problem = self._apply_record(key, value, timestamp_ms, topic, partition, offset)
        account = key_account(key)
        if account is not None:
            if problem is None:
                self._invalid_latest.pop(account, None)
            else:
                self._invalid_latest[account] = RejectedRecord(
                    account, problem.reason, problem.detail, topic, partition, offset, timestamp_ms
                )
        return problem

    def _apply_record(
        self,
        key: bytes | None,
        value: bytes | None,
        timestamp_ms: int,
        topic: str | None,
        partition: int | None,
        offset: int | None,
    ) -> InvalidSettings | None:
        if not key:
            self.rejected += 1
            return InvalidSettings("missing_key", "record has no key; the key must be the account id")
        try:
            key_text = key.decode("utf-8")
        except UnicodeDecodeError:
            self.rejected += 1
            return InvalidSettings("missing_key", "record key is not UTF-8")
        key_problem = account_problem(key_text)
        if key_problem is not None:
            self.rejected += 1
            return InvalidSettings("missing_key", f"record key is not an account id: {key_problem}")
        account = normalize_account(key_text)
        if value is None:
            if timestamp_ms > MAX_TIME_MS:
                self.rejected += 1
                return _late_timestamp(timestamp_ms)
            self.apply_tombstone(account, timestamp_ms, topic, partition, offset)
            return None
        fast = fast_settings(value, account)
        if fast is not None:
            return self._apply_fast(account, fast[0], fast[1], timestamp_ms, topic, partition, offset)
        try:
            doc = parse_settings(value)
        except InvalidSettings as exc:
            self.rejected += 1
            return exc
        if doc.account_id != account:
            self.rejected += 1
            return InvalidSettings("key_mismatch", f"account_id {doc.account_id!r} differs from the record key")
        if doc.updated_at is not None:
            effective = to_millis(doc.updated_at)
        elif timestamp_ms > MAX_TIME_MS:
            self.rejected += 1
            return _late_timestamp(timestamp_ms)
        else:
            effective = timestamp_ms
        self.apply_document(doc, effective, topic, partition, offset)
        return None

    def _apply_fast(
        self, account: str, updated_ms: int | None, types: FastTypes, timestamp_ms: int, topic: str | None,
        partition: int | None, offset: int | None,
    ) -> InvalidSettings | None:
        """A record `settings_fast` read: the same checks and effect as `apply_document` of its model."""
        if updated_ms is None:
            if timestamp_ms > MAX_TIME_MS:
                self.rejected += 1
                return _late_timestamp(timestamp_ms)
            updated_ms = timestamp_ms
        self.put(account, SettingsVersion(updated_ms, fast_rules(types), topic, partition, offset))
        self.applied += 1
        return None

    def apply_document(
        self,
        doc: SettingsDocument,
        effective_ms: int,
        topic: str | None = None,
        partition: int | None = None,
        offset: int | None = None,
    ) -> None:
        extra = doc.external_account_identity_interaction.identity_types.model_extra
        if extra:
            self.unknown_identity_types += len(extra)
        self.put(doc.account_id, SettingsVersion(effective_ms, rules_of(doc), topic, partition, offset))
        self.applied += 1

    def apply_tombstone(
        self,
        account_id: str,
        effective_ms: int,
        topic: str | None = None,
        partition: int | None = None,
        offset: int | None = None,
    ) -> None:
        """A tombstone (null record value): the account reverts to defaults from `effective_ms`.

        The only way to reset an account (SPEC §3); `account_id` is normalised here.
        """
        self.put(normalize_account(account_id), SettingsVersion(effective_ms, DEFAULT_RULES, topic, partition, offset))
        self.applied += 1

    # -- reading -------------------------------------------------------------------------------

    def invalid_latest(self) -> list[RejectedRecord]:
        """Accounts whose latest settings record was rejected, by account id (for `settings list
        --invalid`). `has_valid_version` False: nothing valid is held for the account, e.g. after
        compaction removed the valid version the rejected record failed to replace."""
        out = []
        for account in sorted(self._invalid_latest):
            r = self._invalid_latest[account]
            r.has_valid_version = account_key(account) in self._accounts
            out.append(r)
        return out

    def has_invalid_latest(self, account_id: str) -> bool:
        """Whether this account's latest record was rejected (one of `invalid_latest`)."""
        return account_id in self._invalid_latest

    def invalid_latest_count(self) -> int:
        """How many accounts have a rejected latest record (gauge)."""
        return len(self._invalid_latest)

    def without_valid_version_count(self) -> int:
        """How many of those have no valid version held at all (gauge)."""
        accounts = self._accounts
        return sum(1 for a in list(self._invalid_latest) if account_key(a) not in accounts)

    def lookup(self, account_id: str, t_ms: int) -> tuple[SettingsVersion | None, bool]:
        """The version in force at t and whether it is exact (False: t precedes every kept version)."""
        key = account_key(account_id)  # the hot path's one table lookup per cross-account attempt
        current = self._accounts.get(key)
        if current is None:
            return None, True
        if current.__class__ is bytes:
            version = self._unpacked.get(key) or self._version(key, current)
            return version, version.effective_ms <= t_ms
        if not isinstance(current, list):
            return current, current.effective_ms <= t_ms  # type: ignore[union-attr,return-value]
        i = bisect_right(current, t_ms, key=_effective)
        if i == 0:
            return current[0], False
        return current[i - 1], True

    def latest(self, account_id: str) -> SettingsVersion | None:
        key = account_key(account_id)
        current = self._accounts.get(key)
        if isinstance(current, list):
            return current[-1]
        return None if current is None else self._version(key, current)

    def accounts(self) -> Iterator[str]:
        return (key_text(k) for k in self._accounts)

    def __len__(self) -> int:
        return len(self._accounts)

    # -- time ----------------------------------------------------------------------------------

    def observe(self, partition: Hashable, event_ms: int) -> None:
        """An attempt with this event time was read from `partition` (any hashable key, e.g. a
        (topic, partition) pair). Per attempt is fine for few partitions; the stream loop should use
        `observe_batch`."""
        current = self._partition_ms.get(partition)
        if current is None or event_ms > current:
            self._partition_ms[partition] = event_ms
            if self._assigned is None or partition in self._assigned:
                self._moved()

    def observe_batch(self, newest_ms: Mapping[Hashable, int]) -> None:
        """`observe` for one batch: partition -> newest event time in the batch (one max per partition)."""
        times = self._partition_ms
        moved = False
        for partition, event_ms in newest_ms.items():
            current = times.get(partition)
            if current is None or event_ms > current:
                times[partition] = event_ms
                moved = True
        if moved:
            self._moved()

    def assign(self, partitions: Iterable[Hashable]) -> None:
        """This instance now holds these partitions (a rebalance): pruning waits for each of them to
        be observed. Stream time never moves back, so versions pruned before stay pruned."""
        if self._assigned is None:
            self._assigned = set()
        self._assigned.update(partitions)

    def release(self, partitions: Iterable[Hashable]) -> None:
        """These partitions were revoked or lost: they no longer hold pruning back."""
        for partition in partitions:
            self._partition_ms.pop(partition, None)
            if self._assigned is not None:
                self._assigned.discard(partition)
        self._moved()

    def advance(self, event_ms: int) -> None:
        """`observe` on one implicit partition (simulate's single attempts file; `assess`). Ignored for
        pruning once `assign` was called, unless that partition (None) is assigned."""
        if event_ms > self._advance_ms:
            self._advance_ms = event_ms
            self.observe(None, event_ms)

    def _moved(self) -> None:
        """Recompute stream time (min over the partitions that count) and prune now and then."""
        times = self._partition_ms
        keys = self._assigned if self._assigned is not None else times.keys()
        if not keys:
            return
        low = min(times.get(k, BEGINNING_OF_TIME) for k in keys)
        if low > self.stream_time_ms:
            self.stream_time_ms = low
            if low - self._last_prune_ms >= self._prune_every_ms:
                self.prune()

    def prune(self) -> int:
        """Drop versions superseded before the retention watermark; the latest always stays."""
        self._last_prune_ms = self.stream_time_ms
        watermark = self.stream_time_ms - self.retention_ms
        dropped = 0
        for account in list(self._multi):
            versions = self._accounts[account]
            assert isinstance(versions, list)
            # versions[i] is dead when versions[i+1] took effect at or before the watermark.
            keep_from = bisect_right(versions, watermark, key=_effective) - 1
            if keep_from > 0:
                del versions[:keep_from]
                dropped += keep_from
            if len(versions) == 1:
                self._store(account, versions[0])
                self._multi.discard(account)
        self._resets, forgotten = prune_resets(self._accounts, self._resets, watermark, self._unpacked)
        dropped += forgotten
        self.versions -= dropped
        self._prune_rejected(watermark)
        return dropped

    def reset_accounts(self) -> set[str]:
        """The accounts whose latest version is a reset (what pruning may forget), checked now."""
        accounts = self._accounts
        return {key_text(k) for k in self._resets if k in accounts and is_reset(accounts[k])}

    def _prune_rejected(self, watermark: int) -> None:
        """A rejected latest record of an account without any valid version, older than retention, is
        forgotten like a reset: the account decides as if unconfigured either way, and rejected records
        with ever new keys must not hold memory forever. One with a valid version stays (the alert)."""
        accounts = self._accounts
        stale = [a for a, r in self._invalid_latest.items()
                 if r.timestamp_ms <= watermark and account_key(a) not in accounts]
        for account in stale:
            del self._invalid_latest[account]


def _late_timestamp(timestamp_ms: int) -> InvalidSettings:
    """The record timestamp would be the effective time, and no reader could decode it (year 10000+)."""
    return InvalidSettings("invalid_value", f"record timestamp {timestamp_ms} is after year 9999 (set updated_at)")


def _effective(v: SettingsVersion) -> int:
    return v.effective_ms
