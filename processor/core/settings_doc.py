"""The settings record model of SPEC §3: the document, its validation and the plain rules an
evaluation reads. Pure: what a record says, not how records combine (that is `settings.SettingsHistory`).
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.json_schema import SkipJsonSchema
from pydantic_core import PydanticCustomError

from processor.core.errors import EXIT_USAGE, AccessEvalError
from processor.core.ids import IDENTITY_TYPES, AccountId
from processor.core.rules import PackedIds, Rule, Rules
from processor.core.times import MAX_TIME_MS, Rfc3339, rfc3339_millis, to_millis

#: Caps (contract §3), so that no record can exhaust a replica: every replica reads the whole topic.
#: An allowlist may hold 10,000+ ids; 50,000 per identity type leaves room. 8 MiB per record lets three
#: full allowlists of 32-hex ids (about 1.8 MB of JSON each) fit, so the id cap, not the byte cap, is
#: what an in-contract record meets (three 10,000-id allowlists already exceed 1 MiB).
MAX_ALLOWLIST_IDS = 50_000
MAX_RECORD_BYTES = 8 * 1_048_576
#: Rejection reasons of these guards (the settings history adds the others).
GUARD_REASONS: tuple[str, ...] = ("near_miss_identity_type", "record_too_large", "allowlist_too_large")


def _effective_range(value: datetime) -> datetime:
    """SPEC §3: 1970-01-01 .. 9999-12-31 UTC, so every accepted time is a timestamp-millis any reader
    decodes (an offset can push 9999-12-31 into year 10000, or 0001-01-01 into year 0)."""
    if not 0 <= to_millis(value) <= MAX_TIME_MS:
        raise ValueError(f"must lie within 1970-01-01T00:00:00Z .. {rfc3339_millis(MAX_TIME_MS)} (UTC)")
    return value


#: `updated_at`: RFC 3339 with an offset, within the range above.
UpdatedAt = Annotated[Rfc3339, AfterValidator(_effective_range)]


class IdentityTypeSettings(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    state: Literal["enabled", "monitor", "limited"]
    external_allowed_accounts: list[AccountId] = Field(default_factory=list)

    @field_validator("external_allowed_accounts", mode="before")
    @classmethod
    def _capped(cls, value: Any) -> Any:
        """Checked before the ids are: an oversized list costs no per-id validation."""
        if isinstance(value, list) and len(value) > MAX_ALLOWLIST_IDS:
            raise PydanticCustomError(
                "allowlist_too_large", f"{len(value)} ids, more than the cap of {MAX_ALLOWLIST_IDS} per identity type"
            )
        return value


def _skeleton(name: str) -> str:
    """A key's letters and digits, case-folded: what case, separator, whitespace and invisible-character
    variants of an identity type have in common."""
    return "".join(c for c in name.casefold() if c.isalnum())


_KNOWN_SKELETONS = {_skeleton(t): t for t in IDENTITY_TYPES}


def _within_two_edits(a: str, b: str) -> bool:
    """Levenshtein distance <= 2 (insertions, deletions, substitutions), without the full table."""
    if abs(len(a) - len(b)) > 2:
        return False
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        if min(current) > 2:
            return False
        previous = current
    return previous[-1] <= 2


def near_miss(key: str) -> str | None:
    """The known identity type an unknown key was probably meant as (contract §3), or None.

    Plural, case, separator and invisible-character variants reduce to a known type's skeleton or
    within two edits of it (`users`, `Service_ID`, `service-id`, `servce`); a genuinely new type
    (`trusted_profile`) is farther from every known one and stays ignored.
    """
    if key in IDENTITY_TYPES:
        return None
    skeleton = _skeleton(key)
    for known_skeleton, known in _KNOWN_SKELETONS.items():
        if _within_two_edits(skeleton, known_skeleton):
            return known
    return None


def _absent(schema: dict[str, Any]) -> None:
    """JSON Schema of an optional object that may be absent but not null: no `"default": null`."""
    schema.pop("default", None)


class IdentityTypes(BaseModel):
    """Known identity types; unknown keys are kept aside (forward compatibility) and only counted.

    A missing type is `enabled`; a type given as `null` is a wrong type and rejects the record
    (SPEC §3: a document never resets anything by `null`).
    """

    model_config = ConfigDict(extra="allow", frozen=True)

    # SkipJsonSchema: the published schema says what producers may send (an object, or nothing).
    user: IdentityTypeSettings | SkipJsonSchema[None] = Field(default=None, json_schema_extra=_absent)
    service_id: IdentityTypeSettings | SkipJsonSchema[None] = Field(default=None, json_schema_extra=_absent)
    service: IdentityTypeSettings | SkipJsonSchema[None] = Field(default=None, json_schema_extra=_absent)

    @field_validator("user", "service_id", "service", mode="before")
    @classmethod
    def _not_null(cls, value: Any) -> Any:
        if value is None:
            raise ValueError("must be an object, not null (a missing identity type is enabled)")
        return value

    @model_validator(mode="after")
    def _no_near_miss(self) -> IdentityTypes:
        """Ignoring a misspelt type would silently leave the type it meant at its default (`enabled`)."""
        for key in self.model_extra or {}:
            meant = near_miss(key)
            if meant is not None:
                raise PydanticCustomError(
                    "near_miss_identity_type",
                    f"identity type key {key!r} is a near miss of {meant!r}; spell it {meant!r} (an unknown "
                    f"key would be ignored, leaving {meant!r} at its default)",
                )
        return self


class ExternalInteraction(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    identity_types: IdentityTypes


class SettingsDocument(BaseModel):
    """The settings JSON of SPEC §3. `null` is a wrong type wherever an object, list or string is
    required; only a tombstone (a null record value) resets an account."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    account_id: AccountId
    external_account_identity_interaction: ExternalInteraction
    updated_at: UpdatedAt | None = None

    @property
    def unknown_identity_types(self) -> list[str]:
        return sorted((self.external_account_identity_interaction.identity_types.model_extra or {}).keys())


