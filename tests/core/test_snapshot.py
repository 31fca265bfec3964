"""The settings table's snapshot (`core/snapshot.py`) and its file (`kafka/local_state.py`), without Kafka.

A snapshot must give back a table that decides, counts and goes on exactly like the one saved, and a
snapshot that is not a faithful copy of the topic as it is now must be refused with one reason. The
restart on a real broker (and the byte-identical events) is tests/test_local_state.py.
"""

from __future__ import annotations

import io
import json
import logging
import struct
from pathlib import Path
from typing import Any

import pytest

from processor.core import snapshot
from processor.core.ids import IDENTITY_TYPES
from processor.core.settings import BEGINNING_OF_TIME, SettingsHistory
from processor.kafka import local_state
from processor.kafka.local_state import LocalState

TOPIC = "iam.account-settings"
HEX = [f"{i:032x}" for i in range(1, 40)]
T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z


def doc(account: str, types: dict[str, Any], updated_ms: int | None = None, **extra: Any) -> bytes:
    d: dict[str, Any] = {"account_id": account, "external_account_identity_interaction": {"identity_types": types}}
    if updated_ms is not None:
        d["updated_at"] = f"2026-01-01T00:{(updated_ms - T0) // 60000:02d}:{(updated_ms - T0) // 1000 % 60:02d}Z"
    d.update(extra)
    return json.dumps(d).encode()


def rule(state: str, ids: list[str]) -> dict[str, Any]:
    return {"state": state, "external_allowed_accounts": ids}


def records() -> list[tuple[bytes | None, bytes | None, int]]:
    """Every kind of state a table holds: packed hex accounts, text ids, several versions, resets, a big
    allowlist, rejected records with and without a valid version, unknown identity types, a tombstone."""
    out: list[tuple[bytes | None, bytes | None, int]] = []
    for i, a in enumerate(HEX[:20]):
        types = {} if i % 3 == 0 else {t: rule(("monitor", "limited")[i % 2], HEX[i + 1 : i + 1 + i % 5])
                                       for t in IDENTITY_TYPES[: 1 + i % 3]}
        out.append((a.encode(), doc(a, types, T0 + i * 1000), T0))
    out.append((b"acct-text", doc("acct-text", {"user": rule("limited", ["ext-1", "Ext-2"])}), T0 + 5))
    out.append((b"acct-big", doc("acct-big", {"service": rule("monitor", HEX[:12])}), T0 + 6))
    for minute in (1, 3, 2):  # several versions, published out of effective order
        out.append((HEX[1].encode(), doc(HEX[1], {"user": rule("limited", HEX[:minute])}, T0 + minute * 60000), T0))
    out.append((HEX[2].encode(), None, T0 + 120000))  # a tombstone: reset from its timestamp
    out.append((HEX[4].encode(), b"{not json", T0))  # rejected, a valid version held
    out.append((b"acct-never", doc("acct-other", {}), T0))  # rejected (key mismatch), nothing valid held
    out.append((None, doc("x", {}), T0))  # no key
    out.append((b"acct-unknown", doc("acct-unknown", {"user": rule("monitor", []), "robot": rule("limited", [])}), T0))
    out.append((b"acct-early", doc("acct-early", {"user": rule("limited", [])}), T0 - 10))
    return out


def built(recs: list[tuple[bytes | None, bytes | None, int]] | None = None) -> SettingsHistory:
    h = SettingsHistory()
    h.bind_topic(TOPIC)
    for offset, (k, v, ts) in enumerate(recs if recs is not None else records()):
        if h.apply_canonical_run([(k, v, ts, offset % 2, offset)], 0, TOPIC) == 0:
            h.apply_record(k, v, ts, TOPIC, offset % 2, offset)
    return h


ORIGIN = snapshot.Origin(TOPIC, "cluster-1", "topic-id-1", {0: 20, 1: 19})


def encoded(h: SettingsHistory, origin: snapshot.Origin = ORIGIN) -> bytes:
    return b"".join(snapshot.encode(h, origin))


def loaded(data: bytes) -> SettingsHistory:
    reader = snapshot.Reader(io.BytesIO(data).read)
    body = reader.load()
    h = SettingsHistory()
    h.bind_topic(TOPIC)
    snapshot.restore(h, reader.origin, body)
    return h


