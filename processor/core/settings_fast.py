"""A fast reading of settings records in their canonical form, for bootstrapping large tables.

The pydantic model (`settings_doc.parse_settings`) costs ~15 µs per record, most of a million-account
bootstrap. Nearly every record a producer writes is canonical: normalised 32-hex ids, known identity
types only, `updated_at` as `YYYY-MM-DDTHH:MM:SS[.ffffff]Z`. Those are read here with msgspec (stricter
JSON than pydantic's parser: never accepts what it rejects) and exact checks; anything else, valid or
not, returns None and the model decides and names the problem, as before. So the fast path can only
ever accept what the model accepts, with the same meaning.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime
from typing import TypeVar

import msgspec

from processor.core.compact import HEAD_BYTES, MAX_TOPICS, STATE_CODE, pack_hex_ids
from processor.core.ids import IDENTITY_TYPES
from processor.core.rules import PackedIds, Rule, Rules
from processor.core.settings_doc import (
    MAX_ALLOWLIST_IDS,
    MAX_RECORD_BYTES,
    SMALL_ALLOWLIST,
    CanonicalDoc,
    CanonicalType,
    PlainDoc,
    PlainType,
    allowed_ids,
    decode_canonical,
    decode_plain,
)
from processor.core.times import MAX_TIME_MS, to_millis

_UPDATED_AT = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,6})?Z").fullmatch
_KNOWN = frozenset(IDENTITY_TYPES)
#: Far below any parser's nesting limit: deeper documents are left to the model.
_MAX_BRACKETS = 64
#: `updated_at` text -> milliseconds: producers often stamp many records alike (bounded).
_TIMES: dict[str, int] = {}
_TIMES_MAX = 4096

_Doc = TypeVar("_Doc", PlainDoc, CanonicalDoc)

#: Each identity type's two bits in a packed version's flags (`compact`).
_SHIFTS = tuple((2 * i, name) for i, name in enumerate(IDENTITY_TYPES))
#: (state, packed 16-byte ids) per identity type; None = absent (enabled by default).
FastTypes = tuple[tuple[str, bytes] | None, tuple[str, bytes] | None, tuple[str, bytes] | None]


def fast_settings(raw: bytes, account: str) -> tuple[int | None, FastTypes] | None:
    """(updated_at in ms or None, per-type config) of a canonical record whose `account_id` is exactly
    `account`, or None: not canonical, let the model decide."""
    if b"NaN" in raw or b"Infinity" in raw or raw.count(b"{") + raw.count(b"[") > _MAX_BRACKETS:
        return None
    doc = _read(raw, account, decode_plain)
    if doc is None:
        return None
    types = doc.external_account_identity_interaction.identity_types
    if not _KNOWN.issuperset(types):
        return None  # unknown or near-miss identity type keys: counted or rejected by the model
    configs: list[tuple[str, bytes] | None] = [None, None, None]
    last: PlainType | None = None
    packed: tuple[str, bytes] | None = None
    for i, name in enumerate(IDENTITY_TYPES):
        cfg = types.get(name)
        if cfg is None:
            continue
        if last is None or cfg.state != last.state or cfg.external_allowed_accounts != last.external_allowed_accounts:
            ids = cfg.external_allowed_accounts
            raw_ids = pack_hex_ids(ids) if len(ids) <= MAX_ALLOWLIST_IDS else None
            if raw_ids is None:
                return None
            last, packed = cfg, (cfg.state, raw_ids)
        configs[i] = packed
    updated = doc.updated_at
    if updated is msgspec.UNSET:
        return None, (configs[0], configs[1], configs[2])
    ms = _updated_ms(updated)
    return None if ms is None else (ms, (configs[0], configs[1], configs[2]))


def packed_record(raw: bytes, account: str, timestamp_ms: int, topic_index: int, partition: int,
                  offset: int) -> bytes | None:
    """The packed version (`compact.pack_version`) of a record in the exact canonical form whose
    `account_id` is `account`, in one step: the bootstrap's common case. None for anything else (unknown
    fields, other id forms, more than SMALL_ALLOWLIST ids, a time or place the head cannot hold): the
    caller gives it to `apply_record`, which decides it as before. Fewer objects and calls per record
    than `fast_settings` (bench/README.md, "Fleet scale")."""
    doc = _read(raw, account, decode_canonical)
    if doc is None:
        return None
    updated = doc.updated_at
    effective = timestamp_ms if updated is msgspec.UNSET else _updated_ms(updated)
    if (effective is None or not 0 <= effective <= MAX_TIME_MS or not 0 <= partition < 2**10 - 1
            or not 0 <= offset < 2**38 - 1 or not 0 <= topic_index < MAX_TOPICS):
        return None
    types = doc.external_account_identity_interaction.identity_types
    first = types.get("user")
    if len(types) == 3 and first is not None and first == types.get("service_id") == types.get("service"):
        # The usual record, inline (bench/README.md, series Q): three alike types (a struct compares in
        # C), one rule; three known keys, so no unknown or near-miss type is present.
        ids = first.external_allowed_accounts
        got = _hex_ids(ids)
        if got is None:
            return None
        if first.state == "enabled":
            flags, body = 0, b""
        elif len(ids) > SMALL_ALLOWLIST:
            return None
        else:
            flags, body = 0b010101, bytes((STATE_CODE[first.state] << 4 | len(ids),)) + got
    elif _KNOWN.issuperset(types):
        rules = _packed_rules(types)
        if rules is None:
            return None
        flags, body = rules
    else:
        return None
    place = (partition + 1) << 38 | (offset + 1)
    return (effective | place << 48 | (flags | topic_index << 6) << 96).to_bytes(HEAD_BYTES, "little") + body


def _read(raw: bytes, account: str, decode: Callable[[bytes], _Doc]) -> _Doc | None:
    """The prologue both readings share: `decode(raw)` of a record within the size cap that decodes and
    whose `account_id` is exactly `account`, else None (the model decides)."""
    if len(raw) > MAX_RECORD_BYTES:
        return None
    try:
        doc = decode(raw)
    except msgspec.DecodeError:
        return None
    return doc if doc.account_id == account else None


def _packed_rules(types: dict[str, CanonicalType]) -> tuple[int, bytes] | None:
    """(flag bits, body) of a packed version's rules (`compact.pack_version`), or None: does not pack.
    Three alike types are `packed_record`'s, before this."""
    flags = 0
    body = b""
    seen: list[tuple[str, bytes]] = []
    last: list[str] | None = None
    raw_ids = b""
    for shift, name in _SHIFTS:
        cfg = types.get(name)
        if cfg is None:
            continue
        ids = cfg.external_allowed_accounts
        if ids != last:  # every present type's ids are checked, `enabled` ones too (the model checks them)
            got = _hex_ids(ids)
            if got is None:
                return None  # another id form, or a repeated id: `apply_record`
            last, raw_ids = ids, got
        if cfg.state == "enabled":
            continue
        key = (cfg.state, raw_ids)
        if key in seen:
            flags |= (seen.index(key) + 1) << shift
            continue
        if len(ids) > SMALL_ALLOWLIST:
            return None
        seen.append(key)
        flags |= len(seen) << shift
        body += bytes((STATE_CODE[cfg.state] << 4 | len(ids),)) + raw_ids
    return flags, body


