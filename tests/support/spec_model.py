"""The expected output of the end-to-end and fault tests, from the contract instead of from `simulate`.

`simulate` and `run` share the evaluation core (attempt parsing, `evaluate`, `SettingsHistory`, the
event layout), so an expectation computed by `simulate` repeats any bug of that core and the tests
comparing against it prove delivery, not decisions. This module derives the expectation from
docs/contract.md alone, with the SPEC model of tests/support/spec_rules.py (`spec_decide`,
`spec_version_index`); it imports nothing from `processor`.

Input: the settings records as they were published (key, value, Kafka timestamp; in publication
order) and the attempt values. Output (`expect`): which attempts are invalid (dead letters), each
attempt's outcome, and for every attempt that gets an eval event the event's expected projection
(`FIELDS`): echo fields taken straight from the attempt, the decision fields, the settings
version's effective time and `exact`, and the record key. `project` cuts the same projection out of
a decoded event, so the two compare with `==`.

What is modelled (contract section in brackets):

- settings records [§3]: acceptance and rejection (missing/undecodable key, strict JSON, the
  document's required fields and their types, states, allowlists, `updated_at` with an offset in
  1970..9999, key/`account_id` mismatch, near misses of an identity type, the caps of 8 MiB per
  value and 50,000 ids per allowlist); a rejected record changes nothing; effective time =
  `updated_at`, else the record's timestamp; a tombstone (null value) is a reset version from its
  timestamp; an accepted record supersedes every version of its account whose effective time is at
  or after its own (equal times: the record read later wins);
- account ids [§3.2]: after trimming White_Space, 1-256 of `A-Z a-z 0-9 . _ : @ / -`, the first
  a letter or digit; anything else invalidates the record key, the document, the allowlist or the
  attempt that holds it;
- the event-time lookup [§6.2]: the newest version at or before `event_time`; older than every
  version: the oldest one, `exact = false`; no version: `enabled`;
- attempt validation [§4.2, §4.4]: size, strict UTF-8 JSON (no NaN/Infinity, nesting <= 200,
  last duplicate key wins), required fields, types, lengths, identity types, `event_time` with an
  offset, not before 2000 and not more than 1 h ahead of `now_ms`;
- optional display fields [§4.3]: copied, truncated to their maxima or dropped when of the wrong
  type (then `truncated` is true);
- the decision table and the event fields [§5.1, §7.1].

Not modelled: stream-time retention and pruning [§6.3] (the tests' streams span minutes, the window
is 24 h) and forgetting old resets; what compaction removes (a test passes the log it read back);
the settings version's topic/partition/offset; `observer.version`, `observer.evaluatedAt` and the
`reason.reasonType` text.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from tests.support.spec_rules import IDENTITY_TYPES, STATES, SpecDecision, norm, spec_decide, spec_version_index

#: (key, value, Kafka timestamp in epoch ms or None when unknown) of one settings record.
SettingsRecord = tuple[bytes | None, bytes | None, int | None]

EVAL_ACTION = "iam-access-management.account-settings.eval"  # §7.1 `action`
PRODUCT = "access-eval"  # §7.1 `observer.name`
#: §7.1: UUIDv5(NAMESPACE_URL, "urn:access-eval:eval-event").
EVENT_ID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:access-eval:eval-event")
MAX_ATTEMPT_BYTES = 262_144  # §4.2 default --max-attempt-bytes
MAX_FUTURE_MS = 3_600_000  # §4.2 default --max-future-ms
MIN_EVENT_MS = 946_684_800_000  # 2000-01-01T00:00:00Z
MAX_DEPTH = 200  # §4.4
MAX_EFFECTIVE_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z (§3.3)
#: §4.3: optional display fields and their maxima (characters).
OPTIONAL_MAX = {("identity", "name"): 1024, ("resource", "crn"): 4096, ("resource", "service_name"): 1024,
                ("source_ip",): 256, ("user_agent",): 4096}

#: The projection of an eval event that `expect` predicts and `project` reads back.
FIELDS = (
    "key", "id", "action", "eventTime", "attemptId",
    "initiator.id", "initiator.typeURI", "initiator.name", "initiator.authnAccountId",
    "initiator.host.address", "initiator.host.agent",
    "target.accountId", "target.id", "target.serviceName", "target.action",
    "responseData.decision", "responseData.isEnforced", "responseData.state", "responseData.allowlisted",
    "responseData.settingsVersion.effectiveTime", "responseData.settingsVersion.exact",
    "outcome", "severity", "reason.reasonCode", "observer.name", "truncated",
)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_RFC3339 = re.compile(r"(\d{4})-(\d\d)-(\d\d)[Tt](\d\d):(\d\d):(\d\d)(\.\d+)?([Zz]|[+-]\d\d:\d\d)")


class Invalid(Exception):
    """An input the contract rejects; `reason` is the contract's name for why."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


