"""Confluent-compatible schema registry interop (SPEC §6 "Confluent wire format").

The eval event schema is registered under `<topic>-value` (TopicNameStrategy); the returned id goes
into every message (`00` + 4-byte id). Readers (`tail`, `report`) resolve ids through the same
registry.

Client options (basic auth, TLS) come, in increasing priority, from:

- the properties file (`--kafka-config`), with the Confluent client prefix: `schema.registry.<option>`
  (e.g. `schema.registry.basic.auth.user.info=user:secret`), or the Java client's un-prefixed
  `basic.auth.user.info`;
- environment variables `ACCESS_EVAL_SCHEMA_REGISTRY_<OPTION>` (e.g.
  `ACCESS_EVAL_SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO`, `ACCESS_EVAL_SCHEMA_REGISTRY_SSL_CA_LOCATION`).

Options: `basic.auth.user.info`, `ssl.ca.location`, `ssl.certificate.location`, `ssl.key.location`,
`ssl.key.password`, `timeout`, `max.retries`. `mock://NAME` URLs use confluent-kafka's in-process
mock registry (tests).

None of these keys are librdkafka properties: `config.kafka_only(props)` removes them before a Kafka client
is built from the same properties file.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import fastavro

from processor.codec.avro import EvalCodec, load_schema_json
from processor.config import REGISTRY_PROPS_PREFIX as PROPS_PREFIX
from processor.config import ConfigError
from processor.errors import AccessEvalError
from processor.logs import kv, redact_text

log = logging.getLogger("access_eval")

ENV_PREFIX = "ACCESS_EVAL_SCHEMA_REGISTRY_"
#: Options passed to the registry client; anything else under the prefix is an error (typo guard).
CLIENT_OPTIONS = (
    "basic.auth.user.info",
    "ssl.ca.location",
    "ssl.certificate.location",
    "ssl.key.location",
    "ssl.key.password",
    "timeout",
    "max.retries",
)
_NUMERIC = ("timeout", "max.retries")
#: Seconds per registry request unless `timeout` is set: confluent-kafka's client waits forever by
#: default, and a registry that accepts the connection but never answers would hang start-up and the tools.
DEFAULT_TIMEOUT_S = 10

_clients: dict[tuple[tuple[str, str], ...], Any] = {}
_lock = threading.Lock()


def subject_for(topic: str) -> str:
    """TopicNameStrategy: the value schema of `topic`."""
    return f"{topic}-value"


def registry_conf(
    url: str, props: Mapping[str, str] | None = None, env: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """The SchemaRegistryClient configuration for `url` from the properties file and the environment."""
    env = os.environ if env is None else env
    raw: dict[str, str] = {}
    for key, value in (props or {}).items():
        if key == "basic.auth.user.info":
            raw[key] = value
        elif key.startswith(PROPS_PREFIX) and key != PROPS_PREFIX + "url":
            raw[key[len(PROPS_PREFIX) :]] = value
    for name, value in env.items():
        if name.startswith(ENV_PREFIX) and name != ENV_PREFIX + "URL":
            raw[name[len(ENV_PREFIX) :].lower().replace("_", ".")] = value
    raw.pop("basic.auth.credentials.source", None)  # USER_INFO is the only source supported here
    unknown = sorted(set(raw) - set(CLIENT_OPTIONS))
    if unknown:
        raise ConfigError(
            f"unknown schema registry option(s) {', '.join(unknown)} (from {PROPS_PREFIX}* properties or "
            f"{ENV_PREFIX}* variables); known: {', '.join(CLIENT_OPTIONS)}"
        )
    conf: dict[str, Any] = {"url": url}
    for key, value in raw.items():
        if key in _NUMERIC:
            try:
                conf[key] = int(value)
            except ValueError:
                raise ConfigError(f"schema registry option {key} must be an integer, got {value!r}") from None
        else:
            conf[key] = value
    conf.setdefault("timeout", DEFAULT_TIMEOUT_S)
    return conf


def client_for(conf: Mapping[str, Any]) -> Any:
    """One SchemaRegistryClient per configuration (so `mock://` registries are shared in-process)."""
    try:
        from confluent_kafka.schema_registry import SchemaRegistryClient
    except ImportError as exc:  # the optional dependencies of confluent-kafka[schemaregistry]
        raise ConfigError(
            f"--schema-registry-url needs confluent-kafka's schema registry extra "
            f"(pip install 'confluent-kafka[schemaregistry]'): {exc}"
        ) from None
    key = tuple(sorted((k, str(v)) for k, v in conf.items()))
    with _lock:
        client = _clients.get(key)
        if client is None:
            try:
                client = SchemaRegistryClient.new_client(dict(conf))
            except (ValueError, TypeError, OSError) as exc:
                raise ConfigError(f"schema registry client configuration: {exc}") from None
            _clients[key] = client
        return client


def _describe(exc: Exception) -> str:
    """What went wrong, for a log line or an error: transport errors quote the URL, so its user-info
    is masked here."""
    return redact_text(_what(exc))


def _what(exc: Exception) -> str:
    code = getattr(exc, "http_status_code", None)
    if code == 401:
        return f"{exc} (check ACCESS_EVAL_SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO / schema.registry.basic.auth.user.info)"
    if code == 409:
        return f"{exc} (the subject's compatibility rules reject schemas/eval_event.avsc)"
    return str(exc) or type(exc).__name__


class RegistryUnavailable(AccessEvalError):
    """The registry could not be asked (connection refused, timeout, 5xx, 408/429): worth retrying."""


#: HTTP statuses that say "try again later" rather than "this request is wrong".
_RETRYABLE_STATUS = (408, 429, 500, 502, 503, 504)


def _retryable(exc: Exception) -> bool:
    code = getattr(exc, "http_status_code", None)
    if isinstance(code, int) and code > 0:
        return code in _RETRYABLE_STATUS
    # No HTTP status: a transport error (httpx.ConnectError, timeouts, ...), or a SchemaRegistryError
    # the client made up for an unanswered request (status -1).
    return True


def _compatibility_rule(client: Any, subject: str) -> str:
    """The rule in force for `subject`: its own, else the registry's global one; "unknown" if neither answers."""
    for args in ((subject,), ()):
        try:
            level = client.get_compatibility(*args)
        except Exception:  # 404 when the subject has no rule of its own
            continue
        return str(getattr(level, "value", level))
    return "unknown"


