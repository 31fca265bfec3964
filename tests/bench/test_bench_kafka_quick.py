"""`bench/bench_kafka.py --quick` end to end: its own broker, every section, correct counts.

Checks only what the benchmark must get right (counts equal to the generated mix, every figure
written); never a time, which depends on the machine.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(420)]

THROUGHPUT = ["exactly_once_1", "exactly_once_2", "at_least_once_1", "at_least_once_2"]
CEILINGS = ["ceiling_consume", "ceiling_passthrough"]
PEERS = ["peer_kstreams"]  # needs a JDK and mvn (installed on the CI machine)


def test_quick_benchmark_counts_match_the_mix(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "bench_kafka.py"), "--quick", "--json", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=600, check=False,
    )
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    r = json.loads(out.read_text())

    assert set(r) >= {"machine", "config", "preload", "expected", "throughput", "ratios", "latency", "settings",
                      "stages", "correct", "bench_seconds"}
    assert r["correct"] is True
    assert r["config"]["quick"] is True and r["config"]["attempts"] == 20_000

    # The expected count is the mix's own: monitor permits + would-be denies + enforced denies.
    outcomes = r["expected"]["outcomes"]
    assert sum(outcomes.values()) == 20_000
    assert outcomes["would_be_deny"] + outcomes["enforced_deny"] < r["expected"]["events"]
    assert r["expected"]["events"] <= outcomes["would_be_deny"] + outcomes["enforced_deny"] + outcomes["permit"]

    tp = r["throughput"]
    assert set(tp) == set(THROUGHPUT + CEILINGS + PEERS)
    for key in THROUGHPUT:
        for run in tp[key]["runs"]:
            assert run["expected_events"] == r["expected"]["events"]
            assert run["exit_codes"] == [0] * (2 if key.endswith("_2") else 1)
            if key.startswith("exactly_once"):
                assert run["events"] == run["expected_events"], key  # exactly once: no loss, no duplicate
            else:
                assert run["events"] >= run["expected_events"], key  # at least once
            assert {"attempts_per_s", "seconds", "cpu_per_process", "peak_rss_mb", "from_start_s"} <= set(run)
            assert run["commits"] >= 1, key  # read off the processes' commit histograms: they committed the mix
        assert tp[key]["correct"] is True
    passthrough = tp["ceiling_passthrough"]["runs"][0]
    assert passthrough["records"] == 20_000 and passthrough["correct"] is True
    assert set(r["ratios"]) == {"eos_vs_consume", "eos_vs_passthrough", "eos_vs_best_peer"}
    # the peer does the same job, exactly once: exactly the mix's events (its source says what it skips)
    for run in tp["peer_kstreams"]["runs"]:
        assert run["events"] == r["expected"]["events"] and run["correct"] is True, run

    lat = r["latency"]
    assert lat["events"] > 0 and lat["attempts"] > 0
    assert {"p50_ms", "p99_ms", "max_ms", "offered_per_s", "cpu", "by_5s_window", "commits"} <= set(lat)
    assert lat["commits"]["count"] > 0 and lat["commits"]["mean_ms"] > 0
    assert lat["warmup"]["events"] > 0 and any(w["warmup"] for w in lat["by_5s_window"])
    assert len(lat["runs"]) == r["config"]["runs"] and lat["p99_ms"] in [x["p99_ms"] for x in lat["runs"]]

    boot = r["settings"]["bootstrap"]
    assert boot["records"] == 20_000 and boot["peak_rss_mb"] > 0 and boot["ready_s"] > 0
    prop = r["settings"]["propagation"]
    assert prop["changes"] == 5 and prop["p99_ms"] is not None

    st = r["stages"]
    assert st["attempts"] == 20_000
    assert set(st["us_per_attempt"]) == {"consume", "decode_validate", "evaluate", "encode", "produce", "sum"}
    assert st["emitted"] == r["expected"]["events"]
    assert set(st["evaluate_us_by_allowlist"]) == {"small", "huge"}
