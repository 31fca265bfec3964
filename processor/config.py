"""Configuration of `access-eval run`: flags win over ACCESS_EVAL_* environment variables.

Validated once at start-up; a bad value fails fast with the flag and variable to fix.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from processor.core.ids import account_problem, normalize_account
from processor.errors import ConfigError as ConfigError  # re-exported: raised by load() and read_properties()

ENV_PREFIX = "ACCESS_EVAL_"
KAFKA_ENV_PREFIX = "ACCESS_EVAL_KAFKA_"
#: Schema-registry options may share the properties file; librdkafka rejects them, so they are split off.
REGISTRY_PROPS_PREFIX = "schema.registry."
#: Java-client style registry keys that sometimes sit un-prefixed in a shared client.properties.
REGISTRY_UNPREFIXED = ("basic.auth.user.info", "basic.auth.credentials.source")


class RunConfig(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    # The `run` flags are generated from these fields (processor/cli/run.py): --field-name, the type,
    # the description as help text and the default shown from here.
    bootstrap_servers: str = Field(min_length=1, description="Kafka bootstrap servers HOST:PORT[,HOST:PORT]")
    group_id: str = Field(default="access-eval", min_length=1, description="consumer group of the attempts topic")
    settings_topic: str = Field(default="iam.account-settings", description="compacted settings topic")
    attempts_topic: str = Field(default="iam.access-attempts", description="input topic")
    eval_topic: str = Field(default="iam.access-evaluations", description="output topic")
    dlq_topic: str = Field(default="iam.access-attempts.dlq", description="dead-letter topic")
    metrics_port: int = Field(default=9108, ge=0, le=65535, description="port of /metrics, /livez, /readyz")
    metrics_host: str = Field(default="0.0.0.0", description="bind address of the HTTP server")
    create_topics: bool = Field(default=False, description="create missing topics")
    topic_partitions: int = Field(
        default=12, ge=1, le=10_000, description="partitions of topics created by --create-topics"
    )
    eval_retention_ms: int = Field(
        default=35 * 24 * 3600 * 1000,
        ge=-1,
        description="retention.ms of the eval topic when --create-topics creates it (-1 = unlimited); "
        "keep it above the 30 days `report` reads, ms",
    )
    kafka_config: Path | None = Field(
        default=None, description="librdkafka properties file (key=value), e.g. SASL/SSL settings"
    )
    delivery: Literal["exactly-once", "at-least-once"] = Field(default="exactly-once", description="delivery guarantee")
    staleness_ms: int = Field(default=500, ge=10, description="settings view staleness bound, ms")
    settings_retention_ms: int = Field(
        default=24 * 3600 * 1000, ge=1000, description="stream-time retention of old settings versions, ms"
    )
    batch_size: int = Field(default=5000, ge=1, le=100_000, description="max attempts consumed per batch")
    commit_interval_ms: int = Field(default=50, ge=1, description="transaction commit interval, ms")
    max_future_ms: int = Field(default=3_600_000, ge=0, description="max event_time ahead of the clock, ms")
    max_attempt_bytes: int = Field(
        default=256 * 1024, ge=1024, description="larger attempts go to the DLQ, bytes"
    )
    schema_registry_url: str | None = Field(
        default=None, description="register the schema and use the Confluent wire format"
    )
    account_labels: str = Field(default="", description="comma list of accounts given per-account metric labels")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(default="INFO", description="log level")
    shutdown_timeout_s: float = Field(
        default=20.0, gt=0, description="on SIGTERM: finish, commit and exit within this many seconds"
    )
    startup_timeout_s: float = Field(
        default=0.0, ge=0, description="give up reaching Kafka after this many seconds, 0 = never"
    )
    transactional_id: str | None = Field(default=None, description="default <group-id>-<hostname>")
    liveness_bound_s: float = Field(
        default=60.0, gt=0, description="/livez fails after this many seconds without progress in any loop or wait"
    )
    state_dir: Path | None = Field(
        default=None, description="directory for the settings table's snapshot, so a restart reads only the "
        "topic's tail (created if missing); unset: no local state"
    )

    @field_validator("eval_retention_ms")
    @classmethod
    def _retention(cls, v: int) -> int:
        if 0 <= v < 3_600_000:
            raise ValueError("must be -1 (unlimited) or at least 3600000 (1 h)")
        return v

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, v: Any) -> Any:
        return v.upper() if isinstance(v, str) else v

    @field_validator("account_labels")
    @classmethod
    def _label_ids(cls, v: str) -> str:
        """Each entry is an account id by the contract's rule (§3.2), like every other account-id flag."""
        for part in v.split(","):
            problem = account_problem(part) if normalize_account(part) else None
            if problem is not None:
                raise ValueError(problem)
        return v

    @property
    def account_label_set(self) -> frozenset[str]:
        labels = (normalize_account(a) for a in self.account_labels.split(","))
        return frozenset(a for a in labels if a)

    def txn_id(self) -> str:
        """Stable per instance (pod name / host name) so a restarted instance fences its zombie."""
        return self.transactional_id or f"{self.group_id}-{socket.gethostname()}"

    def kafka_properties(self) -> dict[str, str]:
        """librdkafka properties: the client properties minus schema-registry options."""
        return kafka_only(self.client_properties())

    def client_properties(self) -> dict[str, str]:
        """The properties file, then ACCESS_EVAL_KAFKA_<NAME> variables (librdkafka and registry options)."""
        props: dict[str, str] = {}
        if self.kafka_config is not None:
            props.update(read_properties(self.kafka_config))
        for name, value in os.environ.items():
            if name.startswith(KAFKA_ENV_PREFIX) and name != "ACCESS_EVAL_KAFKA_CONFIG":
                props[name[len(KAFKA_ENV_PREFIX):].lower().replace("_", ".")] = value
        props["bootstrap.servers"] = self.bootstrap_servers
        return props


