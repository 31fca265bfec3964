"""`settings_fast.packed_record`, the bootstrap's one-step reading of a record: the packed version the
general path (the pydantic model, `rules_of`, `compact.pack_version`) makes of the same record, or None,
never a version of a record the model rejects. Records are generated around the canonical form's edges."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import event, given, settings
from hypothesis import strategies as st

from processor.core.compact import pack_version
from processor.core.settings import InvalidSettings, parse_settings, rules_of
from processor.core.settings_fast import packed_record
from processor.core.times import MAX_TIME_MS, to_millis

ACCOUNT = "0123456789abcdef0123456789abcdef"
HEX = [f"{i:032x}" for i in range(1, 12)]
#: Near misses of a hex id: upper case, short, long, a space, another allowed form, a control character.
ODD = [HEX[0].upper(), HEX[0][:-1], HEX[0] + "0", " " + HEX[0][1:], "crn:v1:acct-1", "a\u0000" + HEX[0][2:],
       "0x" + HEX[0][2:], "NaN" + HEX[0][3:]]
#: Mostly canonical (unique hex ids, up to past SMALL_ALLOWLIST), sometimes with a near miss or a repeat.
ids = (st.lists(st.sampled_from(HEX), unique=True, max_size=10)
       | st.lists(st.sampled_from(HEX[:3]) | st.sampled_from(ODD), max_size=4))
config = st.fixed_dictionaries({"state": st.sampled_from(["enabled", "monitor", "limited", "monitor", "limited",
                                                          "Monitor"]),
                                "external_allowed_accounts": ids})
#: Identical configs across types are common (one Rule shared): drawn once and reused.
types = st.builds(lambda cfgs, pick, odd: {name: cfgs[i % len(cfgs)] for name, i in pick.items()} | odd,
                  st.lists(config, min_size=1, max_size=3),
                  st.dictionaries(st.sampled_from(["user", "service_id", "service"]), st.integers(0, 2),
                                  max_size=3),
                  st.sampled_from([{}, {}, {}, {"robot": {"state": "monitor"}}, {"user": None}]))
updated = st.none() | st.sampled_from(["2026-01-01T00:00:00Z", "2026-01-01T00:00:00.5Z", "2026-01-01 00:00:00Z",
                                       "9999-12-31T23:59:59Z", "1969-12-31T23:59:59Z", "2026-02-30T00:00:00Z"])
extra = st.sampled_from([{}, {}, {}, {"note": "x"}, {"deep": [[[1]]]}])


def general(raw: bytes, timestamp_ms: int, partition: int, offset: int) -> bytes | InvalidSettings | None:
    """What the general path holds for a new account: the packed version, None when it does not pack
    (a plain object), or the model's rejection."""
    try:
        doc = parse_settings(raw)
    except InvalidSettings as exc:
        return exc
    if doc.account_id != ACCOUNT or doc.external_account_identity_interaction.identity_types.model_extra:
        return None  # the caller's business (key check, unknown-type counter): never the fast path's
    effective = timestamp_ms if doc.updated_at is None else to_millis(doc.updated_at)
    if effective > MAX_TIME_MS:
        return None
    return pack_version(effective, rules_of(doc), 0, partition, offset)


@settings(max_examples=400, deadline=None)
@given(types, updated, extra, st.sampled_from([0, 1_767_225_600_000, -5, MAX_TIME_MS + 1]),
       st.sampled_from([0, 2, 1023]), st.sampled_from([0, 7, 2**38]))
def test_packed_record_is_what_the_general_path_packs(types: dict[str, Any], updated: str | None,
                                                      extra: dict[str, Any], timestamp_ms: int, partition: int,
                                                      offset: int) -> None:
    body: dict[str, Any] = {"account_id": ACCOUNT, "external_account_identity_interaction": {"identity_types": types},
                            **extra}
    if updated is not None:
        body["updated_at"] = updated
    raw = json.dumps(body).encode()
    got = packed_record(raw, ACCOUNT, timestamp_ms, 0, partition, offset)
    event("one step" if got is not None else "left to apply_record")
    if got is not None:
        assert got == general(raw, timestamp_ms, partition, offset)


def test_the_canonical_form_takes_the_one_step_path() -> None:
    """The records producers write (and the bench preloads) do not fall back: the speed depends on it."""
    for state, allowed in (("enabled", []), ("monitor", HEX[:3]), ("limited", HEX[:5])):
        cfg = {"state": state, "external_allowed_accounts": allowed}
        raw = json.dumps({"account_id": ACCOUNT, "external_account_identity_interaction": {"identity_types": {
            t: cfg for t in ("user", "service_id", "service")}}, "updated_at": "2026-01-01T00:00:00Z"}).encode()
        got = packed_record(raw, ACCOUNT, 5, 0, 1, 2)
        assert got is not None and got == general(raw, 5, 1, 2)
    assert packed_record(raw, HEX[0], 5, 0, 1, 2) is None  # the key names another account


def test_an_allowlist_too_large_to_pack_is_left_to_the_general_path() -> None:
    for n, packs in ((8, True), (9, False)):  # SMALL_ALLOWLIST: 8
        raw = json.dumps({"account_id": ACCOUNT, "external_account_identity_interaction": {"identity_types": {
            "user": {"state": "monitor", "external_allowed_accounts": HEX[:n]}}}}).encode()
        assert (packed_record(raw, ACCOUNT, 5, 0, 1, 2) is not None) is packs
        assert (general(raw, 5, 1, 2) is not None) is packs