def state(h: SettingsHistory) -> dict[str, Any]:
    """Everything a decision, a tool or a gauge reads, as plain data."""
    probes = [BEGINNING_OF_TIME, T0 - 1, T0, T0 + 1500, T0 + 61000, T0 + 150000, T0 + 10**9]
    looks = {}
    for account in sorted(h.accounts()):
        for t in probes:
            v, exact = h.lookup(account, t)
            assert v is not None
            looks[account, t] = (v.effective_ms, v.topic, v.partition, v.offset, exact,
                                 [None if r is None else (r.state, sorted(r.allowed)) for r in v.rules])
    invalid = [(r.account, r.reason, r.detail, r.topic, r.partition, r.offset, r.timestamp_ms, r.has_valid_version)
               for r in h.invalid_latest()]
    return {"looks": looks, "invalid": invalid, "len": len(h), "versions": h.versions, "applied": h.applied,
            "rejected": h.rejected, "unknown": h.unknown_identity_types, "resets": h.reset_accounts(),
            "multi": set(h._multi), "topics": list(h._topics), "gauges": (h.invalid_latest_count(),
                                                                         h.without_valid_version_count())}


def test_every_field_of_the_history_is_saved_rebuilt_or_deliberately_not() -> None:
    named = set(snapshot.SAVED) | set(snapshot.DERIVED) | set(snapshot.NOT_SAVED)
    h = SettingsHistory()  # compiled (processor/native.py), its fields are listed in __mypyc_attrs__
    fields = set(vars(h)) if hasattr(h, "__dict__") else set(type(h).__mypyc_attrs__)  # type: ignore[attr-defined]
    assert fields == named, f"fields the snapshot does not account for: {fields - named}; gone: {named - fields}"


def test_a_restored_table_holds_exactly_what_was_saved() -> None:
    h = built()
    want = state(h)
    assert want["multi"] and want["resets"] and len(want["invalid"]) == 2 and want["unknown"] == 1
    assert any(not isinstance(v, bytes) for v in h._accounts.values()), "some versions are plain objects"
    assert sum(isinstance(v, bytes) for v in h._accounts.values()) > 10, "most are packed"
    assert state(loaded(encoded(h))) == want


def test_the_restored_reset_list_shares_the_tables_keys() -> None:
    """Memory: the reset candidates point at the table's own key objects, not at copies read from the file."""
    saved = built()
    big = "fe" * 16  # a 128-bit key (the small ones are CPython's shared small ints either way)
    assert saved.apply_record(big.encode(), None, T0, TOPIC, 0, 999) is None  # a tombstone: a reset
    h = loaded(encoded(saved))
    keys = {id(k) for k in h._accounts}
    assert int(big, 16) in h._resets and all(id(k) in keys for k in h._resets)


def test_a_restored_table_goes_on_like_the_one_saved() -> None:
    """The tail read after a restart, and pruning later, act on the restored table as on the original."""
    original, restored = built(), loaded(encoded(built()))
    tail = [(HEX[1].encode(), doc(HEX[1], {"service": rule("monitor", [])}, T0 + 90000), T0),
            (HEX[4].encode(), doc(HEX[4], {}), T0 + 3), (HEX[5].encode(), None, T0 + 4),
            (b"acct-never", b"[]", T0 + 5), (HEX[38].encode(), doc(HEX[38], {"user": rule("limited", [])}), T0)]
    for h in (original, restored):
        for offset, (k, v, ts) in enumerate(tail, 100):
            if h.apply_canonical_run([(k, v, ts, 0, offset)], 0, TOPIC) == 0:
                h.apply_record(k, v, ts, TOPIC, 0, offset)
    assert state(restored) == state(original)
    for h in (original, restored):
        h.retention_ms = 1000
        h.observe(0, T0 + 10**9)  # prunes
    assert state(restored) == state(original)


def test_only_a_table_no_attempt_has_touched_is_saved() -> None:
    h = built()
    h.observe(("attempts", 0), T0)
    with pytest.raises(ValueError, match="no attempt has touched"):
        encoded(h)


def test_a_snapshot_is_restored_into_an_empty_table_only() -> None:
    data = encoded(built())
    reader = snapshot.Reader(io.BytesIO(data).read)
    with pytest.raises(ValueError, match="empty history"):
        snapshot.restore(built(), reader.origin, reader.load())


def reason(data: bytes) -> str:
    with pytest.raises(snapshot.Unusable) as exc:
        snapshot.Reader(io.BytesIO(data).read).load()
    return str(exc.value)


