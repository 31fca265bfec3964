"""What users install: the wheel (and the sdist a git URL builds), in a fresh venv outside the checkout.

The installed `access-eval` runs from a temporary folder with an environment stripped of every
ACCESS_EVAL_* variable and of PYTHONPATH, so nothing of the checkout can help it: `--version`,
`simulate` on the contract's example, and `run` against the session broker.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import processor
from processor.codec.avro import EvalCodec
from tests.support.kafka_harness import Topics, free_port, wait_until
from tests.support.processor_harness import produce, read_topic, settings_record
from tests.support.strategies import SPEC_EXAMPLE

REPO = Path(__file__).resolve().parents[2]
SCHEMA_FILES = ("eval_event.avsc", "access_attempt.schema.json", "settings_record.schema.json")

pytestmark = pytest.mark.wheel


@dataclass
class Installed:
    bin: Path
    home: Path  # a folder outside the checkout, the commands' working directory
    dist: Path

    def env(self) -> dict[str, str]:
        keep = {k: v for k, v in os.environ.items() if not k.startswith("ACCESS_EVAL_") and k != "PYTHONPATH"}
        return {**keep, "HOME": str(self.home), "PATH": f"{self.bin}:{keep.get('PATH', '')}"}

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(self.bin / "access-eval"), *args], cwd=self.home, env=self.env(),
                              capture_output=True, text=True, timeout=timeout)


def _build(kind: str, out: Path) -> Path:
    subprocess.run([sys.executable, "-m", "build", f"--{kind}", "--outdir", str(out), str(REPO)],
                   check=True, capture_output=True, timeout=600)
    (built,) = out.glob("*.whl" if kind == "wheel" else "*.tar.gz")
    return built


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    root = tmp_path_factory.mktemp("wheel")
    assert REPO not in root.parents, "the install must live outside the checkout"
    dist = root / "dist"
    wheel = _build("wheel", dist)
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    pip = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", str(wheel)],
                         capture_output=True, text=True, timeout=600)
    assert pip.returncode == 0, pip.stderr[-3000:]
    home = root / "home"
    home.mkdir()
    yield Installed(venv / "bin", home, dist)


def test_the_wheel_carries_the_schemas_and_one_version(installed: Installed) -> None:
    (wheel,) = installed.dist.glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {f"processor/schemas/{name}" for name in SCHEMA_FILES} <= names
    assert f"access_eval-{processor.__version__}.dist-info/METADATA" in names
    version = installed.run("--version")
    assert version.returncode == 0 and version.stdout.split()[-1] == processor.__version__


def test_the_default_wheel_is_pure_python_and_runs_interpreted(installed: Installed) -> None:
    """Without ACCESS_EVAL_COMPILE=1 the wheel is for any platform: no extension, not even the checkout's
    in-place ones (scripts/bootstrap builds them next to the sources), and the core runs interpreted."""
    (wheel,) = installed.dist.glob("*.whl")
    assert wheel.name.endswith("-py3-none-any.whl"), wheel.name
    assert not [n for n in zipfile.ZipFile(wheel).namelist() if n.endswith((".so", ".pyd"))]
    code = "from processor import native; print(native.core_build())"
    probe = subprocess.run([str(installed.bin / "python"), "-c", code],
                           cwd=installed.home, env=installed.env(), capture_output=True, text=True, timeout=60)
    assert probe.returncode == 0 and probe.stdout.strip() == "interpreted", probe.stdout + probe.stderr


def test_installed_simulate_evaluates_the_contract_example(installed: Installed) -> None:
    """The example attempt (a `user` from account 0b1c...) against its account's example settings:
    user is `monitor` with 0b1c... on the allowlist -> one event, Permit, not enforced."""
    settings = {
        "account_id": SPEC_EXAMPLE["account_id"],
        "external_account_identity_interaction": {"identity_types": {
            "user": {"state": "monitor", "external_allowed_accounts": ["0b1c2d3e4f5a69788796a5b4c3d2e1f0"]},
            "service_id": {"state": "enabled", "external_allowed_accounts": []},
            "service": {"state": "limited", "external_allowed_accounts": ["9f8e7d6c5b4a39281706f5e4d3c2b1a0"]},
        }},
    }
    (installed.home / "settings.jsonl").write_text(json.dumps(settings) + "\n")
    (installed.home / "attempts.jsonl").write_text(json.dumps(SPEC_EXAMPLE) + "\n")
    out = installed.run("simulate", "--settings", "settings.jsonl", "--attempts", "attempts.jsonl")
    assert out.returncode == 0, out.stderr
    (line,) = out.stdout.splitlines()
    event = json.loads(line)
    assert event["attemptId"] == SPEC_EXAMPLE["id"]
    assert event["responseData"]["decision"] == "Permit"
    assert event["responseData"]["isEnforced"] is False
    assert event["action"] == "iam-access-management.account-settings.eval"


@pytest.mark.kafka
def test_installed_run_processes_attempts(installed: Installed, topics: Topics) -> None:
    """300 attempts from an external account into a `monitor` account with an empty allowlist: 300
    would-be denies, each one Deny and not enforced, read back from the eval topic."""
    topics.create(partitions=3)
    target, external = "acct-wheel-target", "acct-wheel-external"
    produce(topics.bootstrap, topics.settings, [settings_record({
        "account_id": target,
        "external_account_identity_interaction": {"identity_types": {"user": {"state": "monitor"}}},
    })])
    attempts = [
        {**SPEC_EXAMPLE, "id": f"wheel-{i}", "account_id": target,
         "identity": {**SPEC_EXAMPLE["identity"], "account_id": external}}
        for i in range(300)
    ]
    produce(topics.bootstrap, topics.attempts, [(target.encode(), json.dumps(a).encode()) for a in attempts])
    port = free_port()
    log = installed.home / "run.log"
    with log.open("wb") as fh:
        proc = subprocess.Popen(
            [str(installed.bin / "access-eval"), "run", "--bootstrap-servers", topics.bootstrap,
             "--group-id", topics.group, "--settings-topic", topics.settings, "--attempts-topic", topics.attempts,
             "--eval-topic", topics.evals, "--dlq-topic", topics.dlq, "--metrics-host", "127.0.0.1",
             "--metrics-port", str(port), "--transactional-id", f"{topics.group}-wheel"],
            cwd=installed.home, env=installed.env(), stdout=fh, stderr=subprocess.STDOUT)
    try:
        codec = EvalCodec()

        def events() -> list[dict[str, object]] | None:
            assert proc.poll() is None, f"run exited {proc.returncode}: {log.read_text()[-3000:]}"
            got = [codec.decode(m.value()) for m in read_topic(topics.bootstrap, topics.evals, timeout=5)]
            return got if len(got) >= 300 else None

        got = wait_until(events, 120, "300 eval events from the installed processor", interval=1.0)
    finally:
        proc.terminate()
        code = proc.wait(60)
    assert code == 0, log.read_text()[-3000:]
    assert sorted(e["attemptId"] for e in got) == sorted(a["id"] for a in attempts)
    assert {(e["responseData"]["decision"], e["responseData"]["isEnforced"]) for e in got} == {("Deny", False)}


def test_the_sdist_builds_a_wheel_with_the_schemas(tmp_path: Path) -> None:
    """`pip install git+URL` builds from the sdist: it must carry schemas/ and produce a complete wheel."""
    sdist = _build("sdist", tmp_path / "sdist")
    with tarfile.open(sdist) as tar:
        members = {m.name.split("/", 1)[1] for m in tar.getmembers() if "/" in m.name}
    assert {f"schemas/{name}" for name in SCHEMA_FILES} <= members
    out = tmp_path / "wheel"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(sdist)],
                   check=True, capture_output=True, timeout=600)
    (wheel,) = out.glob("*.whl")
    assert {f"processor/schemas/{name}" for name in SCHEMA_FILES} <= set(zipfile.ZipFile(wheel).namelist())