def parse_rfc3339(text: Any) -> int:
    """Epoch ms (floor) of an RFC 3339 date-time with an offset; anything else is Invalid."""
    if not isinstance(text, str):
        raise Invalid("bad_timestamp", f"not a string: {text!r}")
    m = _RFC3339.fullmatch(text)
    if m is None:
        raise Invalid("bad_timestamp", f"not RFC 3339 with an offset: {text!r}")
    y, mo, d, h, mi, s = (int(g) for g in m.groups()[:6])
    frac, offset = m.group(7), m.group(8)
    try:
        local = datetime(y, mo, d, h, mi, s, tzinfo=UTC)
    except ValueError as exc:
        raise Invalid("bad_timestamp", str(exc)) from None
    ms = (local - _EPOCH) // timedelta(milliseconds=1) + (int((frac[1:] + "00")[:3]) if frac else 0)
    if offset not in ("Z", "z"):
        sign = 1 if offset[0] == "+" else -1
        ms -= sign * (int(offset[1:3]) * 60 + int(offset[4:6])) * 60_000
    return ms


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


_DECODER = json.JSONDecoder(parse_constant=_no_constant)  # json.loads keeps the last duplicate key too


def strict_json(raw: bytes | None) -> Any:
    """RFC 8259 JSON from UTF-8 bytes (no NaN/Infinity, nesting <= 200, last duplicate key wins)."""
    if not raw:
        raise Invalid("bad_json", "empty or null value")
    try:
        value = _DECODER.decode(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise Invalid("bad_json", type(exc).__name__) from None
    if raw.count(b"[") + raw.count(b"{") <= MAX_DEPTH:
        return value  # cannot nest deeper
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict | list):
            if depth > MAX_DEPTH:
                raise Invalid("bad_json", "nesting too deep")
            stack += [(child, depth + 1) for child in (node.values() if isinstance(node, dict) else node)]
    return value


#: §3.2: Unicode's White_Space (PropList.txt) is trimmed; what remains must match this.
_WHITE_SPACE = (
    "\t\n\x0b\x0c\r \x85\xa0\u1680" + "".join(map(chr, range(0x2000, 0x200B))) + "\u2028\u2029\u202f\u205f\u3000"
)
_ID_SYNTAX = re.compile(r"[A-Za-z0-9][-A-Za-z0-9._:@/]{0,255}")


def valid_account(raw: str) -> bool:
    return _ID_SYNTAX.fullmatch(raw.strip(_WHITE_SPACE)) is not None


def _account(value: Any, what: str, reason: str) -> str:
    if not isinstance(value, str):
        raise Invalid("wrong_type" if reason == "invalid_field" else reason, f"{what} is not a string")
    if not valid_account(value):
        raise Invalid(reason, f"{what} is not 1-256 of A-Z a-z 0-9 . _ : @ / - after trimming")
    return norm(value)


# --------------------------------------------------------------------------------------------------
# Settings (§3)


MAX_SETTINGS_BYTES = 8 * 1_048_576  # §3 cap on a settings record's value
MAX_ALLOWLIST = 50_000  # §3 cap on the ids of one identity type


def _edit_distance(a: str, b: str) -> int:
    """Levenshtein distance, the textbook table."""
    table = [[i + j if i * j == 0 else 0 for j in range(len(b) + 1)] for i in range(len(a) + 1)]
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            table[i][j] = min(table[i - 1][j] + 1, table[i][j - 1] + 1, table[i - 1][j - 1] + (a[i - 1] != b[j - 1]))
    return table[-1][-1]


