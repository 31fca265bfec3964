"""`bench/bench_core.py --quick` runs and its outputs are correct (never asserts a time)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_bench_core_quick_is_correct(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "bench_core.py"), "--quick", "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(out.read_text())
    assert report["correct"] is True, report["errors"]
    n = report["config"]["attempts"]
    assert n == 20_000 and report["config"]["accounts"] == 5_000
    # The mix of the issue, exactly: 50% same-account, 20% unrestricted, 15% monitor, 15% limited,
    # half of the restricted allowlisted (a limited Permit is counted, not emitted).
    expected = {
        "same_account": n * 50 // 100,
        "unrestricted": n * 20 // 100,
        "permit": n * 15 // 100 // 2 * 2,
        "would_be_deny": n * 15 // 100 // 2,
        "enforced_deny": n * 15 // 100 // 2,
    }
    assert report["outcomes"] == expected
    assert report["expected_outcomes"] == expected
    assert report["emitted_share"] == (n * 15 // 100 + n * 15 // 100 // 2) / n
    for key in ("validate_us", "evaluate_us", "encode_us", "total_us", "attempts_per_s"):
        assert isinstance(report["median"][key], float)  # reported, never judged: CI machines vary
    assert report["machine"]["nproc"] >= 1 and report["machine"]["python"]
    assert "correctness: ok" in proc.stdout
