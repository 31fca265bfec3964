"""Access-attempt events (SPEC §4): validated once at the boundary, then plain attribute access."""

from __future__ import annotations

import json
import re
from datetime import datetime

import msgspec
from pydantic import ValidationError

from processor.core.attempt_doc import AccessAttempt, AttemptData
from processor.core.errors import AccessEvalError
from processor.core.ids import ACCOUNT_ID_MAX, IDENTITY_TYPES, is_valid_account, normalize_account
from processor.core.times import known_minute_millis, remember_minute, to_millis

__all__ = ["AccessAttempt", "Attempt", "AttemptData", "InvalidAttempt", "parse_attempt"]

#: Attempts before this instant are invalid (SPEC §4).
MIN_EVENT_TIME_MS = 946_684_800_000  # 2000-01-01T00:00:00Z
DEFAULT_MAX_FUTURE_MS = 3_600_000
DEFAULT_MAX_BYTES = 256 * 1024

#: The closed set of DLQ reasons; metrics labels and DLQ headers use exactly these.
INVALID_REASONS: tuple[str, ...] = (
    "oversize",
    "bad_json",
    "missing_field",
    "wrong_type",
    "unknown_identity_type",
    "bad_timestamp",
    "invalid_field",
    "internal_error",  # evaluation raised (processor/stream/attempt_stage.py): dead-lettered, not a crash
)

_decode_fast = msgspec.json.Decoder(AttemptData).decode
_to_datetime = msgspec.convert  # msgspec's RFC 3339 parser: a subset of what pydantic accepts
#: pydantic truncates fractions beyond microseconds, msgspec rounds them: such times take the model's path.
_LONG_FRACTION = re.compile(r"\.\d{7}").search
#: pydantic's parser rejects JSON nested deeper than 200 levels, msgspec recurses until Python's
#: recursion limit (RecursionError): more brackets than this (a necessary condition for such depth)
#: takes the model's path.
_MAX_BRACKETS = 200
#: Without arrays, 201 levels of objects take more than this many bytes (`{"":` + `}` per level), so
#: shorter values without `[` (the usual attempt) need no count.
_SHALLOW_LEN = 1_000
#: pydantic's parser rejects integers of more than 4,300 digits (Python's int_max_str_digits), msgspec
#: skips them in ignored fields: a value this long could hold one, and takes the model's path.
_FAST_MAX_LEN = 4_300
_FAST_ERRORS = (msgspec.DecodeError, UnicodeError, RecursionError)