def _resembles_a_known_type(key: str) -> bool:
    """§3 near miss: ignoring case, separators, whitespace and invisible characters (only letters and
    digits count), within two edits of a known identity type."""
    letters = "".join(ch for ch in key.casefold() if ch.isalnum())
    return any(_edit_distance(letters, t.replace("_", "")) <= 2 for t in IDENTITY_TYPES)


@dataclass(frozen=True)
class Version:
    """One accepted settings record: its account, effective time and document (None: a reset)."""

    account: str
    effective_ms: int
    doc: dict[str, Any] | None
    index: int  # position in the published records


def settings_version(index: int, key: bytes | None, value: bytes | None, timestamp_ms: int | None) -> Version:
    """The version a settings record stands for, or Invalid (§3.3-§3.5)."""
    if key is None:
        raise Invalid("missing_key", "no key")
    try:
        key_account = norm(key.decode("utf-8"))
    except UnicodeDecodeError:
        raise Invalid("missing_key", "key is not UTF-8") from None
    if not valid_account(key.decode("utf-8")):
        raise Invalid("missing_key", "key is not an account id (§3.2)")
    if value is None:  # a tombstone: a reset from its timestamp
        if timestamp_ms is None:
            raise ValueError(f"settings record {index}: a tombstone needs its record timestamp")
        if timestamp_ms > MAX_EFFECTIVE_MS:
            raise Invalid("invalid_value", "timestamp after 9999")
        return Version(key_account, timestamp_ms, None, index)
    if len(value) > MAX_SETTINGS_BYTES:
        raise Invalid("record_too_large", f"{len(value)} bytes")
    doc = strict_json(value)
    if not isinstance(doc, dict):
        raise Invalid("invalid_value", "not an object")
    account = _account(doc.get("account_id"), "account_id", "invalid_value")
    updated_at = doc.get("updated_at")
    if updated_at is None:
        if timestamp_ms is None:
            raise ValueError(f"settings record {index}: no updated_at and no record timestamp given")
        effective = timestamp_ms
    else:
        try:
            effective = parse_rfc3339(updated_at)
        except Invalid as exc:
            raise Invalid("invalid_value", str(exc)) from None
    if not 0 <= effective <= MAX_EFFECTIVE_MS:
        raise Invalid("invalid_value", "effective time outside 1970..9999")
    interaction = doc.get("external_account_identity_interaction")
    if not isinstance(interaction, dict) or not isinstance(interaction.get("identity_types"), dict):
        raise Invalid("invalid_value", "external_account_identity_interaction.identity_types is not an object")
    for itype, cfg in interaction["identity_types"].items():
        if itype not in IDENTITY_TYPES:
            if _resembles_a_known_type(itype):
                raise Invalid("near_miss_identity_type", repr(itype))
            continue  # unknown identity types are ignored
        if not isinstance(cfg, dict) or cfg.get("state") not in STATES:
            raise Invalid("invalid_value", f"{itype}: no valid state")
        allowed = cfg.get("external_allowed_accounts", [])
        if not isinstance(allowed, list):
            raise Invalid("invalid_value", f"{itype}: external_allowed_accounts is not a list")
        if len(allowed) > MAX_ALLOWLIST:
            raise Invalid("allowlist_too_large", f"{itype}: {len(allowed)} ids")
        for a in allowed:
            _account(a, f"{itype} allowlist entry", "invalid_value")
    if account != key_account:
        raise Invalid("key_mismatch", f"account_id {account!r} is not the key {key_account!r}")
    return Version(account, effective, doc, index)


@dataclass
class SettingsLog:
    """The versions per account after reading the records in order (rejected ones change nothing)."""

    versions: dict[str, list[Version]] = field(default_factory=dict)  # ascending effective time
    rejected: list[tuple[int, str]] = field(default_factory=list)  # (record index, reason)

    @classmethod
    def read(cls, records: Iterable[SettingsRecord]) -> SettingsLog:
        log = cls()
        for i, (key, value, ts) in enumerate(records):
            try:
                v = settings_version(i, key, value, ts)
            except Invalid as exc:
                log.rejected.append((i, exc.reason))
                continue
            # §3: it supersedes every version of its account in force from its own time on (equal: too)
            mine = log.versions.setdefault(v.account, [])
            mine[:] = [old for old in mine if old.effective_ms < v.effective_ms] + [v]
        return log

    def at(self, account: str, t_ms: int) -> tuple[Version | None, bool]:
        """§6.2: the version in force at t and whether the lookup was exact."""
        mine = self.versions.get(account, [])
        j, exact = spec_version_index([v.effective_ms for v in mine], t_ms)
        return (mine[j] if j is not None else None), exact


