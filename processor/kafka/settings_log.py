"""The settings topic for the tools: reading it whole into a `DocumentView`, and publishing a record.

Reading uses the processor's own global-table reader (`SettingsTable`) and acceptance rules
(`SettingsHistory.apply_record`), so a view shows exactly the version the processor would apply now,
and says when a newer record was rejected.
"""

from __future__ import annotations

from typing import Any

from processor.core.display import printable
from processor.core.settings_view import DocumentView
from processor.errors import OpsError
from processor.kafka import clients


def read_view(props: dict[str, Any], topic: str, timeout_s: float) -> DocumentView:
    """Read the whole settings topic, up to the end offsets it has now (committed records only)."""
    from processor.kafka.table import SettingsTable

    view = DocumentView()
    table = SettingsTable(props, topic, view.history, on_record=view.note)
    try:
        try:
            table.start(timeout_s)
        except RuntimeError as exc:
            raise OpsError(f"--settings-topic: {exc}") from None
        if not table.catch_up(deadline_s=max(timeout_s, 1.0) * 4):
            raise OpsError(f"settings topic {topic!r} not read to its end offsets within {max(timeout_s, 1.0) * 4:g}s")
    finally:
        table.close()
    return view


def publish(
    props: dict[str, Any], topic: str, key: str | bytes, value: bytes | None, timeout_s: float
) -> tuple[int, int]:
    """Produce one record idempotently and wait for the acknowledgement -> (partition, offset)."""
    from confluent_kafka import Producer

    producer = Producer(clients.publisher_conf(props, delivery_timeout_s=timeout_s))
    result: dict[str, Any] = {}

    def on_delivery(err: Any, msg: Any) -> None:
        result["err"] = err
        result["msg"] = msg

    raw_key = key.encode() if isinstance(key, str) else key
    producer.produce(topic, value, raw_key, on_delivery=on_delivery)
    producer.flush(max(timeout_s, 1.0) + 5)
    if "msg" not in result:
        raise OpsError(
            f"record for {printable(raw_key.decode('utf-8', 'replace'))} not acknowledged by Kafka within "
            f"{timeout_s:g}s; it may or may not be written"
        )
    if result["err"] is not None:
        raise OpsError(f"publishing to {topic} failed: {result['err'].str()}")
    msg = result["msg"]
    return int(msg.partition()), int(msg.offset())
