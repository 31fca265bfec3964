"""Structured JSON logs: one line per event of interest, never per message, never a secret.

Secrets are kept out by rule at the sink (`JsonFormatter`): a field named like a secret is masked,
and URL user-info is masked in the message and every string field, whoever logged them."""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

#: A property whose name contains one of these is a secret (a rule, not a list of known names: a
#: property librdkafka or a registry client adds tomorrow is covered). `key` also masks harmless paths
#: such as ssl.key.location: a hidden path costs less than a leaked key.
SECRET_NAME_PARTS = ("password", "secret", "token", "jaas", "oauthbearer.config", "key", "user.info",
                     "credentials", "private")
#: The user-info of a URL (`scheme://user:pass@`), in any text.
_USER_INFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/?#@\s]*@")


def is_secret_name(name: str) -> bool:
    lower = name.lower()
    return any(part in lower for part in SECRET_NAME_PARTS)


def redact_text(text: str) -> str:
    """`text` with every URL user-info replaced: `http://user:pass@host` -> `http://***@host`."""
    return _USER_INFO.sub(r"\1***@", text) if "@" in text else text


def redact(conf: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of a client config (or any mapping) that is safe to log: secret names masked, URL
    user-info masked in every other value, nested mappings likewise."""
    return {k: "***" if is_secret_name(str(k)) else _safe(v) for k, v in conf.items()}


def _safe(value: Any) -> Any:
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, Mapping):
        return redact(value)
    if isinstance(value, list | tuple):
        return [_safe(v) for v in value]
    return value


_DIGITS = re.compile(r"\d+")


class RepeatFilter(logging.Filter):
    """Collapses repeated lines: a line equal to one let through less than `window_s` ago (digits
    aside: ports, ms, counters) is dropped and counted; the next one let through carries the count as
    `repeated`. librdkafka repeats a failure once per broker and retry (a wrong SASL password gave
    ~97 identical lines within 1 ms), which buries everything else in the log."""

    #: Distinct lines remembered; more (a flood of different lines) starts over.
    MAX_KEYS = 1000

    def __init__(self, window_s: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.window_s, self._clock = window_s, clock
        self._lock = threading.Lock()
        self._seen: dict[tuple[int, str], list[float]] = {}  # -> [time let through, dropped since]

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.levelno, _DIGITS.sub("#", record.getMessage()))
        now = self._clock()
        with self._lock:
            entry = self._seen.get(key)
            if entry is not None and now - entry[0] < self.window_s:
                entry[1] += 1
                return False
            if len(self._seen) >= self.MAX_KEYS:
                self._seen.clear()
            self._seen[key] = [now, 0]
        if entry is not None and entry[1]:
            fields = getattr(record, "fields", None)
            record.fields = {**(fields if isinstance(fields, dict) else {}), "repeated": int(entry[1])}
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": redact_text(record.getMessage()),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update(redact(fields))  # the last line of defence: by rule, whoever wrote the call
        if record.exc_info and record.exc_info[0] is not None:
            entry["error"] = redact_text(f"{record.exc_info[0].__name__}: {record.exc_info[1]}")
        return json.dumps(entry, default=str)


def setup(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def kv(**fields: Any) -> dict[str, Any]:
    """`log.info("msg", extra=kv(a=1))` puts a=1 into the JSON line."""
    return {"fields": fields}
