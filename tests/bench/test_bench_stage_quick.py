"""`bench/bench_stage.py --quick` end to end: its own broker, two code trees, each child measuring the
code of its own tree, every check passed. Never a time."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(420)]


def test_quick_stage_bench_measures_each_trees_own_code(tmp_path: Path) -> None:
    other = tmp_path / "other"
    shutil.copytree(REPO / "processor", other / "processor", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "schemas", other / "schemas")  # a tree is what `git archive` gives: code and schemas
    out = tmp_path / "stage.json"
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "bench_stage.py"), "--quick", "--tree", f"other={other}",
         "--json", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=400, check=False,
    )
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    r = json.loads(out.read_text())
    assert r["correct"] is True
    runs = {run["tree"]: run for run in r["runs"]}
    assert set(runs) == {"this", "other"}
    assert Path(runs["this"]["code"]) == REPO / "processor"
    assert Path(runs["other"]["code"]) == other / "processor"
    for run in runs.values():
        assert run["attempts"] == 5_000 and run["correct"] is True and run["exit_code"] == 0
        assert run["accounts"] > 0 and len(run["us_per_attempt"]) == 1
    assert set(r["summary"]) == {"this", "other"}