def register(url: str, topic: str, props: Mapping[str, str] | None = None, schema: dict[str, Any] | None = None) -> int:
    """Register the eval event schema under `<topic>-value` and return its id (idempotent).

    Raises RegistryUnavailable when the registry cannot be reached or answers "later" (retry), and
    ConfigError when it answers "no" (incompatible schema, bad credentials, invalid schema)."""
    from confluent_kafka.schema_registry import Schema

    client = client_for(registry_conf(url, props))
    subject = subject_for(topic)
    schema_str = json.dumps(schema if schema is not None else load_schema_json())
    where = f"--schema-registry-url / ACCESS_EVAL_SCHEMA_REGISTRY_URL={redact_text(url)!r}"
    try:
        schema_id: int = client.register_schema(subject, Schema(schema_str, "AVRO"))
    except Exception as exc:  # SchemaRegistryError, transport errors of httpx
        if getattr(exc, "http_status_code", None) == 409:
            rule = _compatibility_rule(client, subject)
            raise ConfigError(
                f"the schema registry rejects schemas/eval_event.avsc under subject {subject!r}: incompatible "
                f"with the registered versions under compatibility rule {rule} (HTTP 409, error "
                f"{getattr(exc, 'error_code', '?')}) at {where}"
            ) from None
        message = (f"cannot register the eval event schema under subject {subject!r} at {where}: "
                   f"{_describe(exc)}").replace("\n", " ")
        if _retryable(exc):
            raise RegistryUnavailable(message) from None
        raise ConfigError(message) from None
    return schema_id


def register_when_available(
    url: str,
    topic: str,
    props: Mapping[str, str] | None = None,
    *,
    timeout_s: float = 0.0,
    stop: Callable[[], bool] = lambda: False,
    waiting: Callable[[str | None], None] = lambda _problem: None,
    schema: dict[str, Any] | None = None,
) -> int | None:
    """`register`, retried with backoff (0.5 s doubling to 10 s) while the registry is unavailable.

    `waiting(problem)` is called with a description on every failed attempt and with None on success
    (readiness); gives up with ConfigError after `timeout_s` (0 = never); returns None if `stop()`
    turns true first (SIGTERM while waiting)."""
    deadline = time.monotonic() + timeout_s if timeout_s > 0 else None
    backoff = 0.5
    while not stop():
        try:
            schema_id = register(url, topic, props, schema)
        except RegistryUnavailable as exc:
            if deadline is not None and time.monotonic() > deadline:
                raise ConfigError(f"{exc} (gave up after {timeout_s:g}s, --startup-timeout-s)") from None
            waiting("schema registry unreachable")
            log.warning("schema registry not reachable yet; retrying",
                        extra=kv(url=redact_text(url), subject=subject_for(topic), error=str(exc), retry_in_s=backoff))
            until = time.monotonic() + backoff
            while time.monotonic() < until and not stop():
                time.sleep(0.1)  # a retry backoff
                waiting("schema registry unreachable")
            backoff = min(backoff * 2, 10.0)
            continue
        waiting(None)
        log.info("eval event schema registered",
                 extra=kv(url=redact_text(url), subject=subject_for(topic), schema_id=schema_id))
        return schema_id
    return None


def codec_for_topic(url: str, topic: str, kafka_props: Mapping[str, str] | None = None) -> EvalCodec:
    """An EvalCodec writing the Confluent wire format with the id registered for `<topic>-value`."""
    schema = load_schema_json()
    return EvalCodec(schema_id=register(url, topic, kafka_props, schema), schema=schema)


def resolver(url: str, kafka_props: Mapping[str, str] | None = None) -> Callable[[int], dict[str, Any]]:
    """`resolve_id(schema_id) -> writer schema` for EvalCodec.decode, cached per id."""
    client = client_for(registry_conf(url, kafka_props))
    cache: dict[int, dict[str, Any]] = {}

    def resolve(schema_id: int) -> dict[str, Any]:
        found = cache.get(schema_id)
        if found is None:
            try:
                schema = client.get_schema(schema_id)
            except Exception as exc:
                raise LookupError(f"schema id {schema_id} not found at {redact_text(url)}: {_describe(exc)}") from None
            if (schema.schema_type or "AVRO") != "AVRO":
                raise LookupError(f"schema id {schema_id} is a {schema.schema_type} schema, not Avro")
            # Parsed once: EvalCodec.decode re-parses per message, which is a no-op for a parsed schema.
            parsed = fastavro.parse_schema(json.loads(schema.schema_str))
            assert isinstance(parsed, dict)
            found = cache[schema_id] = parsed
        return found

    return resolve