# --------------------------------------------------------------------------------------------------
# Attempts (§4)


def _required_str(obj: dict[str, Any], name: str, where: str, max_len: int) -> str:
    if name not in obj:
        raise Invalid("missing_field", f"{where}{name}")
    value = obj[name]
    if not isinstance(value, str):
        raise Invalid("wrong_type", f"{where}{name}")
    if not 1 <= len(value) <= max_len:
        raise Invalid("invalid_field", f"{where}{name}")
    return value


def parse_attempt(raw: bytes | None, now_ms: int) -> dict[str, Any]:
    """A valid attempt as a plain dict (ids normalised, `event_ms`, optional fields cleaned, `truncated`),
    or Invalid (§4.2-§4.4)."""
    if raw is not None and len(raw) > MAX_ATTEMPT_BYTES:
        raise Invalid("oversize")
    obj = strict_json(raw)
    if not isinstance(obj, dict):
        raise Invalid("wrong_type", "not an object")
    out: dict[str, Any] = {"id": _required_str(obj, "id", "", 1024)}
    if "event_time" not in obj:
        raise Invalid("missing_field", "event_time")
    event_ms = parse_rfc3339(obj["event_time"])
    if event_ms < MIN_EVENT_MS or event_ms > now_ms + MAX_FUTURE_MS:
        raise Invalid("bad_timestamp", "out of range")
    out["event_ms"] = event_ms
    if "account_id" not in obj:
        raise Invalid("missing_field", "account_id")
    out["account_id"] = _account(obj["account_id"], "account_id", "invalid_field")
    if "identity" not in obj:
        raise Invalid("missing_field", "identity")
    ident = obj["identity"]
    if not isinstance(ident, dict):
        raise Invalid("wrong_type", "identity")
    iam_id = _required_str(ident, "iam_id", "identity.", 1024)
    if "type" not in ident:
        raise Invalid("missing_field", "identity.type")
    if ident["type"] not in IDENTITY_TYPES:
        raise Invalid("unknown_identity_type", repr(ident["type"]))
    if "account_id" not in ident:
        raise Invalid("missing_field", "identity.account_id")
    out["identity"] = {"iam_id": iam_id, "type": ident["type"],
                       "account_id": _account(ident["account_id"], "identity.account_id", "invalid_field")}
    out["action"] = _required_str(obj, "action", "", 1024)
    truncated = False
    for path, limit in OPTIONAL_MAX.items():
        parent: Any = obj
        for part in path[:-1]:
            parent = parent.get(part) if isinstance(parent, dict) else None
        if path[0] == "resource" and obj.get("resource") is not None and not isinstance(obj["resource"], dict):
            truncated = True  # a resource that is not an object is dropped
        value = parent.get(path[-1]) if isinstance(parent, dict) else None
        if value is not None and not isinstance(value, str):
            value, truncated = None, True
        elif value is not None and len(value) > limit:
            value, truncated = value[:limit], True
        out["/".join(path)] = value
    out["truncated"] = truncated
    return out


# --------------------------------------------------------------------------------------------------
# The expectation


def expected_event_id(a: dict[str, Any]) -> str:
    """§7.1: UUIDv5 (EVENT_ID_NAMESPACE) of the attempt id, target account, identity type, iam id,
    identity account and action, each as `<length in code points>:<value>`, then the event time in ms."""
    ident = a["identity"]
    parts = (a["id"], a["account_id"], ident["type"], ident["iam_id"], ident["account_id"], a["action"])
    return str(uuid.uuid5(EVENT_ID_NAMESPACE, "".join(f"{len(p)}:{p}" for p in parts) + str(a["event_ms"])))


