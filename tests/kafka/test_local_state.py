"""Local state on a real broker (`--state-dir`, docs/guarantees.md "Local state"): a restart loads the
settings snapshot, reads only the topic's tail, and evaluates exactly as a cold start; a snapshot that is
corrupt or of a re-created topic is ignored with one log line. The file cases one by one:
tests/test_snapshot.py.
"""

from __future__ import annotations

import dataclasses
import json
import random
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from processor.codec.avro import EvalCodec
from processor.kafka.local_state import FILE
from tests.stream.test_pipeline import T0, attempt, doc
from tests.stream.test_spec_model_e2e import build
from tests.support.kafka_harness import Topics, wait_until
from tests.support.processor_harness import (
    RunningProcessor,
    end_offsets,
    produce,
    read_topic,
    start_processor,
    wait_all_committed,
)
from tests.support.spec_model import expect, project
from tests.support.spec_rules import norm
from tests.support.strategies import dumps

pytestmark = pytest.mark.kafka

READ = ("access_eval_settings_records_total", "access_eval_settings_rejected_total")
GAUGES = ("access_eval_settings_accounts", "access_eval_settings_versions",
          "access_eval_settings_accounts_invalid_latest", "access_eval_settings_accounts_without_valid_version")
HEX = [f"{i:032x}" for i in range(1, 30)]


def log_lines(p: RunningProcessor, message: str) -> list[dict[str, Any]]:
    lines = p.log_path.read_text(errors="replace").splitlines()
    return [json.loads(line) for line in lines if message in line and line.startswith("{")]


def wait_snapshot_written(p: RunningProcessor) -> dict[str, Any]:
    wait_until(lambda: log_lines(p, "settings snapshot written"), 60, "the snapshot to be written", interval=0.2)
    return log_lines(p, "settings snapshot written")[0]


def extra_settings(part: int) -> list[tuple[bytes, bytes | None]]:
    """What the spec model's scenario lacks: 32-hex accounts (packed), a big allowlist, rejected records
    with and without a valid version, tombstones."""
    if part == 1:
        recs: list[tuple[bytes, bytes | None]] = [
            (a.encode(), json.dumps(doc(a, ("monitor", "limited")[i % 2], HEX[i : i + i % 4])).encode())
            for i, a in enumerate(HEX[:12])]
        recs += [(b"acct-big", json.dumps(doc("acct-big", "limited", HEX[:12])).encode()),
                 (HEX[3].encode(), b"{broken"), (b"acct-nothing", b"[]"), (HEX[4].encode(), None)]
        return recs
    return [(HEX[5].encode(), None), (HEX[6].encode(), b"{broken too"), (HEX[3].encode(),
            json.dumps(doc(HEX[3], "limited", [])).encode()), (b"acct-big", json.dumps(doc("acct-big", "monitor",
                                                                                            HEX[:9])).encode())]


def run_to_end(topics: Topics, tmp_path: Path, name: str, *extra: str) -> tuple[Topics, dict[str, float],
                                                                                   RunningProcessor]:
    """A processor in its own group writing to its own eval topic, through every attempt."""
    out = dataclasses.replace(topics, evals=f"{topics.evals}.{name}", dlq=f"{topics.dlq}.{name}",
                              group=f"{topics.group}.{name}", created=[])
    out.create(partitions=2, only=[out.evals, out.dlq])
    topics.created += out.created
    p = start_processor(out, tmp_path, *extra, instance=name)
    try:
        p.wait_ready(120)
        wait_all_committed(out.bootstrap, out.group, out.attempts)
        gauges = {g: p.metric(g) for g in GAUGES + READ}
    finally:
        assert p.terminate() == 0, p.log()
    return out, gauges, p


def events(topics: Topics) -> dict[str, tuple[bytes, bytes, dict[str, Any]]]:
    codec = EvalCodec()
    out = {}
    for m in read_topic(topics.bootstrap, topics.evals):
        e = codec.decode(m.value())
        out[e["attemptId"]] = (m.key(), m.value(), e)
    return out


def same_clock(codec: EvalCodec, event: dict[str, Any]) -> bytes:
    """The event's bytes with the one field that differs by construction (the evaluation's wall clock) fixed."""
    fixed = {**event["observer"], "evaluatedAt": datetime(2026, 1, 1, tzinfo=UTC)}
    return codec.reference_encode({**event, "observer": fixed})


