"""The inputs and readers of the schema-registry interop tests (`tests/kafka/test_registry_apicurio*.py`):
the shipped, an older and two next eval event schemas, monitor settings and attempts with their
expected events (docs/contract.md §5.1, computed here), a plain confluent-kafka consumer with the
registry's deserializer, and the ids `run` logs as registered."""

from __future__ import annotations

import copy
import io
import json
import struct
import time
import uuid
from datetime import UTC, datetime
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any

import fastavro
from confluent_kafka import Consumer, KafkaError, TopicPartition
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext

from tests.support.kafka_harness import Topics
from tests.support.processor_harness import end_offsets, produce
from tests.support.spec_model import expected_event_id

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
