"""The container image, built from the repository's Dockerfile and run against the test broker.

No Docker daemon and no registry: buildah builds the Dockerfile on a Debian bookworm base made from
Debian packages (see scripts/build_image.py), podman runs it the way the Helm chart does
(read-only root filesystem, a tmpfs on /tmp, no capabilities, no-new-privileges) with the user the
image itself declares, on the host network so it reaches the session broker on loopback.
"""

from __future__ import annotations

import contextlib
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from scripts.build_image import HOW, build_image, ensure_base, run
from tests.stream.test_pipeline import T0, attempt, doc
from tests.support.kafka_harness import Topics, free_port, wait_until
from tests.support.processor_harness import produce, read_evals, settings_record, wait_all_committed
from tests.support.required import require_binary

pytestmark = [pytest.mark.image, pytest.mark.kafka]

UID = GID = 10001
ACCOUNTS = 20
ATTEMPTS = 300


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The image built from the working tree's Dockerfile (the base is made once and cached)."""
    mmdebstrap = require_binary("mmdebstrap", HOW)
    podman = require_binary("podman", HOW)
    buildah = require_binary("buildah", HOW)
    require_binary("runc", HOW)
    base = ensure_base(mmdebstrap, podman)
    tag = f"localhost/access-eval:test-{time.time_ns()}"
    seconds = build_image(tag, base.ref, buildah)
    size = int(run([podman, "image", "inspect", "--format", "{{.Size}}", tag]).stdout)
    print(f"\nimage {tag}: {size / 1e6:.0f} MB, built in {seconds:.0f} s"
          f" (base tar {'cached' if base.tar_seconds is None else f'{base.tar_seconds:.0f} s'},"
          f" import {'cached' if base.import_seconds is None else f'{base.import_seconds:.0f} s'})")
    try:
        yield tag
    finally:
        run([podman, "rmi", "-f", tag], check=False)


def inspect(ref: str, fmt: str, kind: str = "image") -> str:
    return run(["podman", kind, "inspect", "--format", fmt, ref]).stdout.strip()


def http_get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except OSError:
        return 0, ""


def process_ids(pid: int) -> tuple[int, int]:
    """Real uid and gid of a host process (rootful podman, no user namespace: the container's ids)."""
    fields = {k: v.split() for k, _, v in
              (line.partition(":") for line in Path(f"/proc/{pid}/status").read_text().splitlines())}
    return int(fields["Uid"][0]), int(fields["Gid"][0])


def test_image_declares_a_non_root_user_and_the_console_script(image: str) -> None:
    assert inspect(image, "{{.Config.User}}") == f"{UID}:{GID}", "the image must run as 10001:10001 by itself"
    assert inspect(image, "{{json .Config.Entrypoint}}") == '["access-eval"]'
    assert inspect(image, "{{json .Config.Cmd}}") == '["run"]'
    # The interpreter of the venv is the base's Python 3.11, and the package imports without a source tree.
    out = run(["podman", "run", "--rm", "--read-only", "--network", "none", "--entrypoint", "python", image,
               "-c", "import sys, processor; print(sys.version_info[:2], processor.__file__)"]).stdout
    assert out.startswith("(3, 11) /opt/venv/lib/python3.11/site-packages/processor/"), out
    # No shell and no pip to run or install anything else with (Dockerfile, final stage).
    shells = [(shell, ["-c", "true"]) for shell in ("/bin/sh", "/bin/bash", "/usr/bin/dash")]
    for entrypoint, args in [*shells, ("python", ["-m", "pip", "--version"]), ("python", ["-m", "ensurepip", "-h"])]:
        proc = run(["podman", "run", "--rm", "--read-only", "--network", "none", "--entrypoint", entrypoint, image,
                    *args], check=False)
        assert proc.returncode != 0, f"{entrypoint} {' '.join(args)} runs in the image: {proc.stdout}"


def test_image_evaluates_attempts_on_the_broker_and_stops_cleanly(image: str, topics: Topics) -> None:
    """The processor in the image, hardened like the chart's pod: one eval event per cross-account
    attempt in monitor mode, /readyz 200, uid 10001, and SIGTERM ends it with exit code 0."""
    topics.create(partitions=3)
    accounts = [f"acct-{i:03d}" for i in range(ACCOUNTS)]
    produce(topics.bootstrap, topics.settings, [settings_record(doc(a, "monitor", [], T0)) for a in accounts])
    # Every attempt comes from an external account that no allowlist names: in monitor mode each one
    # is a would-be deny, and each gets exactly one eval event (independent of the processor's code).
    attempts = [attempt(i, accounts[i % ACCOUNTS], f"ext-{i % 7}", T0 + 1000 + i) for i in range(ATTEMPTS)]
    produce(topics.bootstrap, topics.attempts, attempts)

    port = free_port()
    name = f"access-eval-test-{time.time_ns()}"
    run(["podman", "run", "--detach", "--name", name, "--runtime", "runc",
         "--read-only", "--tmpfs", "/tmp", "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
         "--network", "host", image, "run",
         "--bootstrap-servers", topics.bootstrap, "--group-id", topics.group,
         "--settings-topic", topics.settings, "--attempts-topic", topics.attempts,
         "--eval-topic", topics.evals, "--dlq-topic", topics.dlq,
         "--metrics-host", "127.0.0.1", "--metrics-port", str(port),
         "--transactional-id", f"{topics.group}-image"])
    try:
        def ready() -> bool:
            state = inspect(name, "{{.State.Status}}", "container")
            if state != "running":
                raise AssertionError(f"container {state}:\n{logs(name)}")
            return http_get(port, "/readyz")[0] == 200

        wait_until(ready, 90, "/readyz of the containerised processor to turn 200", interval=0.2)
        assert http_get(port, "/livez")[0] == 200
        pid = int(inspect(name, "{{.State.Pid}}", "container"))
        assert process_ids(pid) == (UID, GID)
        assert inspect(name, "{{.HostConfig.ReadonlyRootfs}}", "container") == "true"
        wait_all_committed(topics.bootstrap, topics.group, topics.attempts)
        metrics = http_get(port, "/metrics")[1]
        assert f'access_eval_attempts_total{{outcome="would_be_deny"}} {float(ATTEMPTS)}' in metrics
        # The Dockerfile's default build compiles the core (processor/native.py) and the image runs it so.
        assert 'core="compiled"' in next(x for x in metrics.splitlines() if x.startswith("access_eval_build_info{"))
        run(["podman", "kill", "--signal", "TERM", name])
        exit_code = run(["podman", "wait", name], timeout=60).stdout.strip()
        assert exit_code == "0", f"exit code {exit_code} after SIGTERM:\n{logs(name)}"
    finally:
        with contextlib.suppress(Exception):
            print(logs(name)[-3000:])
        run(["podman", "rm", "--force", "--time", "5", name], check=False)

    got = read_evals(topics.bootstrap, topics.evals)
    assert len(got) == ATTEMPTS
    expected_ids = {f"att-{i}" for i in range(ATTEMPTS)}
    assert {e["attemptId"] for _, e in got} == expected_ids
    for key, event in got:
        assert key == event["target"]["accountId"].encode()
        response: dict[str, Any] = event["responseData"]
        assert (response["decision"], response["state"], response["isEnforced"]) == ("Deny", "monitor", False)


def logs(name: str) -> str:
    proc = run(["podman", "logs", name], check=False)
    return proc.stdout + proc.stderr
