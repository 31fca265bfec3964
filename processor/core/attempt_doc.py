"""The shapes of an access attempt (SPEC §4): the pydantic model, which is the contract and names every
problem, and the TypedDicts the hot path's msgspec decoder reads into. Shapes only: `attempts` reads
and checks with them. Kept apart from the reading so that `attempts` holds plain functions and slotted
classes the build can compile (`processor/native.py`), while these classes, which pydantic and msgspec
read at run time, stay interpreted.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, NotRequired, TypedDict

import msgspec
from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.json_schema import SkipJsonSchema

from processor.core.ids import AccountId
from processor.core.times import Rfc3339

#: Required text fields (id, identity.iam_id, action): 1 to this many characters.
ID_MAX = 1024
_ID = Field(min_length=1, max_length=ID_MAX)

#: Optional display fields (SPEC §4) and their maxima in characters: a longer value is truncated, one of
#: the wrong type dropped, never a reason to reject the attempt (the external identity controls some).
NAME_MAX, CRN_MAX, SERVICE_NAME_MAX, SOURCE_IP_MAX, USER_AGENT_MAX = 1024, 4096, 1024, 256, 4096


def _text(value: Any, limit: int) -> tuple[str | None, bool]:
    """(the value as kept, whether it was changed) for an optional display string."""
    if value is None:
        return None, False
    if isinstance(value, str):
        return (value[:limit], True) if len(value) > limit else (value, False)
    return None, True


def _sanitize(data: Any) -> Any:
    """Truncate or drop the optional display fields of a decoded attempt object (a copy); record in
    `truncated` whether anything changed. Required fields are left to the model."""
    if not isinstance(data, dict):
        return data
    out = dict(data)
    changed = False
    for key, limit in (("source_ip", SOURCE_IP_MAX), ("user_agent", USER_AGENT_MAX)):
        if key in out:
            out[key], c = _text(out[key], limit)
            changed |= c
    ident = out.get("identity")
    if isinstance(ident, dict) and "name" in ident:
        ident = out["identity"] = dict(ident)
        ident["name"], c = _text(ident["name"], NAME_MAX)
        changed |= c
    if "resource" in out:
        res = out["resource"]
        if isinstance(res, dict):
            res = out["resource"] = dict(res)
            for key, limit in (("crn", CRN_MAX), ("service_name", SERVICE_NAME_MAX)):
                if key in res:
                    res[key], c = _text(res[key], limit)
                    changed |= c
        elif res is not None:
            out["resource"] = None
            changed = True
    out["truncated"] = changed  # whatever the input said
    return out


class Identity(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    iam_id: str = _ID
    type: Literal["user", "service_id", "service"]
    account_id: AccountId
    name: str | None = Field(default=None, max_length=NAME_MAX)


class Resource(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    crn: str | None = Field(default=None, max_length=CRN_MAX)
    service_name: str | None = Field(default=None, max_length=SERVICE_NAME_MAX)


class AccessAttempt(BaseModel):
    """One access attempt. `account_id` owns the resource; `identity.account_id` issued the credential."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    id: str = _ID
    event_time: Rfc3339
    account_id: AccountId
    identity: Identity
    action: str = Field(min_length=1, max_length=ID_MAX)
    resource: Resource | None = None
    source_ip: str | None = Field(default=None, max_length=SOURCE_IP_MAX)
    user_agent: str | None = Field(default=None, max_length=USER_AGENT_MAX)
    #: Set by the model, never read from the input: an optional display field was truncated or dropped.
    truncated: SkipJsonSchema[bool] = Field(default=False, exclude=True)

    @model_validator(mode="before")
    @classmethod
    def _optional_fields_never_reject(cls, data: Any) -> Any:
        return _sanitize(data)


# The hot path decodes with msgspec into plain dicts (~2 µs per attempt instead of ~5.5 µs with
# pydantic-core and our checks around it; measured in bench/README.md). An optional field too long or of
# the wrong type fails the fast path, and the model truncates or drops it. The pydantic model above stays
# the contract: anything the fast path does not accept as-is (malformed or invalid input, non-ASCII
# account ids, more than 6 fractional digits, ...) is re-read by `AccessAttempt`, which decides and
# names the problem. So the fast path may only accept a subset of what the model accepts, with the same
# values: tests/core/test_hot_path.py checks exactly that.
# The same maxima as the model's, by name.
_MsId = Annotated[str, msgspec.Meta(min_length=1, max_length=ID_MAX)]

class IdentityData(TypedDict):
    iam_id: _MsId
    type: Literal["user", "service_id", "service"]
    account_id: str  # normalised after decoding (AccountId)
    name: NotRequired[Annotated[str, msgspec.Meta(max_length=NAME_MAX)] | None]


class ResourceData(TypedDict, total=False):
    crn: Annotated[str, msgspec.Meta(max_length=CRN_MAX)] | None
    service_name: Annotated[str, msgspec.Meta(max_length=SERVICE_NAME_MAX)] | None


class AttemptData(TypedDict):
    """An AccessAttempt as a plain dict; optional fields may be absent (read them with .get)."""

    id: _MsId
    event_time: str  # RFC 3339, as received; read the instant from Attempt.event_ms
    account_id: str  # normalised after decoding (AccountId)
    identity: IdentityData
    action: _MsId
    resource: NotRequired[ResourceData | None]
    source_ip: NotRequired[Annotated[str, msgspec.Meta(max_length=SOURCE_IP_MAX)] | None]
    user_agent: NotRequired[Annotated[str, msgspec.Meta(max_length=USER_AGENT_MAX)] | None]