def test_a_restart_from_the_snapshot_gives_the_events_of_a_cold_start(topics: Topics, tmp_path: Path) -> None:
    seed = random.randrange(1_000_000)
    print(f"seed {seed}")
    sc = build(seed, n_attempts=1500)
    versions = [(norm(acct).encode(), dumps(d)) for acct, _, d in sc.versions]
    half = len(versions) // 2
    topics.create(partitions=2, settings_partitions=2)
    state = tmp_path / "state"
    produce(topics.bootstrap, topics.settings, versions[:half] + extra_settings(1))
    first = start_processor(topics, tmp_path, "--state-dir", str(state), instance="first")
    try:
        first.wait_ready(120)
        written = wait_snapshot_written(first)
    finally:
        assert first.terminate() == 0, first.log()
    covered = end_offsets(topics.bootstrap, topics.settings)
    assert (state / FILE).is_file() and written["bytes"] == (state / FILE).stat().st_size
    # The tail: records the restart must read from the topic, then the attempts.
    produce(topics.bootstrap, topics.settings, versions[half:] + extra_settings(2))
    keys = [norm(o["account_id"]).encode() if o else b"bad" for o in sc.attempt_objs]
    hex_attempts = [attempt(f"hex-{i}", a, HEX[(i * 7) % 29], T0 + 10**8, itype) for i, a in enumerate(HEX[:12])
                    for itype in ("user", "service")] + [attempt("big", "acct-big", HEX[10], T0 + 10**8)]
    produce(topics.bootstrap, topics.attempts, list(zip(keys, sc.attempts, strict=True)) + hex_attempts)

    warm, warm_gauges, p = run_to_end(topics, tmp_path, "warm", "--state-dir", str(state))
    loaded, = log_lines(p, "settings snapshot loaded")
    assert {int(k): v for k, v in loaded["offsets"].items()} == covered
    assert log_lines(p, "settings bootstrapped")[0]["from_snapshot"] is True
    cold, cold_gauges, _ = run_to_end(topics, tmp_path, "cold")
    tail = sum(end - covered[p] for p, end in end_offsets(topics.bootstrap, topics.settings).items())
    assert sum(warm_gauges.pop(name) for name in READ) == tail, "only the tail is read from the topic"
    assert sum(cold_gauges.pop(name) for name in READ) == sum(end_offsets(topics.bootstrap, topics.settings).values())
    assert warm_gauges == cold_gauges

    got_warm, got_cold = events(warm), events(cold)
    assert got_warm.keys() == got_cold.keys() and len(got_warm) > 100
    codec = EvalCodec()
    differ = [a for a in got_warm if got_warm[a][0] != got_cold[a][0]
              or same_clock(codec, got_warm[a][2]) != same_clock(codec, got_cold[a][2])]
    assert not differ, f"seed {seed}: {len(differ)} differ: {got_warm[differ[0]][2]} / {got_cold[differ[0]][2]}"
    assert read_topic(warm.bootstrap, warm.dlq) and len(read_topic(warm.bootstrap, warm.dlq)) == len(
        read_topic(cold.bootstrap, cold.dlq))
    # ... and both are what the contract says (the model reads the settings log as published).
    settings = [(m.key(), m.value(), m.timestamp()[1]) for m in read_topic(topics.bootstrap, topics.settings)]
    spec = expect(settings, sc.attempts + [v for _, v in hex_attempts])
    assert got_warm.keys() == spec.events.keys()
    wrong = [a for a, (key, _, e) in got_warm.items() if project(e, key) != spec.events[a]]
    assert not wrong, f"seed {seed}: {wrong[:3]}"
    assert len(spec.exercised()) >= 3 and spec.settings.rejected


def test_a_corrupt_snapshot_or_one_of_a_recreated_topic_is_ignored(topics: Topics, tmp_path: Path) -> None:
    topics.create(partitions=1)
    state = tmp_path / "state"
    produce(topics.bootstrap, topics.settings, [(a.encode(), json.dumps(doc(a, "limited", [])).encode())
                                                for a in ("acct-a", "acct-b")])
    p = start_processor(topics, tmp_path, "--state-dir", str(state), instance="first")
    try:
        p.wait_ready(120)
        wait_snapshot_written(p)
    finally:
        assert p.terminate() == 0, p.log()
    data = bytearray((state / FILE).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (state / FILE).write_bytes(bytes(data))
    p = start_processor(topics, tmp_path, "--state-dir", str(state), instance="corrupt")
    try:
        p.wait_ready(120)
        assert p.metric("access_eval_settings_records_total") == 2, "read from the beginning"
        wait_snapshot_written(p)  # and a good snapshot written again
    finally:
        assert p.terminate() == 0, p.log()
    ignored = log_lines(p, "settings snapshot not used")
    assert len(ignored) == 1 and ignored[0]["reason"].startswith("corrupt: "), ignored

    # The topic deleted and created again, with more records than the snapshot covers: only its id tells.
    admin = topics.admin()
    admin.delete_topics([topics.settings])[topics.settings].result(30)
    wait_until(lambda: topics.settings not in admin.list_topics(timeout=10).topics, 60, "the topic to be deleted")
    topics.create(partitions=1, only=[topics.settings])
    produce(topics.bootstrap, topics.settings, [(a.encode(), json.dumps(doc(a, "monitor", [])).encode())
                                                for a in ("acct-a", "acct-b", "acct-c", "acct-d")])
    produce(topics.bootstrap, topics.attempts, [attempt(1, "acct-a", "ext-1", T0 + 10**8)])
    p = start_processor(topics, tmp_path, "--state-dir", str(state), instance="recreated")
    try:
        p.wait_ready(120)
        wait_all_committed(topics.bootstrap, topics.group, topics.attempts)
        assert p.metric("access_eval_settings_records_total") == 4
    finally:
        assert p.terminate() == 0, p.log()
    ignored = log_lines(p, "settings snapshot not used")
    assert len(ignored) == 1 and "topic id" in ignored[0]["reason"], ignored
    (_key, _value, event), = events(topics).values()
    assert event["responseData"]["state"] == "monitor", "the re-created topic's settings govern"
