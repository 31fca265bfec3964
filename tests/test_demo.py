"""`access-eval demo` (README "Two commands"), run as the README says, for a few seconds, on the session
broker: it publishes settings and traffic, runs the real processor, produces all six outcomes and exits 0."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from kafka_harness import free_port
from processor_harness import REPO, read_evals, read_topic

from processor.local.broker import BrokerInfo

pytestmark = pytest.mark.kafka

CONSOLE_SCRIPT = REPO / ".venv" / "bin" / "access-eval"
OUTCOMES = ("same_account", "unrestricted", "permit", "would_be_deny", "enforced_deny", "invalid")
DURATION_S = 12


def test_demo_runs_for_its_duration_produces_every_outcome_and_exits_0(kafka: BrokerInfo, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACCESS_EVAL_")}
    r = subprocess.run(
        [str(CONSOLE_SCRIPT), "demo", "--bootstrap-servers", kafka.bootstrap, "--duration", str(DURATION_S),
         "--metrics-port", str(free_port()), "--yes",  # a cluster it did not start: confirmation needed
         *(arg for name in ("settings", "attempts", "eval", "dlq")
           for arg in (f"--{name}-topic", f"test-demo-{tmp_path.name}.{name}"))],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=DURATION_S + 120,
    )
    assert r.returncode == 0, f"stdout:\n{r.stdout[-3000:]}\nstderr:\n{r.stderr[-3000:]}"
    assert "Traceback" not in r.stdout + r.stderr, r.stderr[-3000:]
    summary_lines = [line for line in r.stdout.splitlines() if line.startswith("Summary (committed):")]
    assert len(summary_lines) == 1, r.stdout[-3000:]
    summary = json.loads(summary_lines[0].split(":", 1)[1])
    assert set(summary) == set(OUTCOMES), summary
    missing = [o for o in OUTCOMES if summary[o] <= 0]
    assert not missing, f"the demo produced no {missing}: {summary}"
    assert "ready=True" in r.stdout, "the live view never showed the processor ready"
    # What the summary counted was really committed to the demo's topics.
    topics = dict(part.split("=", 1) for part in
                  next(line for line in r.stdout.splitlines() if line.startswith("Topics:")).split()[1:])
    evals = read_evals(kafka.bootstrap, topics["evals"])
    emitted = summary["would_be_deny"] + summary["enforced_deny"]
    assert emitted <= len(evals) <= emitted + summary["permit"], (len(evals), summary)
    assert len(read_topic(kafka.bootstrap, topics["dlq"])) >= summary["invalid"]
