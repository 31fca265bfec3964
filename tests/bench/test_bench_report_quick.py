"""`bench/bench_report.py --quick` on the session broker: the benchmark's reports are right (the
fleet view and one account's report count exactly the preloaded would-be denies; the bench asserts
that itself) and every figure is printed. Never a time, which depends on the machine."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from processor.local.broker import BrokerInfo

REPO = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(420)]


def test_quick_report_benchmark_counts_and_prints_every_figure(kafka: BrokerInfo, tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "bench_report.py"), "--quick", "--runs", "1", "--bootstrap-servers",
         kafka.bootstrap, "--json", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=400, check=False,
    )
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    r = json.loads(out.read_text())
    assert r["events"] == 20_000 and r["accounts"] == 200
    for variant in ("this", "this --readers 1"):
        for view in ("fleet", "account"):
            m = r["medians"][f"{variant} / {view}"]
            for key in ("events_per_s", "cpu_seconds", "peak_rss_mb", "load_1min"):
                assert m[key] > 0, (variant, view, key)
            assert f"{variant} / {view}" in proc.stdout
    if min(3, r["cpus"]) > 1:  # the readers' memory is counted with the report's
        assert r["medians"]["this / fleet"]["processes"] > 1
    for key in ("aggregate_events_per_s", "decode_us", "report_fields_flat_us"):
        assert r["pure"][key] > 0, key
        assert key in proc.stdout