class InvalidAttempt(AccessEvalError):
    """A rejected attempt: `reason` is one of INVALID_REASONS, `detail` names the field and problem."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class Attempt:
    """A validated attempt plus its event time in epoch milliseconds (computed once).

    `data` is the validated object as plain dicts (what the hot path reads); `model` is the same
    content as an AccessAttempt, built on first use.
    """

    __slots__ = ("_model", "_raw", "data", "event_ms", "truncated")

    def __init__(self, data: AttemptData, event_ms: int, raw: bytes | str, truncated: bool = False) -> None:
        self.data = data
        self.event_ms = event_ms
        self._raw = raw
        self._model: AccessAttempt | None = None
        #: An optional display field was truncated or dropped (SPEC §4); the eval event says so.
        self.truncated = truncated

    @property
    def model(self) -> AccessAttempt:
        if self._model is None:
            self._model = AccessAttempt.model_validate_json(self._raw)
        return self._model


def parse_attempt(
    raw: bytes | str | None,
    now_ms: int,
    *,
    max_future_ms: int = DEFAULT_MAX_FUTURE_MS,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> Attempt:
    """Validate raw JSON into an Attempt, or raise InvalidAttempt with a DLQ reason."""
    if raw is None:
        raise InvalidAttempt("bad_json", "value is null (tombstone); an attempt must be a JSON object")
    size = len(raw)
    if size > max_bytes:
        raise InvalidAttempt("oversize", f"value is {size} bytes; the limit is {max_bytes}")
    # The fast path only for values the model would read alike (see the constants above).
    if size > _FAST_MAX_LEN:
        return _parse_with_model(raw, now_ms, max_future_ms)
    if isinstance(raw, bytes):  # find() is twice as fast as `in` here
        if (size > _SHALLOW_LEN or raw.find(b"[") != -1) and raw.count(b"{") + raw.count(b"[") > _MAX_BRACKETS:
            return _parse_with_model(raw, now_ms, max_future_ms)
    elif (size > _SHALLOW_LEN or "[" in raw) and raw.count("{") + raw.count("[") > _MAX_BRACKETS:
        return _parse_with_model(raw, now_ms, max_future_ms)
    try:
        data = _decode_fast(raw)
        ts = data["event_time"]
        event_ms = known_minute_millis(ts)
        if event_ms is None:
            event_ms = _parsed_millis(ts)
    except _FAST_ERRORS:
        return _parse_with_model(raw, now_ms, max_future_ms)
    if event_ms is None:
        return _parse_with_model(raw, now_ms, max_future_ms)
    ident = data["identity"]
    raw_account, raw_ident_account = data["account_id"], ident["account_id"]
    account = normalize_account(raw_account)
    ident_account = normalize_account(raw_ident_account)
    if not (
        # ASCII only: lower() maps a few non-ASCII letters (U+212A) into ASCII; the model decides those.
        raw_account.isascii()
        and raw_ident_account.isascii()
        # 32 hex digits pass `isalnum` (~40 ns); anything else gets the full rule (contract §3.2).
        and (account.isalnum() or is_valid_account(account))
        and (ident_account.isalnum() or is_valid_account(ident_account))
        and len(account) <= ACCOUNT_ID_MAX
        and len(ident_account) <= ACCOUNT_ID_MAX
    ):
        return _parse_with_model(raw, now_ms, max_future_ms)
    data["account_id"] = account
    ident["account_id"] = ident_account
    return Attempt(data, _checked_millis(event_ms, now_ms, max_future_ms), raw)


def _parsed_millis(ts: str) -> int | None:
    """An event time of a minute not read yet: parsed in full (msgspec raises for what it rejects),
    then its minute remembered; None for what the model must decide (no offset, or more than six
    fraction digits: pydantic truncates them, msgspec rounds)."""
    event_time = _to_datetime(ts, datetime)
    if event_time.tzinfo is None or (len(ts) >= 27 and _LONG_FRACTION(ts)):
        return None
    event_ms = to_millis(event_time)
    remember_minute(ts, event_ms)
    return event_ms


def _checked_millis(event_ms: int, now_ms: int, max_future_ms: int) -> int:
    if event_ms < MIN_EVENT_TIME_MS:
        raise InvalidAttempt("bad_timestamp", "event_time: before 2000-01-01T00:00:00Z")
    if event_ms > now_ms + max_future_ms:
        raise InvalidAttempt(
            "bad_timestamp", f"event_time: more than {max_future_ms // 1000} s ahead of the evaluating clock"
        )
    return event_ms


def _parse_with_model(raw: bytes | str, now_ms: int, max_future_ms: int) -> Attempt:
    """The reference path: the pydantic model decides, and names the problem of what it rejects."""
    try:
        model = AccessAttempt.model_validate_json(raw)
    except ValidationError as exc:
        raise _classify(exc) from None
    if (b"NaN" in raw or b"Infinity" in raw) if isinstance(raw, bytes) else ("NaN" in raw or "Infinity" in raw):
        _reject_non_json_numbers(raw)
    data: AttemptData = model.model_dump(mode="json", exclude_unset=True)  # type: ignore[assignment]
    attempt = Attempt(data, _checked_millis(to_millis(model.event_time), now_ms, max_future_ms), raw, model.truncated)
    attempt._model = model
    return attempt


def _non_json_constant(name: str) -> object:
    raise InvalidAttempt("bad_json", f"malformed JSON: {name} is not a JSON number (RFC 8259)")


def _reject_non_json_numbers(raw: bytes | str) -> None:
    """pydantic's parser accepts NaN/Infinity; the rare value that mentions them is re-read strictly."""
    json.loads(raw, parse_constant=_non_json_constant)


def _classify(exc: ValidationError) -> InvalidAttempt:
    """Map pydantic's first error to one bounded reason and a message naming the field."""
    err = exc.errors(include_url=False, include_input=False)[0]
    loc = ".".join(str(p) for p in err["loc"]) or "(root)"
    kind = err["type"]
    msg = err["msg"]
    if kind == "json_invalid":
        return InvalidAttempt("bad_json", f"malformed JSON: {msg}")
    if kind == "missing":
        return InvalidAttempt("missing_field", f"{loc}: field required")
    if loc == "identity.type" and kind == "literal_error":
        return InvalidAttempt("unknown_identity_type", f"identity.type: must be one of {', '.join(IDENTITY_TYPES)}")
    if loc == "event_time" or kind.startswith(("datetime", "timezone")):
        return InvalidAttempt("bad_timestamp", f"{loc}: {msg} (RFC 3339 with an offset expected)")
    if kind in ("dict_type", "model_type", "model_attributes_type"):
        return InvalidAttempt("wrong_type", f"{loc}: Input should be an object")
    if kind.endswith("_type"):
        return InvalidAttempt("wrong_type", f"{loc}: {msg}")
    return InvalidAttempt("invalid_field", f"{loc}: {msg}")
