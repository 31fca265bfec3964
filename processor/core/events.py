"""Eval events (SPEC §6): what each field means (`build_event`, and the same as `EVENT_SOURCES` for the
encoder that skips the dict), and their JSON rendering."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from hashlib import sha1
from typing import Any, NamedTuple

from processor import PRODUCT, __version__
from processor.core.attempts import Attempt
from processor.core.policy import Verdict
from processor.core.settings import BEGINNING_OF_TIME, SettingsVersion
from processor.core.times import rfc3339_millis, to_millis

EVAL_ACTION = "iam-access-management.account-settings.eval"
#: Namespace of eval event ids: id = UUIDv5(EVENT_ID_NAMESPACE, the attempt's identity) (`event_id`, contract §7.1).
EVENT_ID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:access-eval:eval-event")
_NS = EVENT_ID_NAMESPACE.bytes
_NO_RESOURCE: dict[str, Any] = {}
_REASONS = {
    ("Permit", False): (200, "Permit: the credential's account is allowlisted (report-only)"),
    ("Deny", False): (403, "Would be denied: the credential's account is not allowlisted (report-only)"),
    ("Permit", True): (200, "Permit: the credential's account is allowlisted"),
    ("Deny", True): (403, "Denied: external identity interaction is limited and the account is not allowlisted"),
}


#: UUID variant bits (10xx) applied to the first hex digit of the clock_seq field.
_VARIANT = {c: "89ab"[int(c, 16) & 3] for c in "0123456789abcdef"}


def event_id(
    attempt_id: str, account_id: str, identity_type: str, iam_id: str, identity_account_id: str, action: str,
    event_ms: int,
) -> str:
    """uuid.uuid5(EVENT_ID_NAMESPACE, name), written out (4x faster than the uuid module): the SHA-1 hex
    digest with the version digit set to 5 and the variant bits to 10.

    The name is everything that identifies the attempt, not its id alone (producers reuse ids, and
    one id must never stand for two different attempts): each string as `<length>:<value>` (length
    in code points, so no value can shift into the next), then the event time in epoch ms. Display
    fields (name, resource, source, agent) are not part of it: a truncated re-delivery keeps its id.
    """
    name = (
        f"{len(attempt_id)}:{attempt_id}{len(account_id)}:{account_id}{len(identity_type)}:{identity_type}"
        f"{len(iam_id)}:{iam_id}{len(identity_account_id)}:{identity_account_id}{len(action)}:{action}{event_ms}"
    )
    x = sha1(_NS + name.encode()).hexdigest()
    return f"{x[:8]}-{x[8:12]}-5{x[13:16]}-{_VARIANT[x[16]]}{x[17:20]}-{x[20:32]}"


#: event_id of an attempt's validated data (build_event and EVENT_SOURCES share this expression).
_EVENT_ID_EXPR = (
    "event_id(a['id'], a['account_id'], ident['type'], ident['iam_id'], ident['account_id'], a['action'], "
    "attempt.event_ms)"
)


class VerdictFields(NamedTuple):
    """The event fields that follow from the verdict alone."""

    decision: str
    outcome: str
    severity: str
    reason_code: int
    reason_text: str


@lru_cache(maxsize=64)  # there are six Verdicts; computing the fields would cost build_event ~0.4 µs
def verdict_fields(verdict: Verdict) -> VerdictFields:
    """One place for what a verdict says in an event (build_event and EVENT_SOURCES both read it)."""
    decision = verdict.decision or "Unknown"
    code, text = _REASONS[(decision, verdict.is_enforced)]
    return VerdictFields(
        decision,
        "success" if decision == "Permit" else "failure",
        "warning" if verdict.is_enforced and decision == "Deny" else "normal",
        code,
        text,
    )


def build_event(
    attempt: Attempt,
    verdict: Verdict,
    version: SettingsVersion | None,
    exact: bool,
    evaluated_at_ms: int,
) -> dict[str, Any]:
    """The eval event record, shaped exactly like schemas/eval_event.avsc (timestamps as epoch ms).

    The processor encodes events without this dict (`EvalCodec.encode_evaluation`, compiled from
    EVENT_SOURCES); this stays the readable definition, used by `simulate` and as the tests' oracle.
    """
    a = attempt.data
    ident = a["identity"]
    res = a.get("resource") or _NO_RESOURCE
    vf = verdict_fields(verdict)
    return {
        "id": event_id(
            a["id"], a["account_id"], ident["type"], ident["iam_id"], ident["account_id"], a["action"], attempt.event_ms
        ),
        "action": EVAL_ACTION,
        "eventTime": attempt.event_ms,
        "attemptId": a["id"],
        "initiator": {
            "id": ident["iam_id"],
            "typeURI": ident["type"],
            "name": ident.get("name"),
            "authnAccountId": ident["account_id"],
            "host": {"address": a.get("source_ip"), "agent": a.get("user_agent")},
        },
        "target": {
            "accountId": a["account_id"],
            "id": res.get("crn"),
            "serviceName": res.get("service_name"),
            "action": a["action"],
        },
        "responseData": {
            "decision": vf.decision,
            "isEnforced": verdict.is_enforced,
            "state": verdict.state,
            "allowlisted": verdict.allowlisted,
            "settingsVersion": {
                "effectiveTime": (
                    None if version is None or version.effective_ms == BEGINNING_OF_TIME else version.effective_ms
                ),
                "topic": version.topic if version is not None else None,
                "partition": version.partition if version is not None else None,
                "offset": version.offset if version is not None else None,
                "exact": exact,
            },
        },
        "outcome": vf.outcome,
        "severity": vf.severity,
        "reason": {"reasonCode": vf.reason_code, "reasonType": vf.reason_text},
        "observer": {"name": PRODUCT, "version": __version__, "evaluatedAt": evaluated_at_ms},
        "truncated": attempt.truncated,
    }


# --- the same event as field sources, for encoders that skip the dict ----------------------------


@dataclass(frozen=True)
class Constant:
    """A field with the same value in every event: an encoder writes its bytes once."""

    value: Any


@dataclass(frozen=True)
class PerVerdict:
    """A field that follows from the verdict alone. Verdicts are six shared constants never changed
    after creation (processor/policy.py), so an encoder can keep its bytes per verdict object."""

    value: Callable[[Verdict], Any]


#: Where a field's value comes from: a Python expression (over `EventSources.params` and the names the
#: prelude binds), a Constant or a PerVerdict.
Source = str | Constant | PerVerdict


@dataclass(frozen=True)
class EventSources:
    """build_event's record as one source per schema field (dotted path), so processor/avro.py can
    compile an encoder from the .avsc plus this, with no dict in between. A schema field without a
    source, or a source without a field, is an error when the encoder is compiled."""

    #: The encoder's parameters: build_event's.
    params: tuple[str, ...]
    #: Statements run first (locals the expressions share).
    prelude: tuple[str, ...]
    fields: Mapping[str, Source]
    #: Globals the expressions and the prelude use.
    names: Mapping[str, Any]
    #: The parameter PerVerdict values are looked up by.
    verdict_param: str = "verdict"


#: build_event, field by field (tests/codec/test_avro_hot_path.py checks that the bytes are identical).
EVENT_SOURCES = EventSources(
    params=("attempt", "verdict", "version", "exact", "evaluated_at_ms"),
    prelude=("a = attempt.data", "ident = a['identity']", "res = a.get('resource') or _NO_RESOURCE"),
    fields={
        "id": _EVENT_ID_EXPR,
        "action": Constant(EVAL_ACTION),
        "eventTime": "attempt.event_ms",
        "attemptId": "a['id']",
        "initiator.id": "ident['iam_id']",
        "initiator.typeURI": "ident['type']",
        "initiator.name": "ident.get('name')",
        "initiator.authnAccountId": "ident['account_id']",
        "initiator.host.address": "a.get('source_ip')",
        "initiator.host.agent": "a.get('user_agent')",
        "target.accountId": "a['account_id']",
        "target.id": "res.get('crn')",
        "target.serviceName": "res.get('service_name')",
        "target.action": "a['action']",
        "responseData.decision": PerVerdict(lambda v: verdict_fields(v).decision),
        "responseData.isEnforced": PerVerdict(lambda v: v.is_enforced),
        "responseData.state": PerVerdict(lambda v: v.state),
        "responseData.allowlisted": PerVerdict(lambda v: v.allowlisted),
        "responseData.settingsVersion.effectiveTime": (
            "None if version is None or version.effective_ms == BEGINNING_OF_TIME else version.effective_ms"
        ),
        "responseData.settingsVersion.topic": "None if version is None else version.topic",
        "responseData.settingsVersion.partition": "None if version is None else version.partition",
        "responseData.settingsVersion.offset": "None if version is None else version.offset",
        "responseData.settingsVersion.exact": "exact",
        "outcome": PerVerdict(lambda v: verdict_fields(v).outcome),
        "severity": PerVerdict(lambda v: verdict_fields(v).severity),
        "reason.reasonCode": PerVerdict(lambda v: verdict_fields(v).reason_code),
        "reason.reasonType": PerVerdict(lambda v: verdict_fields(v).reason_text),
        "observer.name": Constant(PRODUCT),
        "observer.version": Constant(__version__),
        "observer.evaluatedAt": "evaluated_at_ms",
        "truncated": "attempt.truncated",
    },
    names={"event_id": event_id, "_NO_RESOURCE": _NO_RESOURCE, "BEGINNING_OF_TIME": BEGINNING_OF_TIME},
)


_TIMESTAMP_PATHS = (("eventTime",), ("responseData", "settingsVersion", "effectiveTime"), ("observer", "evaluatedAt"))


def to_json_obj(event: dict[str, Any]) -> dict[str, Any]:
    """JSON rendering of an event (built or decoded): same nesting, timestamps as RFC 3339 UTC ms."""
    out: dict[str, Any] = _copy(event)
    for path in _TIMESTAMP_PATHS:
        node = out
        for key in path[:-1]:
            node = node[key]
        value = node[path[-1]]
        if isinstance(value, datetime):
            value = to_millis(value)
        node[path[-1]] = rfc3339_millis(value) if value is not None else None
    return out


def _copy(obj: Any) -> Any:  # nested dicts only: lists are never mutated
    return {k: _copy(v) for k, v in obj.items()} if isinstance(obj, dict) else obj
