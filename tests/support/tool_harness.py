"""The operator tools as an operator runs them: `python -m processor ...` as a subprocess (real exit
codes, real stderr), the failure contract of one line on stderr, and hand-written eval event records
to read back. Shared by the tools' end-to-end tests (`tests/tools/`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

from confluent_kafka import Producer

from processor.codec.avro import EvalCodec
from tests.support.kafka_harness import Topics, free_port

REPO = Path(__file__).resolve().parents[2]
HOUR = 3_600_000
DAY = 24 * HOUR


def ae(*args: str, stdin: Any = subprocess.DEVNULL, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    """Run `access-eval ARGS` (the installed module, as an operator would) and capture everything."""
    return subprocess.run(
        [sys.executable, "-m", "processor", *args],
        cwd=REPO,
        stdin=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={k: v for k, v in os.environ.items() if not k.startswith("ACCESS_EVAL_")},
    )


def ok(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout: {proc.stdout}\nstderr: {proc.stderr}"
    return proc.stdout


def one_line_error(proc: subprocess.CompletedProcess[str], code: int, *needles: str) -> str:
    """The failure contract: the exit code, one line on stderr naming the problem, no traceback."""
    assert proc.returncode == code, f"exit {proc.returncode} != {code}\nstdout: {proc.stdout}\nstderr: {proc.stderr}"
    err = proc.stderr.strip()
    assert "Traceback" not in proc.stderr
    assert len(err.splitlines()) == 1, f"expected one line on stderr, got:\n{proc.stderr}"
    for needle in needles:
        assert needle in err, f"{needle!r} not in {err!r}"
    return err


def sget(topics: Topics, account: str) -> dict[str, Any]:
    out = ok(ae("settings", "get", "--bootstrap-servers", topics.bootstrap, "--settings-topic", topics.settings,
                "--account", account, "--format", "json"))
    result: dict[str, Any] = json.loads(out)
    return result


def sput(topics: Topics, account: str, *args: str) -> subprocess.CompletedProcess[str]:
    return ae("settings", "put", "--bootstrap-servers", topics.bootstrap, "--settings-topic", topics.settings,
              "--account", account, *args)


def states(view: dict[str, Any]) -> dict[str, tuple[str, list[str]]]:
    return {t: (v["state"], v["external_allowed_accounts"]) for t, v in view["identity_types"].items()}


def unreachable() -> str:
    return f"127.0.0.1:{free_port()}"


def make_event(
    n: int,
    target: str,
    ext: str,
    itype: str,
    iam_id: str,
    state: str,
    decision: str,
    event_ms: int,
    action: str = "cloud-object-storage.object.read",
) -> dict[str, Any]:
    """An eval event record shaped like schemas/eval_event.avsc, written out by hand."""
    enforced = state == "limited"
    return {
        "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"evt-{n}")),
        "action": "iam-access-management.account-settings.eval",
        "eventTime": event_ms,
        "attemptId": f"att-{n}",
        "initiator": {"id": iam_id, "typeURI": itype, "name": f"{iam_id}@example.com", "authnAccountId": ext,
                      "host": {"address": "203.0.113.7", "agent": "test"}},
        "target": {"accountId": target, "id": None, "serviceName": None, "action": action},
        "responseData": {
            "decision": decision,
            "isEnforced": enforced,
            "state": state,
            "allowlisted": decision == "Permit",
            "settingsVersion": {"effectiveTime": None, "topic": None, "partition": None, "offset": None,
                                "exact": True},
        },
        "outcome": "success" if decision == "Permit" else "failure",
        "severity": "warning" if enforced and decision == "Deny" else "normal",
        "reason": {"reasonCode": 200 if decision == "Permit" else 403, "reasonType": "test"},
        "observer": {"name": "access-eval", "version": "test", "evaluatedAt": event_ms + 5},
        "truncated": False,
    }


def produce_events(bootstrap: str, topic: str, events: list[dict[str, Any]], codec: EvalCodec | None = None,
                   timestamp_ms: int | None = None) -> None:
    codec = codec or EvalCodec()
    p = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    for e in events:
        kwargs: dict[str, Any] = {"headers": codec.headers}
        if timestamp_ms is not None:
            kwargs["timestamp"] = timestamp_ms
        p.produce(topic, codec.encode(e), e["target"]["accountId"].encode(), **kwargs)
    assert p.flush(30) == 0


def tail_ids(topics: Topics, *args: str) -> list[str]:
    out = ok(ae("tail", "--bootstrap-servers", topics.bootstrap, "--eval-topic", topics.evals, *args))
    return [json.loads(line)["attemptId"] for line in out.splitlines()]
