"""The settings table's snapshot: bytes that give back a `SettingsHistory` exactly as a bootstrap built it.

A restarted instance loads it and reads only the settings topic's tail (fast restarts, as Kafka
Streams restores local state). It is a cache, never the source of truth: it names what it is a copy
of (topic, topic id, cluster id, the next offset of every partition) and carries a format version and
a CRC-32, and `check` / `Reader` say why one must not be used; the caller then reads the topic.

Only a table no attempt has touched is saved (`encode` refuses another): pruning by stream time drops
versions a cold bootstrap would hold, so a pruned table would not decide like a cold start.

Layout: MAGIC, format (4 bytes), header length (4), header (JSON: origin, counts, the Python that wrote
it: marshal data is tied to it), frames of 4-byte length + `marshal` data (the packed accounts in
chunks, then the rest), and a trailer: length of everything before it (8), its CRC-32 (4), END.
The fields are read and written one by one; `SAVED`, `DERIVED` and `NOT_SAVED` name each field of the
history, and tests/test_snapshot.py fails on a field that none names.
"""

from __future__ import annotations

import json
import marshal
import struct
import sys
import zlib
from bisect import bisect_left
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass
from itertools import compress, repeat
from operator import and_, is_not, itemgetter, not_
from typing import Any

from processor.core.compact import HEAD_BYTES
from processor.core.errors import AccessEvalError
from processor.core.resets import is_reset
from processor.core.rules import PackedIds
from processor.core.settings import (
    BEGINNING_OF_TIME,
    RejectedRecord,
    Rule,
    Rules,
    SettingsHistory,
    SettingsVersion,
    SmallSet,
)

FORMAT = 1
MAGIC = b"ACCESS-EVAL SETTINGS SNAPSHOT\n"
END = b"\nEND\n"
#: marshal's format may change between Python versions: a snapshot is read by the version that wrote it.
PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}/{marshal.version}"
#: marshal format 2: without the back-references of 3+, which cost a hash-table entry per object shared
#: with the table (every one) when written and a list entry when read.
MARSHAL = 2
#: Accounts per frame: bounds the memory an encode or a load holds besides the table (~5 MB).
CHUNK = 65_536
_U32 = struct.Struct("<I")
_HEAD = struct.Struct("<II")
_TRAILER = struct.Struct("<QI")

#: The history's fields a snapshot holds.
SAVED = ("_accounts", "_topics", "_resets", "_invalid_latest", "versions", "applied", "rejected",
         "unknown_identity_types")
#: Rebuilt from what is saved: the accounts holding several versions.
DERIVED = ("_multi",)
#: Configuration, caches, and what only attempts move (`encode` requires them untouched).
NOT_SAVED = ("retention_ms", "_prune_every_ms", "_unpacked", "_topic_last", "stream_time_ms",
             "_last_prune_ms", "_partition_ms", "_assigned", "_advance_ms", "last_downgrade")


class Unusable(AccessEvalError):
    """This snapshot must not be used; the message says why, in one line."""


@dataclass(frozen=True)
class Origin:
    """What a snapshot is a copy of: the settings topic up to `offsets` (partition -> next offset)."""

    topic: str
    cluster_id: str | None
    topic_id: str | None
    offsets: dict[int, int]


@dataclass
class Body:
    """A snapshot's content, checked (CRC) and decoded, not yet in a history."""

    accounts: dict[int | str, Any]
    others: list[tuple[int | str, Any]]
    topics: list[str | None]
    resets: list[int | str]
    invalid: list[tuple[Any, ...]]
    counters: tuple[int, int, int, int]


def untouched(history: SettingsHistory) -> bool:
    """No attempt moved its stream time, so nothing was pruned: it holds what its records built."""
    return (history.stream_time_ms == BEGINNING_OF_TIME and history._last_prune_ms == BEGINNING_OF_TIME
            and not history._partition_ms)


