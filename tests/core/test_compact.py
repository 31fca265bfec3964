"""The compact settings table (`core/compact.py`) and the canonical-record reader (`core/settings_fast.py`).

Both are representations: they must never change what a record means. The decision tests (test_settings,
test_simulate, the spec model's property tests) run through them; these pin the exactness edges.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from processor.core.compact import (
    pack_hex_ids,
    pack_version,
    unpack_version,
)
from processor.core.ids import account_key, hex_key, key_text
from processor.core.rules import PackedIds
from processor.core.settings import DEFAULT_RULES, Rule, SettingsHistory, SmallSet, parse_settings, rules_of
from processor.core.settings_fast import fast_rules, fast_settings
from processor.core.times import to_millis

A = "0123456789abcdef0123456789abcdef"
B = "fedcba9876543210fedcba9876543210"
C = "00000000000000000000000000000001"


@pytest.mark.parametrize("text", [
    A.upper(), "0123456789ABCDEF0123456789abcdef", A[:-1], A + "0", "0x" + A[2:], "01 23456789abcdef0123456789abcdef",
    "0123456789abcdef0123456789abcdeg", "crn:v1:" + A[7:], "",
])
def test_only_normal_32_hex_ids_get_a_byte_key(text: str) -> None:
    assert hex_key(text) is None
    assert account_key(text) == text


def test_the_key_is_a_number_exactly_for_32_lower_case_hex_digits() -> None:
    """`account_key` reads hex without a regular expression (the hot path's lookup): checked against one
    on random texts over hex digits of both cases and what `fromhex` or `int(_, 16)` skip or take."""
    import random
    import re

    rule = re.compile("[0-9a-f]{32}").fullmatch
    rng = random.Random(25)
    alphabet = "0123456789abcdefABCDEF x_+\t\u0663"
    texts = [C, "0" * 32, "9" * 32, "f" * 32]
    for _ in range(20_000):
        text = list(rng.choice([A, B, C]))
        for _ in range(rng.choice([0, 0, 1, 2])):
            text[rng.randrange(32)] = rng.choice(alphabet)
        texts.append("".join(text))
    for text in texts:
        key = account_key(text)
        assert isinstance(key, int) == bool(rule(text)), text
        assert key_text(key) == text


def test_hex_ids_round_trip_through_their_key() -> None:
    assert hex_key(A) == bytes.fromhex(A)
    assert key_text(account_key(A)) == A
    assert key_text(account_key("acct-1")) == "acct-1"


@pytest.mark.parametrize("ids", [
    [A[:-1], B + "0"],  # 31 + 33 characters join to 64: each id must be 32 on its own
    [A, "crn:v1:" + B[7:]], [A.upper()], [A, B[:-1] + "G"],
])
def test_allowlists_with_any_other_id_are_not_packed(ids: list[str]) -> None:
    assert pack_hex_ids(ids) is None


def test_packed_allowlists_keep_first_occurrences_once() -> None:
    assert pack_hex_ids([B, A, B]) == bytes.fromhex(B + A)
    assert pack_hex_ids([]) == b""


def test_packed_ids_behave_as_the_set_of_their_text() -> None:
    ids = PackedIds(bytes.fromhex(A + B))
    assert A in ids and B in ids and C not in ids
    # a 16-byte window straddling the two ids is not an id of the list
    straddle = (A + B)[16:48]
    assert straddle not in ids
    assert A.upper() not in ids and "acct-1" not in ids and 5 not in ids
    assert list(ids) == [A, B] and len(ids) == 2
    assert ids == {A, B} and ids == frozenset({B, A}) and ids == SmallSet((B, A)) and SmallSet((A, B)) == ids
    assert ids != {A} and hash(ids) == hash(SmallSet((B, A)))
    assert Rule("monitor", ids) == Rule("monitor", SmallSet((A, B)))


def test_versions_pack_and_unpack_to_the_same_plain_data() -> None:
    shared = Rule("limited", SmallSet((A, B)))
    other = Rule("monitor", SmallSet((C,)))
    empty = Rule("monitor", SmallSet(()))
    for rules in [(shared, None, shared), (None, other, shared), DEFAULT_RULES, (empty, None, None)]:
        for partition, offset in [(2, 12345678901), (None, None)]:
            packed = pack_version(253402300799999, rules, 3, partition, offset)
            assert packed is not None
            effective, got, topic, p, o = unpack_version(packed)
            assert (effective, got, topic, p, o) == (253402300799999, rules, 3, partition, offset)
            assert [r is None for r in got] == [r is None for r in rules]
    first, _, third = unpack_version(pack_version(0, (shared, None, shared), 0, 0, 0) or b"")[1]
    assert first is third  # identical types stay one Rule


@pytest.mark.parametrize(("effective", "topic", "partition", "offset"), [
    (-1, 0, 0, 0), (2**48, 0, 0, 0), (0, 4, 0, 0), (0, 0, 1023, 0), (0, 0, 0, 2**38 - 1), (0, 0, -2, 0),
])
def test_versions_out_of_the_packed_ranges_stay_objects(effective: int, topic: int, partition: int,
                                                         offset: int) -> None:
    assert pack_version(effective, DEFAULT_RULES, topic, partition, offset) is None
    assert pack_version(0, DEFAULT_RULES, 3, 1022, 2**38 - 2) is not None


@pytest.mark.parametrize("rule", [
    Rule("monitor", SmallSet(("acct-1",))),
    Rule("limited", frozenset(f"{i:032x}" for i in range(9))),
])
def test_versions_that_do_not_fit_stay_objects(rule: Rule) -> None:
    assert pack_version(0, (rule, None, None), 0, 0, 0) is None


def doc(types: dict[str, Any], **top: Any) -> bytes:
    return json.dumps({"account_id": A, "external_account_identity_interaction": {"identity_types": types},
                       **top}).encode()


CANONICAL = [
    doc({"user": {"state": "monitor", "external_allowed_accounts": [B, C]}}, updated_at="2026-01-01T00:00:00Z"),
    doc({"user": {"state": "limited", "external_allowed_accounts": [B]}, "service": {"state": "limited",
         "external_allowed_accounts": [B]}, "service_id": {"state": "enabled", "external_allowed_accounts": [C]}}),
    doc({}, updated_at="2026-01-01T00:00:00.5Z", note={"any": [1, 2.5, None]}),
    doc({"service_id": {"state": "monitor", "external_allowed_accounts": [f"{i:032x}" for i in range(20)]}},
        updated_at="2026-06-30T23:59:59.123456Z"),
    b'{"account_id":"' + A.encode() + b'","external_account_identity_interaction":{"identity_types":'
    b'{"user":{"state":"enabled","state":"limited"}}},"updated_at":"2026-01-01T00:00:00Z"}',  # last key wins
]


@pytest.mark.parametrize("raw", CANONICAL)
def test_canonical_records_read_fast_mean_what_the_model_says(raw: bytes) -> None:
    fast = fast_settings(raw, A)
    assert fast is not None
    model = parse_settings(raw)
    assert fast[0] == (None if model.updated_at is None else to_millis(model.updated_at))
    assert fast_rules(fast[1]) == rules_of(model)


NOT_CANONICAL = [
    doc({"users": {"state": "monitor"}}),  # near miss: the model rejects it
    doc({"trusted_profile": {"state": "monitor"}}),  # unknown: the model counts it
    doc({"user": {"state": "monitor", "external_allowed_accounts": [" " + B]}}),  # the model normalises it
    doc({"user": {"state": "monitor", "external_allowed_accounts": ["acct-1"]}}),
    doc({"user": {"state": "paused"}}),
    doc({"user": None}),
    doc({}, updated_at=None),
    doc({}, updated_at="2026-01-01t00:00:00z"),
    doc({}, updated_at="2026-01-01T00:00:00+01:00"),
    doc({}, updated_at="2026-02-30T00:00:00Z"),
    doc({}, updated_at="2026-01-01T00:00:00.1234567Z"),
    doc({}, note=float("nan")),
    doc({}).replace(A.encode(), A.upper().encode()),
    json.dumps({"account_id": A}).encode(),
    b"[" * 100 + b"]" * 100,
    b"not json",
]


@pytest.mark.parametrize("raw", NOT_CANONICAL)
def test_anything_else_is_left_to_the_model(raw: bytes) -> None:
    assert fast_settings(raw, A) is None


def test_a_table_mixing_id_forms_decides_exactly() -> None:
    """Hex and other ids, in keys and allowlists, side by side: every lookup finds its own account."""
    from processor.core.policy import evaluate

    h = SettingsHistory()
    records = {
        A: {"user": {"state": "monitor", "external_allowed_accounts": [B, "crn:v1:x"]}},
        "crn:v1:x": {"user": {"state": "limited", "external_allowed_accounts": [A]}},
        B: {"user": {"state": "limited", "external_allowed_accounts": [C]}},
    }
    for i, (acct, types) in enumerate(records.items()):
        raw = json.dumps({"account_id": acct, "external_account_identity_interaction": {"identity_types": types}})
        assert h.apply_record(acct.encode(), raw.encode(), 1000, "s", 0, i) is None
    assert sorted(h.accounts()) == sorted(records)

    def outcome(acct: str, ident: str) -> str:
        version, _ = h.lookup(acct, 2000)
        return evaluate(acct, ident, "user", version.rules if version else None).outcome

    assert outcome(A, B) == "permit" and outcome(A, "crn:v1:x") == "permit" and outcome(A, C) == "would_be_deny"
    assert outcome("crn:v1:x", A) == "permit" and outcome("crn:v1:x", B) == "enforced_deny"
    assert outcome(B, C) == "permit" and outcome(B, A) == "enforced_deny"
    assert h.lookup(A.upper(), 2000) == (None, True)
    version = h.latest(B)
    assert version is not None and (version.topic, version.partition, version.offset) == ("s", 0, 2)


def test_the_bootstrap_step_has_the_effect_of_apply_record() -> None:
    """`apply_canonical_run` (the table's first try for every record) against `apply_record` alone: the same
    versions, counters, resets and answers, for canonical, other, repeated and rejected records."""
    def record(i: int) -> tuple[bytes | None, bytes | None]:
        acct = f"{i % 7:032x}"
        state = ("enabled", "monitor", "limited")[i % 3]
        if i % 5 == 4:
            return acct.encode(), None  # a tombstone
        if i % 11 == 10:
            return acct.encode(), b"{not json"
        types = {"user": {"state": state, "external_allowed_accounts": [f"{i:032x}", B]}}
        if i % 4 == 3:
            types["service"] = {"state": "monitor", "external_allowed_accounts": [f"{j:032x}" for j in range(12)]}
        elif i % 4 == 1:  # the usual record: three alike types (packed inline by `packed_record`)
            types = dict.fromkeys(("user", "service_id", "service"), types["user"])
        body = {"account_id": acct, "external_account_identity_interaction": {"identity_types": types}}
        if i % 2:
            body["updated_at"] = f"2026-01-01T00:{i % 60:02d}:00Z"
        key = acct.upper().encode() if i % 13 == 12 else acct.encode()
        if i % 17 == 16:  # 32 characters that `int(_, 16)` reads as the same number: not the normal form
            key = ("0x" + acct[2:]).encode() if i % 2 else (" " + acct[1:]).encode()
        return key, json.dumps(body).encode()

    plain, fast = SettingsHistory(), SettingsHistory()
    fast.bind_topic("s")
    took = 0
    for i in range(200):
        key, value = record(i)
        ts = 1_767_225_600_000 + i
        want = plain.apply_record(key, value, ts, "s", i % 3, i)
        if fast.apply_canonical_run([(key, value, ts, i % 3, i)], 0, "s") == 1:
            took += 1
            assert want is None
        else:
            got = fast.apply_record(key, value, ts, "s", i % 3, i)
            assert (got and got.reason) == (want and want.reason)
    assert took >= 5
    # The same records as the table reads them: runs of one-step records, each other one in its place.
    runs = SettingsHistory()
    runs.bind_topic("s")
    batch = [(*record(i), 1_767_225_600_000 + i, i % 3, i) for i in range(200)]
    i = 0
    while i < len(batch):
        i = runs.apply_canonical_run(batch, i, "s")
        if i < len(batch):
            key, value, ts, p, off = batch[i]
            runs.apply_record(key, value, ts, "s", p, off)
            i += 1
    for h in (fast, runs):
        assert (h.versions, h.applied, h.rejected, len(h)) == (
            plain.versions, plain.applied, plain.rejected, len(plain))
        assert sorted(h.accounts()) == sorted(plain.accounts())
        assert h.reset_accounts() == plain.reset_accounts()  # what pruning may forget
        for acct in plain.accounts():
            for t in (0, 1_767_225_600_000 + 100, 1_767_225_600_000 + 3_600_000):
                (a, exact_a), (b, exact_b) = plain.lookup(acct, t), h.lookup(acct, t)
                assert exact_a == exact_b and (a is None) == (b is None)
                if a is not None and b is not None:
                    assert (a.effective_ms, a.rules, a.topic, a.partition, a.offset) == (
                        b.effective_ms, b.rules, b.topic, b.partition, b.offset)


class _Msg:
    """The parts of a confluent_kafka Message that SettingsTable.poll reads."""

    def __init__(self, key: bytes, value: bytes, offset: int) -> None:
        self._key, self._value, self._offset = key, value, offset

    def error(self) -> None:
        return None

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes:
        return self._key

    def value(self) -> bytes:
        return self._value

    def timestamp(self) -> tuple[int, int]:
        return (1, 1_767_225_600_000)


class RunSpy:
    """A SettingsHistory that tells `note` of each `apply_canonical_run` call. By delegation: the class
    may be compiled (processor/native.py), and a compiled class takes no interpreted subclass."""

    def __init__(self, note: Any) -> None:
        self._history = SettingsHistory()
        self._note = note

    def __getattr__(self, name: str) -> Any:
        return getattr(self._history, name)

    def apply_canonical_run(self, records: Any, start: int, topic: Any) -> int:
        end = self._history.apply_canonical_run(records, start, topic)
        self._note(records, start, end)
        return end


@pytest.mark.parametrize("enabled", [True, False])
def test_table_poll_applies_a_batch_with_gc_off_and_restores_it(enabled: bool) -> None:
    """No collection runs while a fetched batch is applied (its objects are acyclic); the collector is
    left as it was found, and the canonical records land in the table with their positions."""
    import gc

    from processor.kafka.table import SettingsTable

    seen: list[bool] = []

    class Consumer:
        def consume(self, n: int, timeout: float) -> list[_Msg]:
            return [_Msg(acct.encode(), doc({}).replace(A.encode(), acct.encode()), i)
                    for i, acct in enumerate((A, B, C))]

    def note(records: Any, start: int, end: int) -> None:
        seen.append(gc.isenabled())

    table = SettingsTable.__new__(SettingsTable)
    table.topic, table.metrics, table.consumer, table.on_record = "s", None, Consumer(), None
    table.history = RunSpy(note)  # type: ignore[assignment]
    table.history.bind_topic("s")
    table.position = {0: 0}
    was = gc.isenabled()
    (gc.enable if enabled else gc.disable)()
    try:
        assert table.poll(0.0) == 3
        assert gc.isenabled() is enabled
    finally:
        (gc.enable if was else gc.disable)()
    assert seen == [False]  # one run: the three records in one call
    assert table.position == {0: 3} and sorted(table.history.accounts()) == sorted((A, B, C))


def test_the_tools_view_is_told_of_every_record_the_fast_path_included() -> None:
    """The tools' DocumentView keeps raw documents beside the history, told of each record through the
    table's `on_record` hook with the history's decision: canonical records the bootstrap step applies,
    model-path records, rejections and tombstones alike, each document at its effective time."""
    from processor.core.settings_view import DocumentView, Entry
    from processor.kafka.table import SettingsTable

    ts = 1_767_225_600_000
    other = json.dumps({"account_id": "acct-x", "updated_at": "2025-12-01T00:00:00Z",
                        "external_account_identity_interaction": {"identity_types": {}}}).encode()
    records: list[tuple[bytes, bytes | None]] = [
        (A.encode(), CANONICAL[0]),  # canonical, updated_at 2026-01-01T00:00:00Z
        (B.encode(), doc({}).replace(A.encode(), B.encode())),  # canonical, no updated_at: the timestamp
        (b"acct-x", other),  # not a 32-hex key: the model's path
        (B.encode(), b"{"),  # rejected: B keeps its version
        (b"acct-x", None),  # tombstone
    ]
    fast: list[int] = []

    class Consumer:
        def consume(self, n: int, timeout: float) -> list[_Msg]:
            return [_Msg(k, v, i) for i, (k, v) in enumerate(records)]  # type: ignore[arg-type]

    def note(records: Any, start: int, end: int) -> None:
        fast.extend(r[4] for r in records[start:end])

    view = DocumentView(RunSpy(note))  # type: ignore[arg-type]
    table = SettingsTable.__new__(SettingsTable)
    table.topic, table.metrics, table.consumer, table.on_record = "s", None, Consumer(), view.note
    table.history = view.history
    table.history.bind_topic("s")
    table.position = {0: 0}
    assert table.poll(0.0) == 5
    assert fast == [0, 1] and view.records == 5
    new_year = to_millis_text("2026-01-01T00:00:00Z")
    assert view.entries[A] == [Entry(A, new_year, ts, "s", 0, 0, json.loads(CANONICAL[0]))]
    assert [(e.effective_ms, e.offset, e.raw is not None) for e in view.entries[B]] == [(ts, 1, True)]
    assert [(e.effective_ms, e.offset, e.raw) for e in view.entries["acct-x"]] == [
        (to_millis_text("2025-12-01T00:00:00Z"), 2, json.loads(other)), (ts, 4, None)]
    assert [(r.account, r.offset, r.reason) for r in view.rejections[B]] == [(B, 3, "bad_json")]
    assert view.keys == {A: {A.encode(): False}, B: {B.encode(): False}, "acct-x": {b"acct-x": True}}
    assert view.live_keys("acct-x") == [] and view.live_keys(B) == [B.encode()]
    current = view.current(B, ts)
    assert current.exists and current.entry is not None and current.entry.offset == 1
    assert [r.offset for r in current.rejected] == [3] and view.has_invalid_latest(B)
    assert not view.current("acct-x", ts).exists


def to_millis_text(text: str) -> int:
    from datetime import datetime

    return to_millis(datetime.fromisoformat(text.replace("Z", "+00:00")))