def test_a_corrupt_snapshot_is_refused() -> None:
    data = encoded(built())
    assert reason(b"") == "corrupt: not a settings snapshot (bad magic)"
    assert reason(b"PK\x03\x04" + data[4:]) == "corrupt: not a settings snapshot (bad magic)"
    for cut in (len(snapshot.MAGIC) + 3, len(snapshot.MAGIC) + 20, len(data) // 2, len(data) - 1):
        assert reason(data[:cut]).startswith("corrupt: "), cut
    assert reason(data + b"x") == "corrupt: truncated or trailing bytes"
    middle = len(data) // 2
    flipped = data[:middle] + bytes([data[middle] ^ 0x01]) + data[middle + 1 :]
    assert reason(flipped).startswith("corrupt: "), "a flipped bit in the body"
    tail = len(data) - len(snapshot.END) - 2
    assert reason(data[:tail] + bytes([data[tail] ^ 0x80]) + data[tail + 1 :]) == "corrupt: checksum mismatch"


@pytest.mark.parametrize("fmt", [0, snapshot.FORMAT + 1])
def test_a_snapshot_of_another_format_is_refused(fmt: int) -> None:
    data = encoded(built())
    at = len(snapshot.MAGIC)
    assert reason(data[:at] + struct.pack("<I", fmt) + data[at + 4 :]) == (
        f"format {fmt}, this version reads format {snapshot.FORMAT}")


def test_a_snapshot_of_another_python_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(snapshot, "PYTHON", "3.99/9")
    data = encoded(built())
    monkeypatch.undo()
    assert reason(data) == f"format: written by Python/marshal 3.99/9, this is {snapshot.PYTHON}"


def test_check_names_what_does_not_fit() -> None:
    ends = {0: 20, 1: 25}
    assert snapshot.check(ORIGIN, TOPIC, "cluster-1", "topic-id-1", ends) is None
    assert snapshot.check(ORIGIN, TOPIC, "cluster-1", "topic-id-1", {**ends, 2: 7}) is None  # a partition added
    assert "another topic" in str(snapshot.check(ORIGIN, "other", "cluster-1", "topic-id-1", ends))
    assert "another cluster" in str(snapshot.check(ORIGIN, TOPIC, "cluster-2", "topic-id-1", ends))
    assert "recreated" in str(snapshot.check(ORIGIN, TOPIC, "cluster-1", "topic-id-2", ends))
    assert snapshot.check(ORIGIN, TOPIC, "cluster-1", "topic-id-1", {0: 19, 1: 25}) == (
        "snapshot ahead of the topic: partition 0 offset 20 is beyond its end 19 "
        "(the topic was recreated or truncated)")
    assert "partition 1 no longer exists" in str(snapshot.check(ORIGIN, TOPIC, "cluster-1", "topic-id-1", {0: 20}))


class FakeTable:
    """What LocalState asks of the settings table: the cluster id and the end offsets."""

    def __init__(self, cluster_id: str = "cluster-1", ends: dict[int, int] | None = None) -> None:
        self.cluster_id = cluster_id
        self.ends = ends if ends is not None else {0: 20, 1: 19}

    def describe(self) -> tuple[str, dict[int, int]]:
        return self.cluster_id, self.ends


@pytest.fixture
def state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(LocalState, "_topic_id", lambda self: "topic-id-1")  # no broker here
    return tmp_path / "state"


def saved(state_dir: Path, h: SettingsHistory | None = None, table: FakeTable | None = None) -> LocalState:
    state_dir.mkdir(exist_ok=True)
    ls = LocalState(state_dir, {}, TOPIC)
    assert ls.restore(SettingsHistory(), table or FakeTable()) is None  # no file yet: learns the ids
    ls.save(h or built(), {0: 20, 1: 19})
    assert ls.writer is not None
    ls.writer.join(30)
    return ls


def restored(state_dir: Path, table: FakeTable | None = None) -> tuple[SettingsHistory, dict[int, int] | None]:
    h = SettingsHistory()
    h.bind_topic(TOPIC)
    return h, LocalState(state_dir, {}, TOPIC).restore(h, table or FakeTable())


def not_used(caplog: pytest.LogCaptureFixture) -> list[str]:
    lines = [r for r in caplog.records if "snapshot not used" in r.getMessage()]
    return [str(getattr(r, "fields", {}).get("reason")) for r in lines]


def test_a_saved_file_is_restored_with_its_offsets(state_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "access_eval.settings")
    saved(state_dir)
    assert [p.name for p in state_dir.iterdir()] == [local_state.FILE], "the temporary file is renamed"
    h, offsets = restored(state_dir)
    assert offsets == {0: 20, 1: 19}
    assert state(h) == state(built())
    assert [r.getMessage() for r in caplog.records if "snapshot loaded" in r.getMessage()]


@pytest.mark.parametrize(("spoil", "why"), [
    ("missing", "no snapshot yet"),
    ("directory", "cannot read it: Is a directory"),
    ("corrupt", "corrupt: "),
    ("cluster", "snapshot of another cluster"),
    ("topic", "snapshot of another topic"),
    ("recreated", "recreated"),
    ("ahead", "snapshot ahead of the topic: partition 1 offset 19 is beyond its end 3"),
])
def test_an_unusable_file_is_ignored_with_one_line(state_dir: Path, caplog: pytest.LogCaptureFixture,
                                                   monkeypatch: pytest.MonkeyPatch, spoil: str, why: str) -> None:
    table = FakeTable()
    if spoil == "missing":
        state_dir.mkdir()
    elif spoil == "directory":
        (state_dir / local_state.FILE).mkdir(parents=True)
    else:
        saved(state_dir, table=FakeTable())
    path = state_dir / local_state.FILE
    if spoil == "corrupt":
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))
    elif spoil == "cluster":
        table = FakeTable("cluster-2")
    elif spoil == "topic":
        h = SettingsHistory()
        caplog.set_level(logging.INFO, "access_eval.settings")
        assert LocalState(state_dir, {}, "another.topic").restore(h, table) is None
        assert len(h) == 0 and not_used(caplog) == ["snapshot of another topic ('iam.account-settings'; reading "
                                                    "'another.topic')"]
        return
    elif spoil == "recreated":
        monkeypatch.setattr(LocalState, "_topic_id", lambda self: "topic-id-2")
    elif spoil == "ahead":
        table = FakeTable(ends={0: 20, 1: 3})
    caplog.set_level(logging.INFO, "access_eval.settings")
    h, offsets = restored(state_dir, table)
    assert offsets is None and len(h) == 0 and h.applied == 0, "an ignored snapshot leaves the table empty"
    reasons = not_used(caplog)
    assert len(reasons) == 1 and why in reasons[0], reasons
    assert not [r for r in caplog.records if "snapshot loaded" in r.getMessage()]