def expected_event(a: dict[str, Any], d: SpecDecision, version: Version | None, exact: bool) -> dict[str, Any]:
    """The projection (FIELDS) of the eval event of a valid, emitted attempt (§7.1)."""
    deny = d.decision == "Deny"
    return {
        "key": a["account_id"],
        "id": expected_event_id(a),
        "action": EVAL_ACTION,
        "eventTime": a["event_ms"],
        "attemptId": a["id"],
        "initiator.id": a["identity"]["iam_id"],
        "initiator.typeURI": a["identity"]["type"],
        "initiator.name": a["identity/name"],
        "initiator.authnAccountId": a["identity"]["account_id"],
        "initiator.host.address": a["source_ip"],
        "initiator.host.agent": a["user_agent"],
        "target.accountId": a["account_id"],
        "target.id": a["resource/crn"],
        "target.serviceName": a["resource/service_name"],
        "target.action": a["action"],
        "responseData.decision": d.decision,
        "responseData.isEnforced": d.is_enforced,
        "responseData.state": d.state,
        "responseData.allowlisted": d.allowlisted,
        "responseData.settingsVersion.effectiveTime": version.effective_ms if version is not None else None,
        "responseData.settingsVersion.exact": exact,
        "outcome": "failure" if deny else "success",
        "severity": "warning" if deny and d.is_enforced else "normal",
        "reason.reasonCode": 403 if deny else 200,
        "observer.name": PRODUCT,
        "truncated": a["truncated"],
    }


def _ms(value: Any) -> Any:
    if isinstance(value, datetime):
        return (value - _EPOCH) // timedelta(milliseconds=1)
    return value


def project(event: dict[str, Any], key: bytes | None) -> dict[str, Any]:
    """The projection (FIELDS) of a decoded eval event and its record key; timestamps as epoch ms."""
    out: dict[str, Any] = {"key": key.decode("utf-8", "replace") if key is not None else None}
    for name in FIELDS[1:]:
        node: Any = event
        for part in name.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        out[name] = _ms(node)
    return out


def differences(got: dict[str, Any], want: dict[str, Any]) -> str:
    return ", ".join(f"{k} {got.get(k)!r} (model: {want.get(k)!r})" for k in FIELDS if got.get(k) != want.get(k))


@dataclass
class Expectation:
    """What the contract says the processor makes of the inputs."""

    events: dict[str, dict[str, Any]]  # attemptId -> projection, for the attempts that get an event
    outcomes: list[str]  # per attempt value: one of the six outcomes (§5.2)
    invalid: list[int]  # indices of the invalid attempt values (each one dead letter)
    settings: SettingsLog

    def exercised(self) -> dict[str, int]:
        """How many events of each kind are expected: (state, allowlisted) and `exact=false`."""
        kinds: dict[str, int] = {}
        for e in self.events.values():
            k = f"{e['responseData.state']}/{'allowlisted' if e['responseData.allowlisted'] else 'not allowlisted'}"
            kinds[k] = kinds.get(k, 0) + 1
            if not e["responseData.settingsVersion.exact"]:
                kinds["inexact"] = kinds.get("inexact", 0) + 1
        return kinds


def expect(settings: Iterable[SettingsRecord], attempts: Sequence[bytes | None],
           now_ms: int | None = None) -> Expectation:
    """The contract's output for the settings records (as published, in order) and attempt values.

    `now_ms` is the evaluating clock for the "too far in the future" rule (default: now)."""
    if now_ms is None:
        now_ms = (datetime.now(UTC) - _EPOCH) // timedelta(milliseconds=1)
    log = SettingsLog.read(settings)
    events: dict[str, dict[str, Any]] = {}
    outcomes: list[str] = []
    invalid: list[int] = []
    for i, raw in enumerate(attempts):
        try:
            a = parse_attempt(raw, now_ms)
        except Invalid:
            outcomes.append("invalid")
            invalid.append(i)
            continue
        version, exact = log.at(a["account_id"], a["event_ms"])
        ident = a["identity"]
        d = spec_decide(version.doc if version is not None else None, a["account_id"], ident["account_id"],
                        ident["type"])
        outcomes.append(d.outcome)
        if d.emitted:
            assert a["id"] not in events, f"two emitted attempts share the id {a['id']!r}"
            events[a["id"]] = expected_event(a, d, version, exact)
    return Expectation(events, outcomes, invalid, log)
