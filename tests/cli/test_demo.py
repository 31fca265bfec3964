"""`access-eval demo` (README "Two commands"), run as the README says, for a few seconds, on the session
broker: it publishes settings and traffic, runs the real processor, produces all six outcomes, writes
the report pages (fleet and one account) with the commands that regenerate them, and exits 0. Its
traffic has the shape the report is for, and a second run reuses the first run's accounts."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest

from processor.local.broker import BrokerInfo
from tests.support.kafka_harness import free_port
from tests.support.processor_harness import REPO, read_evals, read_topic

pytestmark = pytest.mark.kafka

CONSOLE_SCRIPT = REPO / ".venv" / "bin" / "access-eval"
OUTCOMES = ("same_account", "unrestricted", "permit", "would_be_deny", "enforced_deny", "invalid")
DURATION_S = 12


def run_demo(kafka: BrokerInfo, tmp_path: Path, duration: float) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACCESS_EVAL_")}
    r = subprocess.run(
        [str(CONSOLE_SCRIPT), "demo", "--bootstrap-servers", kafka.bootstrap, "--duration", str(duration),
         "--metrics-port", str(free_port()), "--yes",  # a cluster it did not start: confirmation needed
         *(arg for name in ("settings", "attempts", "eval", "dlq")
           for arg in (f"--{name}-topic", f"test-demo-{tmp_path.name}.{name}"))],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=duration + 180,
    )
    assert r.returncode == 0, f"stdout:\n{r.stdout[-3000:]}\nstderr:\n{r.stderr[-3000:]}"
    return r


def cli_json(*args: str) -> Any:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACCESS_EVAL_")}
    r = subprocess.run([str(CONSOLE_SCRIPT), *args], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_demo_runs_for_its_duration_produces_every_outcome_and_exits_0(kafka: BrokerInfo, tmp_path: Path) -> None:
    r = run_demo(kafka, tmp_path, DURATION_S)
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

    # The pages: written where the demo says, with the commands that write them again.
    lines = r.stdout.splitlines()
    pages = [Path(line.strip()) for line in lines if line.strip().endswith(".html") and "regenerate" not in line]
    assert [p.name.split("-")[0] for p in pages] == ["fleet.html", "account"], r.stdout[-2000:]
    assert all(p.parent == tmp_path / "access-eval-demo-pages" and p.stat().st_size > 2000 for p in pages)
    regenerate = [shlex.split(line.split("regenerate:", 1)[1]) for line in lines if "regenerate:" in line]
    assert [argv[:4] for argv in regenerate] == [["access-eval", "report", "--bootstrap-servers", kafka.bootstrap]] * 2
    assert "--all-accounts" in regenerate[0] and regenerate[0][-1] == str(pages[0])

    # The traffic has the report's shape: one monitor account ready now, one ready after a few
    # additions (partners that call again and again, and a long tail of one-off callers), one not.
    base = ("--bootstrap-servers", kafka.bootstrap, "--eval-topic", topics["evals"], "--settings-topic",
            topics["settings"], "--format", "json")
    fleet = cli_json("report", *base, "--all-accounts")
    classes = [a["readiness"]["class"] for a in fleet["accounts"]]
    assert classes == ["ready_now", "ready_after_additions", "not_ready"], fleet["accounts"]
    after = cli_json("report", *base, "--account", fleet["accounts"][1]["account_id"])
    s = after["suggestion"]
    assert 1 <= s["recommended"]["additions"] <= 5 and s["recommended"]["share"] >= 0.6
    assert s["still_denied"]["one_off"] >= 10 and s["still_denied"]["one_off"] == s["still_denied"]["candidates"]
    days = [p["would_be_denies"] for p in after["series"]["points"]]
    assert sum(1 for d in days if d) >= 10, "the past days' traffic gives the trend a shape"
    assert after["identities"] < after["would_be_denies"] / 2, "identities repeat"

    # A second run reuses the accounts (their settings replace themselves) and adds traffic.
    again = run_demo(kafka, tmp_path, 2)
    accounts = {a["account_id"] for a in cli_json("settings", "list", "--bootstrap-servers", kafka.bootstrap,
                                                    "--settings-topic", topics["settings"], "--format", "json")}
    assert len(accounts) == 7
    assert [a["account_id"] for a in fleet["accounts"]] == [
        a["account_id"] for a in cli_json("report", *base, "--all-accounts")["accounts"]]
    assert "Summary (committed):" in again.stdout