def kafka_only(props: dict[str, str]) -> dict[str, str]:
    """The properties minus schema-registry options (librdkafka rejects unknown properties)."""
    return {k: v for k, v in props.items() if not k.startswith(REGISTRY_PROPS_PREFIX) and k not in REGISTRY_UNPREFIXED}


def read_properties(path: Path) -> dict[str, str]:
    """Java-style `key=value` properties (the usual client.properties), comments with # or !."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"--kafka-config / ACCESS_EVAL_KAFKA_CONFIG: cannot read {path}: {exc.strerror}") from None
    props: dict[str, str] = {}
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line[0] in "#!":
            continue
        sep = min((i for i in (line.find("="), line.find(":")) if i >= 0), default=-1)
        if sep <= 0:
            raise ConfigError(f"--kafka-config {path}:{n}: expected key=value")
        props[line[:sep].strip()] = line[sep + 1 :].strip()
    return props


def load(flags: dict[str, Any]) -> RunConfig:
    """Build the config from explicit flags (None = not given) over the environment."""
    given = {k: v for k, v in flags.items() if v is not None}
    try:
        cfg = RunConfig(**given)
    except ValidationError as exc:
        problems = []
        for err in exc.errors(include_url=False):
            name = str(err["loc"][0]) if err["loc"] else "?"
            flag = "--" + name.replace("_", "-")
            problems.append(f"{flag} / {ENV_PREFIX}{name.upper()}: {err['msg']}")
        raise ConfigError("invalid configuration: " + "; ".join(problems)) from None
    check_consistent(cfg)  # also fails fast on an unreadable properties file
    check_state_dir(cfg.state_dir)
    return cfg


def check_state_dir(path: Path | None) -> None:
    """The state directory exists (created if missing) and is writable: found at start-up, not when the
    first snapshot is written."""
    if path is None:
        return
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"invalid configuration: --state-dir / {ENV_PREFIX}STATE_DIR: cannot create {path}: "
                          f"{exc.strerror}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise ConfigError(f"invalid configuration: --state-dir / {ENV_PREFIX}STATE_DIR: {path} is not writable")


#: The topics of `run`, each in one role: a topic in two roles reads its own output back as input.
TOPIC_ROLES = ("settings_topic", "attempts_topic", "eval_topic", "dlq_topic")
#: librdkafka's transaction.timeout.ms as `run` sets it unless overridden (processor.kafka.clients).
DEFAULT_TRANSACTION_TIMEOUT_MS = 60_000


def check_consistent(cfg: RunConfig) -> None:
    """Settings that are each valid but wrong together: one topic in two roles, and a commit interval
    the broker's transaction timeout would cut short (every transaction of a quiet stream aborted)."""
    for i, first in enumerate(TOPIC_ROLES):
        for second in TOPIC_ROLES[i + 1:]:
            if getattr(cfg, first) == getattr(cfg, second):
                raise ConfigError(
                    f"invalid configuration: --{first.replace('_', '-')} and --{second.replace('_', '-')} "
                    f"({ENV_PREFIX}{first.upper()}, {ENV_PREFIX}{second.upper()}) are both "
                    f"{getattr(cfg, first)!r}: each topic serves one role")
    raw = cfg.kafka_properties().get("transaction.timeout.ms", DEFAULT_TRANSACTION_TIMEOUT_MS)
    try:
        timeout_ms = int(raw)
    except ValueError:
        raise ConfigError(f"invalid configuration: transaction.timeout.ms ({KAFKA_ENV_PREFIX}TRANSACTION_TIMEOUT_MS "
                          f"or --kafka-config) must be a whole number of ms, not {raw!r}") from None
    if cfg.delivery == "exactly-once" and cfg.commit_interval_ms * 2 >= timeout_ms:
        raise ConfigError(
            f"invalid configuration: --commit-interval-ms / {ENV_PREFIX}COMMIT_INTERVAL_MS "
            f"({cfg.commit_interval_ms}) must be below half of the producer's transaction.timeout.ms "
            f"({timeout_ms}; {KAFKA_ENV_PREFIX}TRANSACTION_TIMEOUT_MS or --kafka-config): a transaction open "
            "longer than that is aborted by the broker")