def _hex_ids(ids: list[str]) -> bytes | None:
    """16 bytes per id of ids 32 characters each (the decoder checked that): None unless every one is
    lower-case hex (`fromhex` skips whitespace and takes upper case: the length and `hex()` tell) and
    none is repeated."""
    if not ids:
        return b""
    joined = "".join(ids)
    try:
        raw = bytes.fromhex(joined)
    except ValueError:
        return None
    if len(raw) != 16 * len(ids) or raw.hex() != joined or (len(ids) > 1 and len(set(ids)) != len(ids)):
        return None
    return raw


def _updated_ms(value: str) -> int | None:
    ms = _TIMES.get(value)
    if ms is not None:
        return ms
    if not _UPDATED_AT(value):
        return None
    try:
        ms = to_millis(datetime.fromisoformat(value))
    except ValueError:
        return None
    if not 0 <= ms <= MAX_TIME_MS:
        return None
    if len(_TIMES) >= _TIMES_MAX:
        _TIMES.clear()
    _TIMES[value] = ms
    return ms


def fast_rules(types: FastTypes) -> Rules:
    """`rules_of` for a record read by `settings_fast`: identical configs share one Rule; a few ids stay
    packed (`PackedIds`), a larger allowlist is a frozenset of their text as before."""
    made: dict[tuple[str, bytes], Rule] = {}
    out: list[Rule | None] = []
    for cfg in types:
        if cfg is None or cfg[0] == "enabled":
            out.append(None)
            continue
        rule = made.get(cfg)
        if rule is None:
            state, raw = cfg
            if len(raw) <= 16 * SMALL_ALLOWLIST:
                rule = Rule(state, PackedIds(raw))
            else:
                rule = Rule(state, allowed_ids([raw[i : i + 16].hex() for i in range(0, len(raw), 16)]))
            made[cfg] = rule
        out.append(rule)
    return (out[0], out[1], out[2])
