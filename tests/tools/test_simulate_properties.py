"""`access-eval simulate` (SPEC §10) as a whole: memory does not grow with the attempts streamed
through it, and properties over random scenarios (settings line order, short retention, incremental
application) against the independent SPEC model in `tests/support/spec_rules.py`.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tempfile
import threading
from collections import Counter
from pathlib import Path
from typing import Any
from unittest import mock

import fastavro
import pytest
from hypothesis import given
from hypothesis import strategies as st

from processor.codec.avro import EvalCodec
from processor.core.attempts import InvalidAttempt, parse_attempt
from processor.core.evaluator import assess
from processor.core.events import build_event
from processor.core.settings import SettingsHistory, parse_settings
from processor.core.would_be_denies import WouldBeDenies
from processor.tools import simulate as simulate_module
from tests.support.simulate_runs import AVSC, PROPS, ROOT, run, write_lines
from tests.support.simulate_runs import render as _render
from tests.support.spec_rules import OUTCOMES
from tests.support.strategies import (
    ACCOUNTS,
    BASE_MS,
    HOUR,
    MINUTE,
    NOW_MS,
    Scenario,
    dumps,
    iso,
    parse_ms,
    scenarios,
    settings_obj,
)

ACC, EXT = ACCOUNTS[0], ACCOUNTS[1]


# --- streaming ---------------------------------------------------------------------------------------


def _generate_attempts(fifo: Path, n: int) -> None:
    template = ('{"id":"a%d","event_time":"%s","account_id":"%s","identity":{"iam_id":"i%d","type":"user",'
                '"account_id":"%s"},"action":"x.y.z"}\n')
    with fifo.open("w") as fh:
        for i in range(n):
            ident = EXT if i % 1000 == 0 else (ACC if i % 2 else ACCOUNTS[3])
            fh.write(template % (i, iso(BASE_MS + i), ACC, i % 7, ident))


# The real `simulate` entry point in a fresh interpreter, reporting its own peak RSS (KiB) last on stderr.
_CHILD = """
import resource, sys
from processor.tools.simulate import main
rc = main(sys.argv[1], sys.argv[2], sys.argv[3] == "summary", "json")
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)
sys.exit(rc)
"""


def _streaming_run(tmp: Path, n: int, mode: str) -> tuple[int, str]:
    """Stream n generated attempt lines through a named pipe (never a file on disk) into a child."""
    s = write_lines(tmp / "s.jsonl", [settings_obj(ACC, {"user": {"state": "limited",
                                                                  "external_allowed_accounts": [ACCOUNTS[3]]}})])
    fifo = tmp / f"attempts-{n}-{mode}.fifo"
    os.mkfifo(fifo)
    writer = threading.Thread(target=_generate_attempts, args=(fifo, n), daemon=True)
    writer.start()
    proc = subprocess.run([sys.executable, "-c", _CHILD, str(s), str(fifo), mode], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    writer.join(timeout=30)
    assert proc.returncode == 0, proc.stderr
    return int(proc.stderr.splitlines()[-1]), proc.stdout


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
@pytest.mark.parametrize("mode", ["events", "summary"])
def test_streaming_memory_does_not_grow_with_attempts(tmp_path: Path, mode: str) -> None:
    """200k attempt lines (~45 MB) from a pipe: peak RSS is that of 20k lines (simulate holds no lines)."""
    small_kib, _ = _streaming_run(tmp_path, 20_000, mode)
    big_kib, out = _streaming_run(tmp_path, 200_000, mode)
    if mode == "events":
        events = [json.loads(line) for line in out.splitlines()]
        assert len(events) == 200
        assert all(e["responseData"]["decision"] == "Deny" for e in events)
    else:
        outcomes = json.loads(out)["outcomes"]
        assert outcomes == {"same_account": 100_000, "unrestricted": 0, "permit": 99_800, "would_be_deny": 0,
                            "enforced_deny": 200, "invalid": 0}
    assert big_kib - small_kib < 8 * 1024, f"peak RSS grew from {small_kib} KiB to {big_kib} KiB"


# --- properties -------------------------------------------------------------------------------------


#: One codec for every property run: building one compiles its encoders (~15 ms, a third of a small
#: scenario's simulate run); it holds no state between events.
_CODEC = EvalCodec()
_SCHEMA = fastavro.parse_schema(json.loads(AVSC.read_text()))


def _simulate_scenario(sc: Scenario, settings_order: list[int], retention_ms: int = 24 * HOUR
                       ) -> tuple[list[dict[str, Any]], WouldBeDenies]:
    with tempfile.TemporaryDirectory() as d, mock.patch.object(simulate_module, "EvalCodec", lambda: _CODEC):
        lines = sc.settings_lines()
        events, _, agg = run(Path(d), [lines[i] for i in settings_order], sc.attempts, retention_ms=retention_ms)
    # offsets are line numbers: map them back to the version (index in sc.versions) they point to
    for ev in events:
        sv = ev["responseData"]["settingsVersion"]
        sv["offset"] = settings_order[sv["offset"] - 1]
    return events, agg


def _check_against_spec(sc: Scenario, events: list[dict[str, Any]], agg: WouldBeDenies) -> None:
    expected = sc.expected()
    assert sum(agg.outcomes.values()) == len(sc.attempts)  # exactly one outcome per line
    assert agg.outcomes == {o: sum(1 for d, _, _ in expected if d.outcome == o) for o in OUTCOMES}
    emitted = [(i, d, idx, exact) for i, (d, idx, exact) in enumerate(expected) if d.emitted]
    assert len(events) == len(emitted)
    for ev, (i, d, idx, exact) in zip(events, emitted, strict=True):
        assert ev["attemptId"] == f"att-{i}"
        rd = ev["responseData"]
        assert (rd["decision"], rd["isEnforced"], rd["state"], rd["allowlisted"]) == (
            d.decision, d.is_enforced, d.state, d.allowlisted)
        assert idx is not None
        assert rd["settingsVersion"]["offset"] == idx
        assert rd["settingsVersion"]["exact"] is exact
        assert rd["settingsVersion"]["effectiveTime"] == iso(sc.versions[idx][1])


def _account_order_kept(sc: Scenario, order: list[int]) -> list[int]:
    """`order` with the versions of each account put back in their own order: a record supersedes the
    versions of its account from its effective time on (contract §3), so only the order across
    accounts is free."""
    out = list(order)
    groups: dict[str, list[int]] = {}
    for pos, idx in enumerate(order):
        acct, _eff, _ = sc.versions[idx]
        groups.setdefault(acct, []).append(pos)
    for positions in groups.values():
        for pos, idx in zip(positions, sorted(order[p] for p in positions), strict=True):
            out[pos] = idx
    return out


@PROPS
@given(sc=scenarios(), data=st.data())
def test_simulate_matches_spec_and_ignores_settings_line_order_across_accounts(
    sc: Scenario, data: st.DataObject
) -> None:
    """Up to 8 accounts x 8 versions (equal minutes and instants, any publication order), up to 200
    attempts in any event-time order: each event is SPEC's decision with the version in force at its
    event time. Interleaving the accounts' settings lines differently changes nothing; within one
    account the order matters (a line supersedes the account's versions from its effective time on,
    which the first run checks)."""
    events, agg = _simulate_scenario(sc, list(range(len(sc.versions))))
    _check_against_spec(sc, events, agg)
    shuffled = _account_order_kept(sc, list(data.draw(st.permutations(range(len(sc.versions))))))
    events2, agg2 = _simulate_scenario(sc, shuffled)
    assert events2 == events
    assert agg2.outcomes == agg.outcomes


@PROPS
@given(sc=scenarios(invalid=False), data=st.data())
def test_sorted_replay_with_short_retention_matches_spec(sc: Scenario, data: st.DataObject) -> None:
    """Attempts in event-time order: pruning by stream time never changes a decision."""
    objs = sorted((o for o in sc.attempt_objs if o is not None), key=lambda o: parse_ms(o["event_time"]))
    for i, obj in enumerate(objs):
        obj["id"] = f"att-{i}"  # `att-{i}` is the line index again
    sc.attempt_objs = list(objs)
    sc.attempts = [dumps(o) for o in objs]
    retention = data.draw(st.sampled_from([MINUTE, 30 * MINUTE, HOUR]))
    events, agg = _simulate_scenario(sc, list(range(len(sc.versions))), retention_ms=retention)
    _check_against_spec(sc, events, agg)


@PROPS
@given(sc=scenarios(), data=st.data())
def test_incremental_settings_application_gives_the_same_output(sc: Scenario, data: st.DataObject) -> None:
    """Versions applied in any order, each before the attempts it governs: same events as simulate."""
    sim_events, sim_agg = _simulate_scenario(sc, list(range(len(sc.versions))))
    expected = sc.expected()
    deadline = {}
    for i, (_, idx, _) in enumerate(expected):
        if idx is not None:
            deadline.setdefault(idx, i)
    # The schedule, drawn up front (a few draws per version, not per attempt): the order versions are
    # applied in, and for each the attempt before which it is applied, at the latest the first it governs.
    order = data.draw(st.permutations(range(len(sc.versions))))
    before = {v: data.draw(st.integers(0, deadline.get(v, len(sc.attempts)))) for v in order}
    pending = list(range(len(sc.versions)))
    history = SettingsHistory()
    codec = _CODEC
    schema = _SCHEMA
    events: list[dict[str, Any]] = []
    outcomes: Counter[str] = Counter()

    def apply(indices: list[int]) -> None:
        for idx in indices:
            if idx not in pending:
                continue
            # A version supersedes its account's versions from its effective time on (contract §3):
            # apply the account's earlier-published ones first.
            acct = sc.versions[idx][0]
            apply([v for v in pending if v < idx and sc.versions[v][0] == acct])
            _, eff, doc = sc.versions[idx]
            if doc.get("tombstone") is True:
                history.apply_tombstone(doc["account_id"], eff, offset=idx)
            else:
                history.apply_document(parse_settings(dumps(doc)), eff, offset=idx)
            pending.remove(idx)

    for i, raw in enumerate(sc.attempts):
        apply([v for v in order if before[v] == i])
        try:
            attempt = parse_attempt(raw, NOW_MS)
        except InvalidAttempt:
            outcomes["invalid"] += 1
            continue
        verdict, version, exact = assess(history, attempt)
        outcomes[verdict.outcome] += 1
        if verdict.emit:
            body = codec.encode(build_event(attempt, verdict, version, exact, NOW_MS))[10:]
            events.append(_render(fastavro.schemaless_reader(io.BytesIO(body), schema)))  # type: ignore[arg-type]
    assert events == sim_events
    assert {o: outcomes[o] for o in OUTCOMES} == sim_agg.outcomes
