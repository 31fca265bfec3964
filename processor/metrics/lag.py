"""Consumer lag read from librdkafka's statistics (the ``stats_cb`` JSON payload): which partitions a
consumer handle has assigned, and how far behind each one is. Pure parsing; `Metrics` keeps the series."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Final

#: librdkafka partition fetch states in which the partition is assigned to this consumer
#: (STATISTICS.md: none, stopping, stopped, offset-query, offset-wait, validate-epoch-wait, active).
_ASSIGNED_FETCH_STATES: Final[frozenset[str]] = frozenset(
    {"active", "offset-query", "offset-wait", "validate-epoch-wait"}
)


def consumer_stats(stats_json: str) -> dict[str, Any] | None:
    """The statistics object of a consumer handle, None for a producer's (ValueError if not JSON)."""
    stats = json.loads(stats_json)
    if not isinstance(stats, dict) or stats.get("type", "consumer") != "consumer":
        return None
    return stats


def assigned_lags(stats: Mapping[str, Any]) -> Iterator[tuple[tuple[str, str], int | None]]:
    """((topic, partition), lag or None when unknown) for each partition assigned to the consumer.

    Only partitions assigned to it count: not the internal partition -1, not partitions whose fetch
    state is none/stopping/stopped. See :func:`_lag` for which librdkafka field gives the lag."""
    for topic_name, topic in _items(stats.get("topics") or {}):
        for pkey, part in _items(_get(topic, "partitions")):
            if not isinstance(part, Mapping):
                continue
            partition = part.get("partition", pkey)
            if str(partition) == "-1" or part.get("fetch_state") not in _ASSIGNED_FETCH_STATES:
                continue
            yield (str(topic_name), str(partition)), _lag(part)


def _items(obj: Any) -> Iterable[tuple[Any, Any]]:
    return obj.items() if isinstance(obj, Mapping) else ()


def _get(obj: Any, key: str) -> Any:
    return obj.get(key) if isinstance(obj, Mapping) else None


def _lag(part: Mapping[str, Any]) -> int | None:
    """The partition's lag from one librdkafka partition object, or None when unknown.

    1. ``consumer_lag_stored``: end - stored offset, when the application stores offsets
       (``store_offsets`` after each committed transaction makes this the lag of committed work).
    2. end - ``app_offset`` (the position handed to the application): with
       ``enable.auto.offset.store=false`` and offsets committed through the producer's transaction,
       librdkafka knows neither a stored nor a committed offset, and both lag fields are -1.
    3. ``consumer_lag`` (end - committed offset), e.g. right after assignment.

    "end" is ``ls_offset`` (the last stable offset, what a read_committed consumer can reach),
    else ``hi_offset``.
    """
    stored = _nonneg(part.get("consumer_lag_stored"))
    if stored is not None:
        return stored
    end = _nonneg(part.get("ls_offset"))
    if end is None:
        end = _nonneg(part.get("hi_offset"))
    app = _nonneg(part.get("app_offset"))
    if end is not None and app is not None:
        return max(0, end - app)
    return _nonneg(part.get("consumer_lag"))


def _nonneg(value: Any) -> int | None:
    """librdkafka marks unknown offsets and lags with negative numbers (-1, -1001)."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return None
