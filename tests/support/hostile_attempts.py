"""Hostile access attempts (Hypothesis): every required field missing or of the wrong type, oversized
values, invalid JSON; drawn reproducibly for the fault suite and the soak, with the reasons expected."""

from __future__ import annotations

import json
import random
from typing import Any

import hypothesis
from hypothesis import strategies as st

from processor.core.attempts import MIN_EVENT_TIME_MS as MIN_EVENT_MS
from processor.core.ids import IDENTITY_TYPES
from processor.core.times import rfc3339_millis
from tests.support.fault_inputs import (
    SEED,
)
from tests.support.processor_harness import (
    read_topic,
)

HOSTILE_TARGET = "a3f1c0d2e4b5968778695a4b3c2d1e0f"
MB = 1024 * 1024
REQUIRED_PATHS = [("id",), ("event_time",), ("account_id",), ("identity",), ("identity", "iam_id"),
                  ("identity", "type"), ("identity", "account_id"), ("action",)]


def good_attempt(attempt_id: str, now_ms: int) -> dict[str, Any]:
    return {"id": attempt_id, "event_time": rfc3339_millis(now_ms - 60_000), "account_id": HOSTILE_TARGET,
            "identity": {"iam_id": "IBMid-1", "type": "user", "account_id": "0b1c2d3e4f5a69788796a5b4c3d2e1f0"},
            "action": "cloud-object-storage.object.read"}


def _set(obj: dict[str, Any], path: tuple[str, ...], value: Any) -> dict[str, Any]:
    obj = json.loads(json.dumps(obj))
    inner = obj
    for part in path[:-1]:
        inner = inner[part]
    if value is _DROP:
        del inner[path[-1]]
    else:
        inner[path[-1]] = value
    return obj


_DROP = object()
_NOT_A_STRING = st.one_of(st.none(), st.booleans(), st.integers(), st.lists(st.integers(), max_size=3),
                          st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))
_NOT_A_TIME = st.one_of(st.none(), st.booleans(), st.lists(st.integers(), max_size=2), st.just({}),
                        st.sampled_from(["", "yesterday", "2026-13-45T00:00:00Z", "2026-11-27T12:00:00",
                                         "2026-11-27 12:00", "12:00:00Z", "2026-11-27T25:00:00Z"]))


@st.composite
def hostile_payloads(draw: st.DrawFn, now_ms: int) -> tuple[str, bytes]:
    """(category, bytes): one valid attempt with exactly one mutation that SPEC §4 makes invalid."""
    base = good_attempt(f"h-{draw(st.integers(0, 10**9))}", now_ms)
    kind = draw(st.sampled_from(["missing", "wrong_type", "bad_time", "time_range", "identity_type",
                                 "bad_string", "bad_utf8", "deep", "duplicate_key", "nan", "truncated",
                                 "not_object"]))
    if kind == "missing":
        return kind, json.dumps(_set(base, draw(st.sampled_from(REQUIRED_PATHS)), _DROP)).encode()
    if kind == "wrong_type":
        path = draw(st.sampled_from([p for p in REQUIRED_PATHS if p != ("event_time",)]))
        value = draw(_NOT_A_STRING.filter(lambda v: not isinstance(v, dict)) if len(path) == 1 and path[0] == "identity"
                     else _NOT_A_STRING)
        return kind, json.dumps(_set(base, path, value)).encode()
    if kind == "bad_time":
        return kind, json.dumps(_set(base, ("event_time",), draw(_NOT_A_TIME))).encode()
    if kind == "time_range":  # before 2000, or more than the 1 h allowance ahead of the clock
        ms = draw(st.one_of(st.integers(-62_135_596_800_000, MIN_EVENT_MS - 1),
                            st.integers(now_ms + 3_600_000 + 60_000, 253_402_300_799_000)))
        return kind, json.dumps(_set(base, ("event_time",), rfc3339_millis(ms))).encode()
    if kind == "identity_type":
        value = draw(st.text(max_size=12).filter(lambda t: t not in IDENTITY_TYPES))
        return kind, json.dumps(_set(base, ("identity", "type"), value)).encode()
    if kind == "bad_string":  # empty, blank or overlong ids
        path = draw(st.sampled_from([("id",), ("account_id",), ("identity", "iam_id"), ("identity", "account_id"),
                                     ("action",)]))
        value = draw(st.sampled_from(["", "   ", "x" * 5000]))
        if value == "   " and path in (("id",), ("identity", "iam_id"), ("action",)):
            value = ""  # only account ids are trimmed before the emptiness check
        return kind, json.dumps(_set(base, path, value)).encode()
    if kind == "bad_utf8":
        raw = json.dumps(base).encode()
        cut = raw.index(b'"h-') + 2
        return kind, raw[:cut] + draw(st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf8\x88\x80\x80"])) \
            + raw[cut:]
    if kind == "deep":
        depth = draw(st.integers(300, 100_000))
        return kind, json.dumps(base).encode()[:-1] + b', "extra": ' + b"[" * depth + b"]" * depth + b"}"
    if kind == "duplicate_key":  # the last occurrence is invalid
        path = draw(st.sampled_from(["id", "event_time", "account_id", "identity"]))
        return kind, json.dumps(base).encode()[:-1] + f', "{path}": null}}'.encode()
    if kind == "nan":  # not JSON (RFC 8259), also where the model would ignore the field ("extra")
        path = draw(st.sampled_from(["id", "event_time", "account_id", "action", "extra"]))
        raw = json.dumps(_set(base, (path,), "@@")).encode()
        return kind, raw.replace(b'"@@"', draw(st.sampled_from([b"NaN", b"Infinity", b"-Infinity"])))
    if kind == "truncated":
        raw = json.dumps(base).encode()
        return kind, raw[:draw(st.integers(0, len(raw) - 1))]
    value = draw(st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=20),
                           st.lists(st.integers(), max_size=3)))
    return kind, json.dumps(value).encode()


