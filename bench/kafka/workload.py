"""The reference mix: generated, preloaded once, and the eval events the processor must make of it."""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from bench.kafka.common import (
    EMITTING,
    say,
)
from bench.kafka.procs import Bench
from bench.kafka.topics import (
    create_topics,
    preload,
)
from processor.core.ids import IDENTITY_TYPES
from processor.core.times import rfc3339_millis
from processor.local.workload import Mix, Workload


@dataclass
class Mixed:
    """The preloaded reference mix and what the processor must make of it."""

    workload: Workload
    settings: list[tuple[bytes, bytes]]
    attempts_total: int
    outcomes: Counter[str]
    expected_events: int
    monitor: set[str]
    probe_account: str = ""
    probe_external: str = ""


def settings_docs(w: Workload, updated_at: str | None) -> Iterator[tuple[bytes, bytes]]:
    for d in w.settings():
        if updated_at is not None:
            d["updated_at"] = updated_at
        yield str(d["account_id"]).encode(), json.dumps(d, separators=(",", ":")).encode()


def probe_doc(account: str, allowed: list[str], updated_at: str | None = None) -> bytes:
    doc: dict[str, Any] = {
        "account_id": account,
        "external_account_identity_interaction": {
            "identity_types": {t: {"state": "monitor", "external_allowed_accounts": allowed} for t in IDENTITY_TYPES}
        },
    }
    if updated_at is not None:
        doc["updated_at"] = updated_at
    return json.dumps(doc, separators=(",", ":")).encode()


def attempt_value(attempt_id: str, account: str, ext: str, t_ms: int) -> bytes:
    return json.dumps(
        {
            "id": attempt_id,
            "event_time": rfc3339_millis(t_ms),
            "account_id": account,
            "identity": {"iam_id": "iam-probe", "type": "user", "account_id": ext, "name": "probe"},
            "action": "cloud-object-storage.object.read",
        },
        separators=(",", ":"),
    ).encode()



def prepare(bench: Bench) -> tuple[Mixed, dict[str, Any]]:
    args = bench.args
    create_topics(bench.bootstrap, [
        (bench.settings_topic, 3, {"cleanup.policy": "compact", "max.message.bytes": "16777216"}),
        (bench.attempts_topic, args.partitions, {}),
        (bench.dlq_topic, args.partitions, {}),
    ])
    bench.created += [bench.settings_topic, bench.attempts_topic, bench.dlq_topic]
    now_ms = int(time.time() * 1000)
    t0 = time.monotonic()
    w = Workload(seed=7, accounts=args.accounts, huge_allowlists=args.huge_allowlists, mix=Mix())
    # In force since yesterday: every attempt (event times of the last `attempts` ms) is evaluated exactly.
    settings = list(settings_docs(w, rfc3339_millis(now_ms - 86_400_000)))
    rng = random.Random(99)
    probe, probe_ext = f"{rng.getrandbits(128):032x}", f"{rng.getrandbits(128):032x}"
    settings.append((probe.encode(), probe_doc(probe, [probe_ext], rfc3339_millis(now_ms - 86_400_000))))
    gen_settings_s = time.monotonic() - t0
    t0 = time.monotonic()
    _, settings_bytes = preload(bench.bootstrap, bench.settings_topic, settings, **{"message.max.bytes": 16_000_000})
    settings_s = time.monotonic() - t0
    say(f"settings: {len(settings):,} records, {settings_bytes / 1e6:.0f} MB, generated in {gen_settings_s:.1f} s, "
        f"produced in {settings_s:.1f} s")

    monitor = set(w.monitor_ids)
    outcomes: Counter[str] = Counter()
    expected = 0
    t0 = time.monotonic()
    records: list[tuple[bytes, bytes]] = []
    for key, value, outcome in w.attempts(args.attempts, start_ms=now_ms - args.attempts, step_ms=1):
        outcomes[outcome] += 1
        if outcome in EMITTING or (outcome == "permit" and key.decode() in monitor):
            expected += 1
        records.append((key, value))
    gen_s = time.monotonic() - t0
    t0 = time.monotonic()
    n, size = preload(bench.bootstrap, bench.attempts_topic, records)
    attempts_s = time.monotonic() - t0
    del records
    say(f"attempts: {n:,} records, {size / 1e6:.0f} MB, generated in {gen_s:.1f} s, produced in {attempts_s:.1f} s; "
        f"outcomes {dict(outcomes)}; {expected:,} eval events expected")
    mixed = Mixed(w, settings, n, outcomes, expected, monitor, probe, probe_ext)
    pre = {
        "settings_records": len(settings),
        "settings_mb": round(settings_bytes / 1e6),
        "settings_generate_s": round(gen_settings_s, 1),
        "settings_s": round(settings_s, 1),
        "attempts_generate_s": round(gen_s, 1),
        "attempts_s": round(attempts_s, 1),
        "attempts_mb": round(size / 1e6),
    }
    return mixed, pre