def test_a_failed_write_keeps_the_previous_snapshot(state_dir: Path, monkeypatch: pytest.MonkeyPatch,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    saved(state_dir)
    before = (state_dir / local_state.FILE).read_bytes()

    def failing(history: SettingsHistory, origin: snapshot.Origin) -> Any:
        yield b"partial"
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(snapshot, "encode", failing)
    caplog.set_level(logging.INFO, "access_eval.settings")
    ls = LocalState(state_dir, {}, TOPIC)
    ls.save(built(), {0: 21, 1: 19})
    assert ls.writer is None
    assert (state_dir / local_state.FILE).read_bytes() == before
    assert [p.name for p in state_dir.iterdir()] == [local_state.FILE], "the temporary file is removed"
    assert [r for r in caplog.records if "snapshot not written" in r.getMessage()]


def test_a_loaded_snapshot_is_rewritten_only_after_a_long_tail(state_dir: Path) -> None:
    saved(state_dir)
    path = state_dir / local_state.FILE
    stamp = path.stat().st_mtime_ns
    h = SettingsHistory()
    h.bind_topic(TOPIC)
    ls = LocalState(state_dir, {}, TOPIC)
    assert ls.restore(h, FakeTable()) == {0: 20, 1: 19}
    for positions in ({0: 20, 1: 19}, {0: 20 + local_state.MIN_TAIL, 1: 19}):  # nothing read; a short tail
        ls.save(h, positions)
        assert ls.writer is None and path.stat().st_mtime_ns == stamp
    ls.save(h, {0: 21 + local_state.MIN_TAIL, 1: 19})  # a long one: written
    assert ls.writer is not None
    ls.writer.join(30)
    assert snapshot.Reader(io.BytesIO(path.read_bytes()).read).origin.offsets == {0: 21 + local_state.MIN_TAIL, 1: 19}
    assert local_state.worth_rewriting({0: 0}, {0: 20_000}, 2_000_000) is False  # 1% of the accounts
    assert local_state.worth_rewriting({0: 0}, {0: 20_000, 1: 1}, 2_000_000) is True  # a partition added


def test_temporary_files_of_a_killed_writer_are_removed(state_dir: Path) -> None:
    state_dir.mkdir()
    stale = state_dir / f".{local_state.FILE}.{local_state.socket.gethostname()}.123.tmp"
    stale.write_bytes(b"half")
    other_host = state_dir / f".{local_state.FILE}.another-pod.123.tmp"
    other_host.write_bytes(b"being written")
    LocalState(state_dir, {}, TOPIC)
    assert not stale.exists() and other_host.exists(), "only this host's leftovers go (a shared volume)"