def encode(history: SettingsHistory, origin: Origin) -> Iterator[bytes]:
    """The snapshot, piece by piece (write them in order). Reads the history while iterating: nothing may
    change it meanwhile. ValueError for a history attempts have touched (see the module's docstring)."""
    if not untouched(history):
        raise ValueError("only a table no attempt has touched is saved (pruning makes it differ from a bootstrap)")
    accounts = history._accounts
    header = json.dumps({"topic": origin.topic, "cluster_id": origin.cluster_id, "topic_id": origin.topic_id,
                         "offsets": {str(p): o for p, o in sorted(origin.offsets.items())},
                         "python": PYTHON, "accounts": len(accounts), "versions": history.versions}).encode()
    out = _Summed()
    yield out.add(MAGIC + _HEAD.pack(FORMAT, len(header)) + header)
    keys, values = list(accounts), list(accounts.values())
    # Which accounts hold plain objects (few), found at C speed: a loop in Python costs ~1 µs per account.
    odd = list(compress(range(len(keys)), map(is_not, map(type, values), repeat(bytes))))
    others = [(keys[i], _held(values[i])) for i in odd]  # type: ignore[arg-type]  # not bytes, by `odd`
    for i in range(0, len(keys), CHUNK):
        chunk = dict(zip(keys[i : i + CHUNK], values[i : i + CHUNK], strict=True))
        for j in odd[bisect_left(odd, i) : bisect_left(odd, i + CHUNK)]:
            del chunk[keys[j]]
        yield out.add(_frame(marshal.dumps(chunk, MARSHAL)))
    invalid = [(a, r.reason, r.detail, r.topic, r.partition, r.offset, r.timestamp_ms)
               for a, r in history._invalid_latest.items()]
    counters = (history.versions, history.applied, history.rejected, history.unknown_identity_types)
    # The resets as a list: marshal sorts a set's members by their encoding (deterministic output), 4 µs each.
    yield out.add(_frame(marshal.dumps((list(history._topics), others, list(history._resets), invalid, counters),
                                      MARSHAL)))
    yield _TRAILER.pack(out.size, out.crc) + END


