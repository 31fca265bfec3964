"""What the chart tests share: the chart's paths, the helm runner, the mapping from values to the
container's environment, and small readers of rendered manifests (tests/k8s/)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "access-eval"
# The ci/ scenario files (chart-testing convention); each renders alone, and all of them together
# (in this order) enable every optional feature and change every setting: "full values".
CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))
FULL_VALUES = CI_VALUES
DASHBOARD_FILE = CHART / "files" / "access-eval-dashboard.json"
RULES_FILE = CHART / "files" / "access-eval.rules.yaml"
RELEASE = "rel"
NAMESPACE = "iam"
# Kubernetes version to render for and validate against (kubernetes-validate ships its schemas).
KUBE_VERSION = "1.35.0"
# Custom resources: no schema in kubernetes-validate; their structure is asserted below.
CRD_KINDS = {"ServiceMonitor", "PrometheusRule", "ScaledObject", "TriggerAuthentication"}

# values.yaml path -> the ACCESS_EVAL_* variable `access-eval run` reads it from.
ENV_OF_VALUE = {
    "kafka.bootstrapServers": "ACCESS_EVAL_BOOTSTRAP_SERVERS",
    "kafka.groupId": "ACCESS_EVAL_GROUP_ID",
    "kafka.securityProtocol": "ACCESS_EVAL_KAFKA_SECURITY_PROTOCOL",
    "kafka.saslMechanism": "ACCESS_EVAL_KAFKA_SASL_MECHANISM",
    "topics.settings": "ACCESS_EVAL_SETTINGS_TOPIC",
    "topics.attempts": "ACCESS_EVAL_ATTEMPTS_TOPIC",
    "topics.evaluations": "ACCESS_EVAL_EVAL_TOPIC",
    "topics.dlq": "ACCESS_EVAL_DLQ_TOPIC",
    "topics.create": "ACCESS_EVAL_CREATE_TOPICS",
    "topics.partitions": "ACCESS_EVAL_TOPIC_PARTITIONS",
    "processor.delivery": "ACCESS_EVAL_DELIVERY",
    "processor.stalenessMs": "ACCESS_EVAL_STALENESS_MS",
    "processor.settingsRetentionMs": "ACCESS_EVAL_SETTINGS_RETENTION_MS",
    "processor.evalRetentionMs": "ACCESS_EVAL_EVAL_RETENTION_MS",
    "processor.batchSize": "ACCESS_EVAL_BATCH_SIZE",
    "processor.commitIntervalMs": "ACCESS_EVAL_COMMIT_INTERVAL_MS",
    "processor.maxFutureMs": "ACCESS_EVAL_MAX_FUTURE_MS",
    "processor.maxAttemptBytes": "ACCESS_EVAL_MAX_ATTEMPT_BYTES",
    "processor.schemaRegistryUrl": "ACCESS_EVAL_SCHEMA_REGISTRY_URL",
    "processor.accountLabels": "ACCESS_EVAL_ACCOUNT_LABELS",
    "processor.logLevel": "ACCESS_EVAL_LOG_LEVEL",
    "processor.startupTimeoutSeconds": "ACCESS_EVAL_STARTUP_TIMEOUT_S",
    "processor.shutdownTimeoutSeconds": "ACCESS_EVAL_SHUTDOWN_TIMEOUT_S",
    "processor.livenessBoundSeconds": "ACCESS_EVAL_LIVENESS_BOUND_S",
    "processor.metricsPort": "ACCESS_EVAL_METRICS_PORT",
    "processor.stateDir": "ACCESS_EVAL_STATE_DIR",
}
# `access-eval run` settings (RunConfig fields) the chart deliberately has no value for, and why; the
# chart README says so too.
NOT_IN_CHART = {
    "metrics_host": "the probes, the Service and Prometheus reach the pod on its IP: it binds 0.0.0.0",
    "transactional_id": "one value would be shared by every replica, which then fence each other; the "
                        "default <group-id>-<hostname> differs per pod",
    "kafka_config": "a file; the chart passes librdkafka properties as ACCESS_EVAL_KAFKA_* variables "
                    "(kafka.extraProperties, kafka.existingSecret, kafka.caSecret)",
}
# Configuration values that reach the container another way, each checked by its own test.
NOT_PLAIN_ENV = {"kafka.existingSecret", "kafka.caSecret.name", "kafka.caSecret.key", "kafka.extraProperties"}
# Every variable named in the product brief, except ACCESS_EVAL_SCHEMA_DIR (set by the image) and
# ACCESS_EVAL_KAFKA_CONFIG (a file path, not used by the chart).
BRIEF_ENV = {
    "ACCESS_EVAL_BOOTSTRAP_SERVERS", "ACCESS_EVAL_GROUP_ID", "ACCESS_EVAL_SETTINGS_TOPIC",
    "ACCESS_EVAL_ATTEMPTS_TOPIC", "ACCESS_EVAL_EVAL_TOPIC", "ACCESS_EVAL_DLQ_TOPIC",
    "ACCESS_EVAL_METRICS_PORT", "ACCESS_EVAL_CREATE_TOPICS", "ACCESS_EVAL_DELIVERY",
    "ACCESS_EVAL_STALENESS_MS", "ACCESS_EVAL_SETTINGS_RETENTION_MS", "ACCESS_EVAL_BATCH_SIZE",
    "ACCESS_EVAL_COMMIT_INTERVAL_MS", "ACCESS_EVAL_MAX_FUTURE_MS", "ACCESS_EVAL_MAX_ATTEMPT_BYTES",
    "ACCESS_EVAL_SCHEMA_REGISTRY_URL", "ACCESS_EVAL_ACCOUNT_LABELS", "ACCESS_EVAL_LOG_LEVEL",
    "ACCESS_EVAL_SHUTDOWN_TIMEOUT_S",
}


# --------------------------------------------------------------------------------------------
# helpers


def find_helm() -> str | None:
    found = shutil.which("helm")
    if found:
        return found
    cached = ROOT / ".cache" / "bin" / "helm"
    return str(cached) if os.access(cached, os.X_OK) else None






class Helm:
    def __init__(self, binary: str, env: dict[str, str]) -> None:
        self.binary = binary
        self.env = env

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.binary, *args], capture_output=True, text=True, timeout=120, env=self.env, check=False
        )

    def template(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.run(
            "template", RELEASE, str(CHART), "--namespace", NAMESPACE, "--kube-version", KUBE_VERSION, *args
        )

    def render(self, *args: str) -> list[dict[str, Any]]:
        proc = self.template(*args)
        assert proc.returncode == 0, proc.stderr
        return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]






def values_args(files: list[Path]) -> list[str]:
    return [arg for path in files for arg in ("-f", str(path))]




def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def default_values() -> dict[str, Any]:
    values = load_yaml(CHART / "values.yaml")
    assert isinstance(values, dict)
    return values


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Helm's values coalescing: maps merge recursively, everything else is replaced."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def full_values() -> dict[str, Any]:
    values = default_values()
    for path in FULL_VALUES:
        values = merge(values, load_yaml(path))
    return values


def get_path(values: dict[str, Any], dotted: str) -> Any:
    node: Any = values
    for part in dotted.split("."):
        node = node[part]
    return node


def leaf_paths(values: dict[str, Any], prefix: str = "") -> Iterator[str]:
    for key, value in values.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            yield from leaf_paths(value, path + ".")
        else:
            yield path


def kind_of(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = kind_of(docs, kind)
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


def deployment(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return one(docs, "Deployment")


def container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    containers = deployment(docs)["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    result: dict[str, Any] = containers[0]
    return result


def container_env(docs: list[dict[str, Any]]) -> dict[str, str]:
    """The environment the container starts with, as far as the rendered manifests define it:
    envFrom ConfigMaps rendered by the chart in order, then env (which wins). Secrets and
    ConfigMaps not rendered by the chart are external and skipped."""
    configmaps = {d["metadata"]["name"]: d.get("data", {}) for d in kind_of(docs, "ConfigMap")}
    env: dict[str, str] = {}
    c = container(docs)
    for source in c.get("envFrom", []):
        ref = source.get("configMapRef")
        if ref and ref["name"] in configmaps:
            env.update({source.get("prefix", "") + k: v for k, v in configmaps[ref["name"]].items()})
    for var in c.get("env", []):
        if "value" in var:
            env[var["name"]] = var["value"]
    return env


def as_env(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return str(value)


def checksum(docs: list[dict[str, Any]]) -> str:
    annotations = deployment(docs)["spec"]["template"]["metadata"]["annotations"]
    value: str = annotations["checksum/config"]
    return value


def write_values(tmp_path: Path, text: str) -> str:
    path = tmp_path / "values.yaml"
    path.write_text(text)
    return str(path)