class TombstoneLine(BaseModel):
    """`simulate`'s stand-in for a null record value (SPEC §10): `{"account_id": A, "tombstone": true}`."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    account_id: AccountId
    tombstone: Literal[True]
    updated_at: UpdatedAt | None = None


#: Allowlists up to this many ids are kept as a SmallSet: scanning a few ids is about as fast as a
#: set lookup and takes a quarter of a small frozenset's memory. Larger ones are frozensets.
SMALL_ALLOWLIST = 8


class SetLike:
    """`!=`, hashing and repr of an id collection that compares equal to a set with the same ids
    (`SmallSet`; `rules.PackedIds`, compiled, has its own); each defines `__eq__` for its own storage."""

    __slots__ = ()

    def __ne__(self, other: object) -> bool:
        eq = self.__eq__(other)
        return eq if eq is NotImplemented else not eq

    def __hash__(self) -> int:
        return hash(frozenset(self))  # type: ignore[call-overload]  # the subclass is iterable

    def __repr__(self) -> str:
        return f"{type(self).__name__}({tuple(self)!r})"  # type: ignore[arg-type]


class SmallSet(SetLike, tuple[str, ...]):
    """A few unique ids: a tuple (`in` scans it) that compares equal to a set with the same ids."""

    __slots__ = ()

    def __eq__(self, other: object) -> bool:
        if isinstance(other, SmallSet | PackedIds | set | frozenset):
            return len(self) == len(other) and all(x in other for x in self)
        return NotImplemented

    __hash__ = SetLike.__hash__  # defining __eq__ would otherwise make the class unhashable


TYPE_INDEX: dict[str, int] = {t: i for i, t in enumerate(IDENTITY_TYPES)}


class InvalidSettings(AccessEvalError):
    """A rejected settings record (`reason` one of REJECT_REASONS); from a command's input, exit 2."""

    exit_code = EXIT_USAGE

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def parse_settings(raw: bytes | str) -> SettingsDocument:
    """Validate a settings JSON document, or raise InvalidSettings naming the field."""
    size = len(raw) if isinstance(raw, bytes) else len(raw.encode("utf-8", "surrogatepass"))
    if size > MAX_RECORD_BYTES:
        raise InvalidSettings("record_too_large", f"{size} bytes, more than the cap of {MAX_RECORD_BYTES}")
    try:
        doc = SettingsDocument.model_validate_json(raw)
    except ValidationError as exc:
        raise _invalid(exc) from None
    if (b"NaN" in raw or b"Infinity" in raw) if isinstance(raw, bytes) else ("NaN" in raw or "Infinity" in raw):
        _reject_non_json_numbers(raw)
    return doc


class _NonJsonNumber(AccessEvalError):
    """NaN/Infinity met while re-reading a record strictly; turned into InvalidSettings at once."""


def _non_json_constant(name: str) -> object:
    raise _NonJsonNumber(name)


def _reject_non_json_numbers(raw: bytes | str) -> None:
    """pydantic's parser accepts NaN/Infinity (SPEC §3: malformed JSON); a value that mentions them is
    re-read strictly, wherever they are, even in an ignored field."""
    try:
        json.loads(raw, parse_constant=_non_json_constant)
    except _NonJsonNumber as exc:
        raise InvalidSettings("bad_json", f"malformed JSON: {exc} is not a JSON number (RFC 8259)") from None