def draw_examples(strategy: st.SearchStrategy[Any], n: int, seed: int) -> list[Any]:
    """n examples of a strategy, reproducibly for a seed, outside a @given test."""
    out: list[Any] = []

    @hypothesis.seed(seed)
    @hypothesis.settings(max_examples=n, database=None, deadline=None, phases=[hypothesis.Phase.generate],
                         suppress_health_check=list(hypothesis.HealthCheck))
    @hypothesis.given(strategy)
    def collect(value: Any) -> None:
        out.append(value)

    collect()
    return out


#: The DLQ reasons a mutation may honestly produce (the first problem pydantic reports wins).
HOSTILE_REASONS = {
    "missing": {"missing_field"}, "wrong_type": {"wrong_type", "unknown_identity_type"},
    "bad_time": {"bad_timestamp"}, "time_range": {"bad_timestamp"}, "identity_type": {"unknown_identity_type"},
    "bad_string": {"invalid_field"}, "bad_utf8": {"bad_json"}, "deep": {"bad_json"},
    "duplicate_key": {"wrong_type", "bad_timestamp"}, "nan": {"bad_json", "wrong_type", "bad_timestamp"},
    "truncated": {"bad_json"}, "not_object": {"wrong_type"}, "random_bytes": {"bad_json", "wrong_type"},
    "huge": {"oversize"}, "tombstone": {"bad_json"}, "empty": {"bad_json"},
}


def _hostile_records(now_ms: int, rng: random.Random) -> tuple[list[tuple[bytes | None, bytes | None]],
                                                                  list[str | None]]:
    """The hostile inputs, shuffled, with valid attempts among them (kind None), including one whose
    keys repeat: the last occurrence counts. Returns the records and each record's kind."""
    hostile: list[tuple[str, bytes | None]] = draw_examples(hostile_payloads(now_ms), 500, SEED)
    hostile += [("random_bytes", rng.randbytes(rng.randint(1, 3000))) for _ in range(150)]
    hostile += [("huge", b'{"id": "' + b"x" * (10 * MB) + b'"}'), ("huge", rng.randbytes(10 * MB)),
                ("huge", json.dumps({**good_attempt("big", now_ms), "user_agent": "u" * 300_000}).encode()),
                ("tombstone", None), ("empty", b"")]
    rng.shuffle(hostile)
    keys = [None, b"", HOSTILE_TARGET.encode(), b"\xff\xfe binary key"]
    # Valid attempts among them, including one whose keys repeat: the last occurrence counts.
    valid = [json.dumps(good_attempt(f"canary-{i}", now_ms)).encode() for i in range(len(hostile) // 20)]
    valid.append(json.dumps(good_attempt("dup-first", now_ms)).encode()[:-1] + b', "id": "dup-last"}')
    records: list[tuple[bytes | None, bytes | None]] = []
    kinds: list[str | None] = []
    for i, (kind, value) in enumerate(hostile):
        records.append((keys[i % len(keys)], value))
        kinds.append(kind)
        if i % 20 == 0 and valid:
            records.append((HOSTILE_TARGET.encode(), valid.pop()))
            kinds.append(None)
    records += [(HOSTILE_TARGET.encode(), v) for v in valid]
    kinds += [None] * len(valid)
    return records, kinds


def _dead_letters_not_as_sent(bootstrap: str, dlq: str, sent: dict[tuple[int, int], Any]) -> list[str]:
    """Dead letters whose reason, detail, key or value do not match the hostile input at their source
    coordinates (a value over 1 MB may be truncated, and then says so)."""
    wrong: list[str] = []
    for m in read_topic(bootstrap, dlq):
        h = dict(m.headers() or [])
        (key, value), kind = sent[(int(h["source.partition"]), int(h["source.offset"]))]
        reason = h["error.reason"].decode()
        if reason not in HOSTILE_REASONS[kind] or not h.get("error.detail") or m.key() != key:
            wrong.append(f"{kind}: {reason} {h.get('error.detail', b'')[:80]!r}")
        if m.value() != value and not (value and len(value) > MB and h.get("error.value.truncated")):
            wrong.append(f"{kind}: value not forwarded ({len(m.value() or b'')} of {len(value or b'')} bytes)")
    return wrong