class Reader:
    """Reads a snapshot through `read(n)` (a file's read): the header at once, the rest on `load()`, so a
    snapshot of something else is refused before its body is read."""

    def __init__(self, read: Callable[[int], bytes]) -> None:
        self._read = read
        self._sum = _Summed()
        if self._sum.add(read(len(MAGIC))) != MAGIC:
            raise Unusable("corrupt: not a settings snapshot (bad magic)")
        fmt, size = _HEAD.unpack(self._take(_HEAD.size))
        if fmt != FORMAT:
            raise Unusable(f"format {fmt}, this version reads format {FORMAT}")
        try:
            head = json.loads(self._take(size))
            self.origin = Origin(head["topic"], head["cluster_id"], head["topic_id"],
                                 {int(p): int(o) for p, o in head["offsets"].items()})
            self.accounts = int(head["accounts"])
            python = head["python"]
        except (ValueError, KeyError, TypeError, AttributeError):
            raise Unusable("corrupt: unreadable header") from None
        if python != PYTHON:
            raise Unusable(f"format: written by Python/marshal {python}, this is {PYTHON}")

    def load(self) -> Body:
        """The body, CRC checked; Unusable when anything does not add up."""
        accounts: dict[int | str, Any] = {}
        try:
            for _ in range(-(-self.accounts // CHUNK)):
                accounts.update(marshal.loads(self._frame()))
            topics, others, resets, invalid, counters = marshal.loads(self._frame())
        except (ValueError, EOFError, TypeError):
            raise Unusable("corrupt: undecodable frame") from None
        size, crc = self._sum.size, self._sum.crc
        trailer = self._read(_TRAILER.size + len(END) + 1)
        if len(trailer) != _TRAILER.size + len(END) or trailer[_TRAILER.size :] != END:
            raise Unusable("corrupt: truncated or trailing bytes")
        if _TRAILER.unpack(trailer[: _TRAILER.size]) != (size, crc):
            raise Unusable("corrupt: checksum mismatch")
        if len(accounts) + len(others) != self.accounts:
            raise Unusable("corrupt: account count differs from the header")
        return Body(accounts, others, topics, resets, invalid, counters)

    def _take(self, n: int) -> bytes:
        data = self._read(n)
        if len(data) != n:
            raise Unusable("corrupt: truncated")
        return self._sum.add(data)

    def _frame(self) -> bytes:
        (n,) = _U32.unpack(self._take(4))
        return self._take(n)


def check(saved: Origin, topic: str, cluster_id: str | None, topic_id: str | None,
          ends: Mapping[int, int]) -> str | None:
    """Why a snapshot of `saved` does not fit the settings topic as it is now (None: it fits). A partition
    the snapshot does not know (added since) is read from the beginning, so it is no reason."""
    if saved.topic != topic:
        return f"snapshot of another topic ({saved.topic!r}; reading {topic!r})"
    if saved.cluster_id != cluster_id:
        return f"snapshot of another cluster (id {saved.cluster_id!r}; connected to {cluster_id!r})"
    if saved.topic_id != topic_id:
        return f"snapshot of an earlier topic of that name (topic id {saved.topic_id}; now {topic_id}): recreated"
    for p, offset in sorted(saved.offsets.items()):
        end = ends.get(p)
        if end is None:
            return f"snapshot ahead of the topic: partition {p} no longer exists (the topic was recreated)"
        if offset > end:
            return (f"snapshot ahead of the topic: partition {p} offset {offset} is beyond its end {end} "
                    "(the topic was recreated or truncated)")
    return None


def restore(history: SettingsHistory, origin: Origin, body: Body) -> None:
    """Make an empty history hold what the snapshot holds (what its bootstrap had built)."""
    if len(history) or history.applied or history.rejected or not untouched(history):
        raise ValueError("a snapshot is restored into an empty history only")
    accounts = body.accounts
    # The reset candidates found again in the versions, the packed ones (all `accounts` holds so far) at C
    # speed: they are the table's own key objects then. The saved list's keys are copies (48 B each: 16 MB
    # for a third of 1M accounts), dropped here.
    resets = list(compress(accounts, map(not_, map(and_, map(itemgetter(HEAD_BYTES - 1), accounts.values()),
                                                 repeat(0x3F)))))
    body.resets = []
    multi: set[int | str] = set()
    for key, data in body.others:
        if isinstance(data, list):
            accounts[key] = [_unversion(x) for x in data]
            multi.add(key)
        else:
            accounts[key] = _unversion(data)
        if is_reset(accounts[key]):
            resets.append(key)
    history._accounts = accounts
    history._multi = multi
    history._topics = list(body.topics)
    history._resets = resets
    history._invalid_latest = {r[0]: RejectedRecord(*r) for r in body.invalid}
    history._unpacked.clear()
    history.versions, history.applied, history.rejected, history.unknown_identity_types = body.counters
    history.bind_topic(origin.topic)  # the topic's index in the restored list of topics


class _Summed:
    """Length and CRC-32 of the bytes passed through."""

    def __init__(self) -> None:
        self.size = 0
        self.crc = 0

    def add(self, data: bytes) -> bytes:
        self.size += len(data)
        self.crc = zlib.crc32(data, self.crc)
        return data


def _frame(data: bytes) -> bytes:
    return _U32.pack(len(data)) + data


def _held(held: SettingsVersion | list[SettingsVersion]) -> Any:
    """What an account holds when it is not packed: one version (a tuple) or several (a list)."""
    return [_version(v) for v in held] if isinstance(held, list) else _version(held)


def _version(v: SettingsVersion) -> tuple[Any, ...]:
    """A version as marshal-able data; rules shared between identity types stay shared."""
    distinct: list[Rule] = []
    slots: list[int] = []
    for rule in v.rules:
        if rule is None:
            slots.append(0)
            continue
        for n, seen in enumerate(distinct):
            if seen is rule:
                slots.append(n + 1)
                break
        else:
            distinct.append(rule)
            slots.append(len(distinct))
    return (v.effective_ms, v.topic, v.partition, v.offset, [(r.state, *_ids(r.allowed)) for r in distinct],
            tuple(slots))


def _ids(allowed: Collection[str]) -> tuple[str, Any]:
    """An allowlist as (kind, data), each kind given back as the same type."""
    if isinstance(allowed, PackedIds):
        return "packed", allowed.raw
    if isinstance(allowed, SmallSet):
        return "small", tuple(allowed)
    return "set", sorted(allowed)


def _unversion(data: tuple[Any, ...]) -> SettingsVersion:
    effective_ms, topic, partition, offset, distinct, slots = data
    made = [Rule(state, PackedIds(ids) if kind == "packed" else SmallSet(ids) if kind == "small" else frozenset(ids))
            for state, kind, ids in distinct]
    rules: Rules = tuple(made[s - 1] if s else None for s in slots)  # type: ignore[assignment]
    return SettingsVersion(effective_ms, rules, topic, partition, offset)