def parse_settings_line(raw: bytes | str) -> SettingsDocument | TombstoneLine:
    """A `simulate` settings line: a settings document, or a tombstone line (`"tombstone": true`)."""
    if (b'"tombstone"' in raw) if isinstance(raw, bytes) else ('"tombstone"' in raw):
        try:
            return TombstoneLine.model_validate_json(raw)
        except ValidationError as exc:
            errors = exc.errors(include_url=False, include_input=False)
            if not any(e["loc"][:1] == ("tombstone",) or e["type"] == "json_invalid" for e in errors):
                raise _invalid(exc) from None  # a tombstone line with a bad account_id or updated_at
            # not a tombstone line: the document model decides and names the problem
    return parse_settings(raw)


def _invalid(exc: ValidationError) -> InvalidSettings:
    """pydantic's first error as a bounded reason and a message naming the field."""
    err = exc.errors(include_url=False, include_input=False)[0]
    loc = ".".join(str(p) for p in err["loc"]) or "(root)"
    if err["type"] == "json_invalid":
        return InvalidSettings("bad_json", f"malformed JSON: {err['msg']}")
    if err["type"] == "missing":
        return InvalidSettings("invalid_value", f"{loc}: field required")
    if err["type"] in GUARD_REASONS:
        return InvalidSettings(err["type"], f"{loc}: {err['msg']}")
    return InvalidSettings("invalid_value", f"{loc}: {err['msg']}")


#: Recently stored allowlist ids, so that an id many accounts allowlist (a partner account) is stored
#: once. Bounded, unlike sys.intern: unique ids (most of them) cost no ever-growing global table.
_RECENT_IDS: dict[str, str] = {}
RECENT_IDS_MAX = 65_536


def allowed_ids(ids: list[str]) -> frozenset[str] | SmallSet:
    """An allowlist as stored: unique ids, recurring ones shared; a SmallSet when small."""
    recent = _RECENT_IDS
    unique: dict[str, None] = {}
    for a in ids:
        shared = recent.get(a)
        if shared is None:
            if len(recent) >= RECENT_IDS_MAX:
                recent.clear()
            recent[a] = shared = a
        unique[shared] = None
    return SmallSet(unique) if len(unique) <= SMALL_ALLOWLIST else frozenset(unique)


def rules_of(doc: SettingsDocument) -> Rules:
    """Plain, shareable rules from a validated document.

    Identity types configured identically share one Rule (the common case: memory per account is
    what bounds how many accounts an instance holds).
    """
    types = doc.external_account_identity_interaction.identity_types
    out: list[Rule | None] = []
    made: dict[tuple[str, tuple[str, ...]], Rule] = {}
    for name in IDENTITY_TYPES:
        cfg: IdentityTypeSettings | None = getattr(types, name)
        if cfg is None or cfg.state == "enabled":
            out.append(None)
            continue
        key = (cfg.state, tuple(cfg.external_allowed_accounts))
        rule = made.get(key)
        if rule is None:
            rule = made[key] = Rule(cfg.state, allowed_ids(cfg.external_allowed_accounts))
        out.append(rule)
    return (out[0], out[1], out[2])


def document_from_json(obj: Any) -> SettingsDocument:
    """Validate an already-parsed JSON object (used by tools that build documents from flags)."""
    try:
        return SettingsDocument.model_validate(obj)
    except ValidationError as exc:
        raise _invalid(exc) from None


# The settings document as `settings_fast` reads it, with msgspec (shapes only; interpreted, as the
# pydantic model above, while `settings_fast` may be compiled: `processor/native.py`).
class PlainType(msgspec.Struct, gc=False):
    state: Literal["enabled", "monitor", "limited"]
    external_allowed_accounts: list[str] = msgspec.field(default_factory=list)


class PlainOuter(msgspec.Struct, gc=False):
    identity_types: dict[str, PlainType]


class PlainDoc(msgspec.Struct, gc=False):
    account_id: str
    external_account_identity_interaction: PlainOuter
    updated_at: str | msgspec.UnsetType = msgspec.UNSET


#: Typed decoding checks the shape in C; unknown fields are skipped, like the model's `extra="ignore"`.
decode_plain = msgspec.json.Decoder(PlainDoc).decode

#: The length of a hex account id, checked by the decoder (its digits are checked once per allowlist:
#: a `pattern` here costs a regex call per id).
_Hex32 = Annotated[str, msgspec.Meta(min_length=32, max_length=32)]


class CanonicalType(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    state: Literal["enabled", "monitor", "limited"]
    external_allowed_accounts: Annotated[list[_Hex32], msgspec.Meta(max_length=MAX_ALLOWLIST_IDS)] = \
        msgspec.field(default_factory=list)


class CanonicalOuter(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    identity_types: dict[str, CanonicalType]


class CanonicalDoc(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    account_id: str
    external_account_identity_interaction: CanonicalOuter
    updated_at: str | msgspec.UnsetType = msgspec.UNSET


#: The exact canonical form, nothing else: no unknown field anywhere (so nothing is skipped unread, and
#: no depth, NaN or number a skipped field could hide needs a scan), every id 32 characters.
decode_canonical = msgspec.json.Decoder(CanonicalDoc).decode
