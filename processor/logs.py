"""Structured JSON logs: one line per event of interest, never per message, never a secret."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

_SECRET_HINTS = ("password", "secret", "token", "key.pem", "keystore", "private", "credentials")


def redact(conf: dict[str, Any]) -> dict[str, Any]:
    """A copy of a librdkafka config that is safe to log."""
    return {k: ("***" if any(h in k.lower() for h in _SECRET_HINTS) else v) for k, v in conf.items()}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update(fields)
        if record.exc_info and record.exc_info[0] is not None:
            entry["error"] = f"{record.exc_info[0].__name__}: {record.exc_info[1]}"
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
