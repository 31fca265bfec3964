"""Compact storage of the settings table: what lets one process hold millions of accounts.

Every instance holds the whole table, so its memory per account bounds the fleet. Account and
allowlist ids are usually 128-bit hex (32 characters): as `str` that is ~81 bytes each, as 16 raw
bytes inside a packed record it is 16. Other ids (the contract allows more forms) keep their exact
text. A single settings version whose restricted types hold a few hex ids is packed into one `bytes`
value (no per-account objects, nothing for the garbage collector); everything else stays a plain
`SettingsVersion`. Reads unpack into the same plain data the decision always saw, so the decision
stays a pure function over plain data.
"""

from __future__ import annotations

from typing import Final

from processor.core.rules import DEFAULT_RULES, PackedIds, Rule, Rules
from processor.core.settings_doc import SMALL_ALLOWLIST

#: A packed version: 13 bytes (effective ms: 48 bits; partition + 1: 10 bits and offset + 1: 38 bits,
#: 0 = none; 2 bits per identity type naming its rule, 0 = enabled; 2 bits of topic index), then per
#: distinct rule one byte (state << 4 | id count) and the ids. 13 bytes make a version with three ids
#: 96 bytes in all, an unrestricted one 48: CPython allocates in steps of 16.
HEAD_BYTES = 13
_STATES = ("", "monitor", "limited")
STATE_CODE = {"monitor": 1, "limited": 2}
#: Topic indexes fit two bits; a version of a fifth distinct topic is simply not packed.
MAX_TOPICS = 4
_OFFSET_MASK: Final = (1 << 38) - 1


def pack_hex_ids(ids: list[str]) -> bytes | None:
    """Unique 32-hex lower-case ids as 16 bytes each (first occurrence order), or None if any id is
    another form. One C call validates them all: n ids of 32 characters decode to 16·n bytes only if every
    character is a hex digit, and `hex()` round-trips only lower-case."""
    if not ids:
        return b""
    if set(map(len, ids)) != {32}:
        return None  # every id its own 32 characters (31 + 33 would also join to 64)
    joined = "".join(ids)
    try:
        raw = bytes.fromhex(joined)
    except ValueError:
        return None
    if len(raw) != 16 * len(ids) or raw.hex() != joined:
        return None
    if len(ids) > 1 and len(set(ids)) != len(ids):
        seen: dict[bytes, None] = {}
        for i in range(0, len(raw), 16):
            seen[raw[i : i + 16]] = None
        raw = b"".join(seen)
    return raw


def _head(effective_ms: int, topic_index: int, partition: int | None, offset: int | None,
          slots: list[int]) -> bytes | None:
    """The 13 bytes every packed version starts with, or None when a field is out of their range."""
    p = 0 if partition is None else partition + 1
    o = 0 if offset is None else offset + 1
    if not (0 <= effective_ms < 2**48 and 0 <= p < 2**10 and 0 <= o < 2**38 and 0 <= topic_index < MAX_TOPICS):
        return None
    flags = slots[0] | slots[1] << 2 | slots[2] << 4 | topic_index << 6
    return (effective_ms | (p << 38 | o) << 48 | flags << 96).to_bytes(HEAD_BYTES, "little")


def pack_version(effective_ms: int, rules: Rules, topic_index: int, partition: int | None,
                 offset: int | None) -> bytes | None:
    """One version as bytes, or None when it does not fit the compact form (large or non-hex
    allowlists, out-of-range numbers): the caller keeps a `SettingsVersion` then."""
    slots = [0, 0, 0]
    body: list[bytes] = []
    distinct: list[Rule] = []
    for t, rule in enumerate(rules):
        if rule is None:
            continue
        for n, seen in enumerate(distinct):
            if seen is rule:
                slots[t] = n + 1
                break
        else:
            ids = rule.allowed
            if rule.state not in STATE_CODE or len(ids) > SMALL_ALLOWLIST:
                return None
            raw = ids.raw if isinstance(ids, PackedIds) else pack_hex_ids(list(ids))
            if raw is None:
                return None
            distinct.append(rule)
            slots[t] = len(distinct)
            body.append(bytes((STATE_CODE[rule.state] << 4 | len(raw) // 16,)) + raw)
    head = _head(effective_ms, topic_index, partition, offset, slots)
    return None if head is None else head + b"".join(body)


def unpack_version(packed: bytes) -> tuple[int, Rules, int, int | None, int | None]:
    """(effective_ms, rules, topic index, partition, offset) of a packed version.

    The hot path's cost of a lookup not cached (`SettingsHistory.lookup`): the head is read byte by
    byte, each part below 2**48, so the compiled module never builds the 104-bit integer of `_head`."""
    b = packed
    effective_ms = b[0] | b[1] << 8 | b[2] << 16 | b[3] << 24 | b[4] << 32 | b[5] << 40
    place = b[6] | b[7] << 8 | b[8] << 16 | b[9] << 24 | b[10] << 32 | b[11] << 40
    flags = b[12]
    s0, s1, s2 = flags & 3, flags >> 2 & 3, flags >> 4 & 3
    if not (s0 or s1 or s2):
        rules = DEFAULT_RULES
    else:
        made: list[Rule] = []
        pos = HEAD_BYTES
        end = len(b)
        while pos < end:
            code = b[pos]
            stop = pos + 1 + 16 * (code & 15)
            made.append(Rule(_STATES[code >> 4], PackedIds(b[pos + 1 : stop])))
            pos = stop
        rules = (made[s0 - 1] if s0 else None, made[s1 - 1] if s1 else None, made[s2 - 1] if s2 else None)
    p, o = place >> 38, place & _OFFSET_MASK
    return effective_ms, rules, flags >> 6, None if p == 0 else p - 1, None if o == 0 else o - 1


def packed_effective(packed: bytes) -> int:
    """The effective time of a packed version, without unpacking its rules (pruning scans many)."""
    return int.from_bytes(packed[:6], "little")


def packed_resets(packed: bytes) -> bool:
    """Whether a packed version has every identity type `enabled` (a reset, see `SettingsHistory.prune`)."""
    return packed[HEAD_BYTES - 1] & 0x3F == 0
