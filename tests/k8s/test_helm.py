"""The Helm chart (helm/access-eval): lint, values schema, rendering, offline Kubernetes schema
validation, and the wiring from values to the running container. The check against a real API
server (admission, CRD schemas, Pod Security) is tests/k8s/test_k8s_apply.py.

Tests that run helm are marked `helm`. helm is found on PATH or in .cache/bin (scripts/bootstrap
--all builds it there); without it these tests fail (tests/support/required.py).
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from processor.config import RunConfig
from tests.support.required import missing

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


@pytest.fixture(scope="session")
def helm_bin() -> str:
    path = find_helm()
    if path is None:
        missing("helm", "run `scripts/bootstrap --all` (go install helm.sh/helm/v3/cmd/helm)")
    return path


@pytest.fixture(scope="session")
def helm_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Keep helm's cache/config/data out of the user's home."""
    home = tmp_path_factory.mktemp("helm-home")
    env = dict(os.environ)
    for var in ("HELM_CACHE_HOME", "HELM_CONFIG_HOME", "HELM_DATA_HOME"):
        env[var] = str(home / var.lower())
    return env


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


@pytest.fixture(scope="session")
def helm(helm_bin: str, helm_env: dict[str, str]) -> Helm:
    return Helm(helm_bin, helm_env)


@pytest.fixture(scope="session")
def default_docs(helm: Helm) -> list[dict[str, Any]]:
    return helm.render()


def values_args(files: list[Path]) -> list[str]:
    return [arg for path in files for arg in ("-f", str(path))]


@pytest.fixture(scope="session")
def full_docs(helm: Helm) -> list[dict[str, Any]]:
    return helm.render(*values_args(FULL_VALUES))


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


# --------------------------------------------------------------------------------------------
# lint and render


LINT_CASES: dict[str, list[Path]] = {
    "defaults": [], **{path.name: [path] for path in CI_VALUES}, "full-values": FULL_VALUES,
}


def test_ci_scenarios_exist() -> None:
    assert len(CI_VALUES) >= 5, CI_VALUES
    assert not (CHART / "ci" / "full-values.yaml").exists()


@pytest.mark.helm
@pytest.mark.parametrize("case", list(LINT_CASES))
def test_lint(helm: Helm, case: str) -> None:
    proc = helm.run("lint", "--strict", str(CHART), *values_args(LINT_CASES[case]))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 chart(s) failed" in proc.stdout


@pytest.mark.helm
def test_defaults_render_the_core_objects(default_docs: list[dict[str, Any]]) -> None:
    kinds = sorted(d["kind"] for d in default_docs)
    assert kinds == sorted(["ConfigMap", "Deployment", "NetworkPolicy", "PodDisruptionBudget", "Service",
                            "ServiceAccount"])
    for doc in default_docs:
        assert doc["metadata"]["namespace"] == NAMESPACE
        assert doc["metadata"]["name"] == f"{RELEASE}-access-eval"
        assert doc["metadata"]["labels"]["app.kubernetes.io/instance"] == RELEASE
    assert deployment(default_docs)["spec"]["replicas"] == default_values()["replicaCount"]


@pytest.mark.helm
def test_full_values_render_every_optional_object(full_docs: list[dict[str, Any]]) -> None:
    kinds = sorted(d["kind"] for d in full_docs)
    assert kinds == sorted([
        "ConfigMap", "ConfigMap", "Deployment", "NetworkPolicy", "PodDisruptionBudget", "PrometheusRule",
        "ScaledObject", "Service", "ServiceAccount", "ServiceMonitor", "TriggerAuthentication",
    ])
    # KEDA owns the replica count.
    assert "replicas" not in deployment(full_docs)["spec"]


@pytest.mark.helm
def test_hpa(helm: Helm) -> None:
    docs = helm.render("--set", "autoscaling.enabled=true", "--set", "autoscaling.targetMemoryUtilizationPercentage=80")
    hpa = one(docs, "HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1", "kind": "Deployment", "name": deployment(docs)["metadata"]["name"],
    }
    assert {m["resource"]["name"] for m in hpa["spec"]["metrics"]} == {"cpu", "memory"}
    assert "replicas" not in deployment(docs)["spec"]


VALIDATION_CASES = {
    "defaults": [],
    "full-values": values_args(FULL_VALUES),
    "hpa": ["--set", "autoscaling.enabled=true"],
    "no-sa-no-pdb": ["--set", "serviceAccount.create=false", "--set", "podDisruptionBudget.enabled=false",
                     "--set", "podAntiAffinity.type=none", "--set", "topologySpread.enabled=false"],
    "network-policy-defaults": ["--set", "networkPolicy.enabled=true"],
}


@pytest.mark.helm
@pytest.mark.parametrize("case", sorted(VALIDATION_CASES))
def test_manifests_are_valid_kubernetes_objects(helm: Helm, case: str) -> None:
    docs = helm.render(*VALIDATION_CASES[case])
    checked = set()
    for doc in docs:
        if doc["kind"] in CRD_KINDS:
            continue
        try:
            kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = "/".join(str(p) for p in exc.path)
            pytest.fail(f"{doc['kind']}/{doc['metadata']['name']}: {path}: {exc.message}")
        checked.add(doc["kind"])
    assert {"Deployment", "ConfigMap", "Service"} <= checked


@pytest.mark.helm
def test_kubernetes_validation_catches_mistakes(default_docs: list[dict[str, Any]]) -> None:
    """The offline validator is strict: an unknown field or a wrong type is an error."""
    for mutate in (
        lambda c: c.update(readinessprobe=c.pop("readinessProbe")),
        lambda c: c["ports"][0].update(containerPort="metrics"),
    ):
        doc = copy.deepcopy(deployment(default_docs))
        mutate(doc["spec"]["template"]["spec"]["containers"][0])
        with pytest.raises(kubernetes_validate.ValidationError):
            kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)


# --------------------------------------------------------------------------------------------
# values schema and template guards


@pytest.mark.helm
def test_schema_rejects_invalid_values_with_a_clear_message(helm: Helm, tmp_path: Path) -> None:
    bad = write_values(tmp_path, 'replicaCount: two\nprocessor:\n  delivery: sometimes\n')
    proc = helm.template("-f", bad)
    assert proc.returncode != 0
    assert "values don't meet the specifications of the schema" in proc.stderr
    assert "/processor/delivery" in proc.stderr
    assert "value must be one of 'exactly-once', 'at-least-once'" in proc.stderr
    assert "/replicaCount" in proc.stderr
    assert "got string, want integer" in proc.stderr
    # helm lint reports the same problems.
    lint = helm.run("lint", str(CHART), "-f", bad)
    assert lint.returncode != 0
    assert "/processor/delivery" in lint.stdout + lint.stderr


SCHEMA_CASES = {
    "bootstrap servers required": (["--set", "kafka.bootstrapServers="], "/kafka/bootstrapServers"),
    "bootstrap servers without spaces": (["--set", "kafka.bootstrapServers=a:1 b:2"], "/kafka/bootstrapServers"),
    "unknown top-level value": (["--set", "replicas=3"], "additional properties 'replicas' not allowed"),
    "unknown processor value": (["--set", "processor.deliveryMode=x"], "'deliveryMode' not allowed"),
    "security protocol enum": (["--set", "kafka.securityProtocol=TLS"], "/kafka/securityProtocol"),
    "sasl mechanism enum": (["--set", "kafka.saslMechanism=GSSAPI"], "/kafka/saslMechanism"),
    "log level enum": (["--set", "processor.logLevel=verbose"], "/processor/logLevel"),
    "metrics port range": (["--set", "processor.metricsPort=80"], "/processor/metricsPort"),
    "batch size type": (["--set-string", "processor.batchSize=5000"], "/processor/batchSize"),
    "topic name": (["--set", "topics.attempts=bad topic"], "/topics/attempts"),
    "librdkafka property name": (["--set", "kafka.extraProperties.Client_Id=x"], "/kafka/extraProperties"),
    "registry url": (["--set", "processor.schemaRegistryUrl=registry:8081"], "/processor/schemaRegistryUrl"),
    "keda offset policy": (["--set", "keda.offsetResetPolicy=middle"], "/keda/offsetResetPolicy"),
    # `run` accepts -1 (unlimited) or at least one hour (processor/config.py).
    "eval retention negative": (["--set", "processor.evalRetentionMs=-2"], "/processor/evalRetentionMs"),
    "eval retention zero": (["--set", "processor.evalRetentionMs=0"], "/processor/evalRetentionMs"),
    "eval retention below an hour": (["--set", "processor.evalRetentionMs=3599999"], "/processor/evalRetentionMs"),
    "eval retention type": (["--set-string", "processor.evalRetentionMs=3600000"], "/processor/evalRetentionMs"),
    # `run` wants more than 0 s; the chart, like processor.shutdownTimeoutSeconds, whole seconds.
    "liveness bound zero": (["--set", "processor.livenessBoundSeconds=0"], "/processor/livenessBoundSeconds"),
    "liveness bound negative": (["--set", "processor.livenessBoundSeconds=-5"], "/processor/livenessBoundSeconds"),
    "liveness bound fraction": (["--set", "processor.livenessBoundSeconds=0.5"], "/processor/livenessBoundSeconds"),
    "relative state dir": (["--set", "processor.stateDir=state"], "/processor/stateDir"),
    "state dir on /tmp": (["--set", "processor.stateDir=/tmp"], "/processor/stateDir"),
    "state volume size": (["--set", "stateVolume.sizeLimit=lots"], "/stateVolume/sizeLimit"),
}


@pytest.mark.helm
@pytest.mark.parametrize("case", sorted(SCHEMA_CASES))
def test_schema_rejects(helm: Helm, case: str) -> None:
    args, message = SCHEMA_CASES[case]
    proc = helm.template(*args)
    assert proc.returncode != 0, f"{case}: accepted"
    assert "values don't meet the specifications of the schema" in proc.stderr
    assert message in proc.stderr


GUARD_CASES = {
    "grace period shorter than shutdown": (
        ["--set", "terminationGracePeriodSeconds=20", "--set", "processor.shutdownTimeoutSeconds=20"],
        "terminationGracePeriodSeconds (20) must be greater than processor.shutdownTimeoutSeconds (20)",
    ),
    "hpa and keda": (
        ["--set", "autoscaling.enabled=true", "--set", "keda.enabled=true"],
        "autoscaling.enabled and keda.enabled are mutually exclusive",
    ),
    "sasl mechanism without sasl protocol": (
        ["--set", "kafka.saslMechanism=PLAIN"], "set kafka.securityProtocol to SASL_SSL or SASL_PLAINTEXT",
    ),
    "sasl protocol without mechanism": (
        ["--set", "kafka.securityProtocol=SASL_SSL"], "set kafka.saslMechanism",
    ),
    "keda with sasl needs the secret": (
        ["--set", "keda.enabled=true", "--set", "kafka.securityProtocol=SASL_SSL",
         "--set", "kafka.saslMechanism=PLAIN"],
        "keda.enabled with SASL needs kafka.existingSecret",
    ),
    "password in extraProperties": (
        ["--set", "kafka.extraProperties.sasl\\.password=hunter2"],
        "put it in the Secret named by kafka.existingSecret as ACCESS_EVAL_KAFKA_SASL_PASSWORD",
    ),
    "OAuth config in extraProperties": (
        ["--set", "kafka.extraProperties.sasl\\.oauthbearer\\.config=clientSecret=hunter2"],
        "as ACCESS_EVAL_KAFKA_SASL_OAUTHBEARER_CONFIG",
    ),
    "OAuth client secret in extraProperties": (
        ["--set", "kafka.extraProperties.sasl\\.oauthbearer\\.client\\.secret=hunter2"],
        "as ACCESS_EVAL_KAFKA_SASL_OAUTHBEARER_CLIENT_SECRET",
    ),
    "token in extraProperties": (
        ["--set", "kafka.extraProperties.sasl\\.oauthbearer\\.token=hunter2"],
        "as ACCESS_EVAL_KAFKA_SASL_OAUTHBEARER_TOKEN",
    ),
    "JAAS line in extraProperties": (
        ["--set", "kafka.extraProperties.sasl\\.jaas\\.config=x"], "as ACCESS_EVAL_KAFKA_SASL_JAAS_CONFIG",
    ),
    "inline key in extraProperties": (
        ["--set", "kafka.extraProperties.ssl\\.key\\.pem=x"], "as ACCESS_EVAL_KAFKA_SSL_KEY_PEM",
    ),
    "first-class property in extraProperties": (
        ["--set", "kafka.extraProperties.group\\.id=x"], "kafka.extraProperties.group.id: use kafka.groupId",
    ),
}


@pytest.mark.helm
@pytest.mark.parametrize("case", sorted(GUARD_CASES))
def test_template_guards(helm: Helm, case: str) -> None:
    args, message = GUARD_CASES[case]
    proc = helm.template(*args)
    assert proc.returncode != 0, f"{case}: accepted"
    assert message in proc.stderr
    assert "hunter2" not in proc.stderr


# --------------------------------------------------------------------------------------------
# the Deployment


@pytest.mark.helm
@pytest.mark.parametrize("docs_fixture", ["default_docs", "full_docs"])
def test_probes_hit_health_endpoints_on_the_metrics_port(
    request: pytest.FixtureRequest, docs_fixture: str
) -> None:
    docs = request.getfixturevalue(docs_fixture)
    values = default_values() if docs_fixture == "default_docs" else full_values()
    c = container(docs)
    ports = {p["name"]: p for p in c["ports"]}
    assert set(ports) == {"metrics"}
    assert ports["metrics"]["containerPort"] == values["processor"]["metricsPort"]
    assert container_env(docs)["ACCESS_EVAL_METRICS_PORT"] == str(values["processor"]["metricsPort"])
    expected = {"livenessProbe": "/livez", "readinessProbe": "/readyz", "startupProbe": "/livez"}
    for probe, path in expected.items():
        assert c[probe]["httpGet"] == {"path": path, "port": "metrics"}, probe
    service = one(docs, "Service")
    assert service["spec"]["ports"] == [{
        "name": "metrics", "port": values["service"]["port"], "targetPort": "metrics", "protocol": "TCP",
    }]


@pytest.mark.helm
def test_probes_can_be_disabled(helm: Helm) -> None:
    docs = helm.render("--set", "startupProbe.enabled=false", "--set", "livenessProbe.enabled=false")
    c = container(docs)
    assert "startupProbe" not in c and "livenessProbe" not in c
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"


@pytest.mark.helm
@pytest.mark.parametrize("docs_fixture", ["default_docs", "full_docs"])
def test_security_context(request: pytest.FixtureRequest, docs_fixture: str) -> None:
    docs = request.getfixturevalue(docs_fixture)
    pod = deployment(docs)["spec"]["template"]["spec"]
    psc = pod["securityContext"]
    assert psc["runAsNonRoot"] is True
    assert isinstance(psc["runAsUser"], int) and psc["runAsUser"] > 0
    assert isinstance(psc["fsGroup"], int) and psc["fsGroup"] > 0
    assert psc["seccompProfile"] == {"type": "RuntimeDefault"}
    csc = container(docs)["securityContext"]
    assert csc["readOnlyRootFilesystem"] is True
    assert csc["allowPrivilegeEscalation"] is False
    assert csc["capabilities"]["drop"] == ["ALL"]
    assert not csc.get("capabilities", {}).get("add")
    # The only writable path is an emptyDir on /tmp.
    volumes = {v["name"]: v for v in pod["volumes"]}
    tmp_mounts = [m for m in container(docs)["volumeMounts"] if m["mountPath"] == "/tmp"]
    assert len(tmp_mounts) == 1
    assert "emptyDir" in volumes[tmp_mounts[0]["name"]]
    # No Kubernetes API access needed.
    assert pod["automountServiceAccountToken"] is False
    # No ACCESS_EVAL_*_PORT variables injected for Services (they would reach librdkafka).
    assert pod["enableServiceLinks"] is False


@pytest.mark.helm
@pytest.mark.parametrize("docs_fixture", ["default_docs", "full_docs"])
def test_grace_period_exceeds_shutdown_timeout(request: pytest.FixtureRequest, docs_fixture: str) -> None:
    docs = request.getfixturevalue(docs_fixture)
    grace = deployment(docs)["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    shutdown = int(container_env(docs)["ACCESS_EVAL_SHUTDOWN_TIMEOUT_S"])
    assert grace > shutdown
    if docs_fixture == "default_docs":
        assert (grace, shutdown) == (60, 20)


@pytest.mark.helm
def test_scheduling_spreads_pods(default_docs: list[dict[str, Any]], full_docs: list[dict[str, Any]]) -> None:
    dep = deployment(default_docs)
    selector = dep["spec"]["selector"]["matchLabels"]
    pod = dep["spec"]["template"]["spec"]
    assert selector.items() <= dep["spec"]["template"]["metadata"]["labels"].items()
    preferred = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert preferred[0]["podAffinityTerm"]["labelSelector"]["matchLabels"] == selector
    assert preferred[0]["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    spread = pod["topologySpreadConstraints"]
    assert spread[0]["topologyKey"] == "topology.kubernetes.io/zone"
    assert spread[0]["whenUnsatisfiable"] == "ScheduleAnyway"
    assert spread[0]["labelSelector"]["matchLabels"] == selector
    # podAntiAffinity.type=hard in the full values.
    full_pod = deployment(full_docs)["spec"]["template"]["spec"]
    assert "requiredDuringSchedulingIgnoredDuringExecution" in full_pod["affinity"]["podAntiAffinity"]
    assert len(full_pod["topologySpreadConstraints"]) == 2
    # Service and PDB select the pods.
    assert one(default_docs, "Service")["spec"]["selector"] == selector
    pdb = one(default_docs, "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"] == selector
    assert pdb["spec"] == {
        "maxUnavailable": 1, "unhealthyPodEvictionPolicy": "AlwaysAllow", "selector": {"matchLabels": selector},
    }
    assert one(full_docs, "PodDisruptionBudget")["spec"]["minAvailable"] == 1


@pytest.mark.helm
def test_image_reference(helm: Helm, default_docs: list[dict[str, Any]]) -> None:
    app_version = load_yaml(CHART / "Chart.yaml")["appVersion"]
    assert container(default_docs)["image"] == f"access-eval:{app_version}"
    assert container(default_docs)["args"] == ["run"]
    digest = "sha256:" + "a" * 64
    docs = helm.render("--set", f"image.digest={digest}")
    assert container(docs)["image"] == f"access-eval@{digest}"


# --------------------------------------------------------------------------------------------
# configuration: values -> ConfigMap -> envFrom -> container


def test_every_configuration_value_has_an_env_mapping() -> None:
    """A new value under kafka/topics/processor must be wired (and listed here) to count as done."""
    values = default_values()
    paths = {p for section in ("kafka", "topics", "processor") for p in leaf_paths(values[section], section + ".")}
    assert paths == set(ENV_OF_VALUE) | NOT_PLAIN_ENV
    assert set(ENV_OF_VALUE.values()) >= BRIEF_ENV


@pytest.mark.helm
@pytest.mark.parametrize("docs_fixture", ["default_docs", "full_docs"])
def test_every_configuration_value_reaches_the_container_env(
    request: pytest.FixtureRequest, docs_fixture: str
) -> None:
    docs = request.getfixturevalue(docs_fixture)
    values = default_values() if docs_fixture == "default_docs" else full_values()
    env = container_env(docs)
    # The container takes its configuration from the chart's ConfigMap, via envFrom.
    configmap_name = deployment(docs)["metadata"]["name"]
    assert container(docs)["envFrom"][0] == {"configMapRef": {"name": configmap_name}}
    for path, var in ENV_OF_VALUE.items():
        value = get_path(values, path)
        if value in ("", []) and path in ("kafka.securityProtocol", "kafka.saslMechanism",
                                          "processor.schemaRegistryUrl", "processor.stateDir"):
            # Unset: the variable is left out so the app/librdkafka default applies.
            assert var not in env, var
            continue
        assert env.get(var) == as_env(value), f"{path} -> {var}"


def test_every_run_setting_has_a_chart_value_or_a_documented_reason() -> None:
    """A new `access-eval run` setting gets a chart value (ENV_OF_VALUE) or a reason in NOT_IN_CHART
    and the chart README; settings set only through `extraEnv` are easy to miss."""
    fields = set(RunConfig.model_fields)
    mapped = {var.removeprefix("ACCESS_EVAL_").lower() for var in ENV_OF_VALUE.values()}
    unmapped = fields - mapped
    assert unmapped == set(NOT_IN_CHART), (
        f"without a chart value or a reason: {sorted(unmapped - set(NOT_IN_CHART))}; "
        f"reasons for settings the chart now maps or that no longer exist: {sorted(set(NOT_IN_CHART) - unmapped)}"
    )
    readme = (CHART / "README.md").read_text()
    for field in NOT_IN_CHART:
        assert f"`--{field.replace('_', '-')}`" in readme, f"the chart README does not say why --{field} has no value"


@pytest.mark.helm
def test_chart_defaults_are_the_run_defaults(
    default_docs: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The default values configure `access-eval run` exactly like its own defaults (processor/config.py),
    the required bootstrap servers aside: a default changed on one side only fails here."""
    for var in list(os.environ):
        if var.startswith("ACCESS_EVAL_"):
            monkeypatch.delenv(var)  # RunConfig also reads the environment
    env = container_env(default_docs)
    given = {var.removeprefix("ACCESS_EVAL_").lower(): value for var, value in env.items()
             if var.startswith("ACCESS_EVAL_") and not var.startswith("ACCESS_EVAL_KAFKA_")}
    assert RunConfig(**given).model_dump() == RunConfig(bootstrap_servers=given["bootstrap_servers"]).model_dump()


@pytest.mark.helm
@pytest.mark.parametrize(("retention_ms", "bound_s"), [(-1, 1), (3_600_000, 60), (7_776_000_000, 600)])
def test_eval_retention_and_liveness_bound_reach_the_configmap(helm: Helm, retention_ms: int, bound_s: int) -> None:
    """processor.evalRetentionMs and processor.livenessBoundSeconds land in the ConfigMap as plain integers
    (not 7.776e+09), which `access-eval run` accepts as they are."""
    docs = helm.render("--set", f"processor.evalRetentionMs={retention_ms}",
                       "--set", f"processor.livenessBoundSeconds={bound_s}")
    data = one(docs, "ConfigMap")["data"]
    assert data["ACCESS_EVAL_EVAL_RETENTION_MS"] == str(retention_ms)
    assert data["ACCESS_EVAL_LIVENESS_BOUND_S"] == str(bound_s)
    assert container_env(docs)["ACCESS_EVAL_EVAL_RETENTION_MS"] == str(retention_ms)
    cfg = RunConfig(bootstrap_servers="kafka:9092", eval_retention_ms=data["ACCESS_EVAL_EVAL_RETENTION_MS"],
                    liveness_bound_s=data["ACCESS_EVAL_LIVENESS_BOUND_S"])
    assert (cfg.eval_retention_ms, cfg.liveness_bound_s) == (retention_ms, bound_s)


def test_full_values_change_every_configuration_value() -> None:
    """The full-values file exercises each setting with a non-default value."""
    defaults, full = default_values(), full_values()
    unchanged = [p for p in ENV_OF_VALUE if get_path(defaults, p) == get_path(full, p)]
    assert unchanged == []


@pytest.mark.helm
def test_env_names_are_read_by_the_app(default_docs: list[dict[str, Any]], full_docs: list[dict[str, Any]]) -> None:
    fields = set(RunConfig.model_fields)
    for docs in (default_docs, full_docs):
        for var in container_env(docs):
            if var.startswith("ACCESS_EVAL_") and not var.startswith("ACCESS_EVAL_KAFKA_"):
                assert var.removeprefix("ACCESS_EVAL_").lower() in fields, f"{var} is not read by access-eval run"


@pytest.mark.helm
def test_kafka_credentials_come_from_the_existing_secret(
    default_docs: list[dict[str, Any]], full_docs: list[dict[str, Any]]
) -> None:
    assert all("secretRef" not in s for s in container(default_docs)["envFrom"])
    env_from = container(full_docs)["envFrom"]
    # After the ConfigMap, so the Secret's ACCESS_EVAL_KAFKA_* keys win.
    assert env_from[0] == {"configMapRef": {"name": "access-eval"}}
    assert env_from[1] == {"secretRef": {"name": full_values()["kafka"]["existingSecret"]}}
    # No credential ever lands in a ConfigMap.
    for cm in kind_of(full_docs, "ConfigMap"):
        for key in cm.get("data", {}):
            assert not re.search("PASSWORD|SECRET|USERNAME", key), key


@pytest.mark.helm
def test_kafka_ca_certificate_is_mounted(full_docs: list[dict[str, Any]]) -> None:
    ca = full_values()["kafka"]["caSecret"]
    pod = deployment(full_docs)["spec"]["template"]["spec"]
    volume = next(v for v in pod["volumes"] if v.get("secret", {}).get("secretName") == ca["name"])
    mount = next(m for m in container(full_docs)["volumeMounts"] if m["name"] == volume["name"])
    assert mount["readOnly"] is True
    item = volume["secret"]["items"][0]
    assert item["key"] == ca["key"]
    assert container_env(full_docs)["ACCESS_EVAL_KAFKA_SSL_CA_LOCATION"] == f"{mount['mountPath']}/{item['path']}"


@pytest.mark.helm
def test_local_state_gets_a_writable_volume_and_the_root_stays_read_only(
    helm: Helm, default_docs: list[dict[str, Any]], full_docs: list[dict[str, Any]]
) -> None:
    """processor.stateDir mounts an emptyDir (or stateVolume.existingClaim) there and names it in
    ACCESS_EVAL_STATE_DIR; unset, neither exists. The root filesystem stays read-only either way."""
    assert "ACCESS_EVAL_STATE_DIR" not in container_env(default_docs)
    assert all(v["name"] != "state" for v in deployment(default_docs)["spec"]["template"]["spec"]["volumes"])
    empty_dir = helm.render("--set", "processor.stateDir=/var/lib/access-eval", "--set", "stateVolume.sizeLimit=2Gi")
    claim = full_values()["stateVolume"]["existingClaim"]
    for docs, source in ((empty_dir, {"emptyDir": {"sizeLimit": "2Gi"}}),
                         (full_docs, {"persistentVolumeClaim": {"claimName": claim}})):
        path = container_env(docs)["ACCESS_EVAL_STATE_DIR"]
        mount, = (m for m in container(docs)["volumeMounts"] if m["mountPath"] == path)
        volume, = (v for v in deployment(docs)["spec"]["template"]["spec"]["volumes"] if v["name"] == mount["name"])
        assert {k: v for k, v in volume.items() if k != "name"} == source
        assert not mount.get("readOnly") and container(docs)["securityContext"]["readOnlyRootFilesystem"] is True
        assert RunConfig(bootstrap_servers="kafka:9092", state_dir=path).state_dir is not None


@pytest.mark.helm
def test_extra_librdkafka_properties_become_kafka_env(full_docs: list[dict[str, Any]]) -> None:
    props = full_values()["kafka"]["extraProperties"]
    assert props
    env = container_env(full_docs)
    for name, value in props.items():
        var = "ACCESS_EVAL_KAFKA_" + name.upper().replace(".", "_")
        assert env.get(var) == as_env(value), var
        # ... which the app maps back to the property name.
        assert var.removeprefix("ACCESS_EVAL_KAFKA_").lower().replace("_", ".") == name


@pytest.mark.helm
def test_config_change_rolls_the_pods(helm: Helm, default_docs: list[dict[str, Any]]) -> None:
    assert re.fullmatch("[0-9a-f]{64}", checksum(default_docs))
    assert checksum(helm.render()) == checksum(default_docs)
    assert checksum(helm.render("--set", "processor.logLevel=DEBUG")) != checksum(default_docs)


# --------------------------------------------------------------------------------------------
# monitoring, autoscaling, network policy


@pytest.mark.helm
def test_dashboard_configmap_ships_the_dashboard_file(full_docs: list[dict[str, Any]]) -> None:
    cm = next(d for d in kind_of(full_docs, "ConfigMap") if d["metadata"]["name"].endswith("-dashboard"))
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["metadata"]["namespace"] == full_values()["grafanaDashboard"]["namespace"]
    assert cm["data"] == {DASHBOARD_FILE.name: DASHBOARD_FILE.read_text()}
    json.loads(cm["data"][DASHBOARD_FILE.name])


@pytest.mark.helm
def test_prometheus_rule_ships_the_rules_file(full_docs: list[dict[str, Any]]) -> None:
    rule = one(full_docs, "PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["metadata"]["labels"]["release"] == "prometheus"
    rules = load_yaml(RULES_FILE)
    assert "groups" in rules
    assert rule["spec"] == rules


@pytest.mark.helm
def test_service_monitor_scrapes_the_metrics_port(full_docs: list[dict[str, Any]]) -> None:
    sm = one(full_docs, "ServiceMonitor")
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    assert sm["metadata"]["namespace"] == "monitoring"
    assert sm["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    service = one(full_docs, "Service")
    assert sm["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    (endpoint,) = sm["spec"]["endpoints"]
    assert endpoint["port"] == "metrics" and endpoint["path"] == "/metrics"
    assert endpoint["interval"] == "15s"


@pytest.mark.helm
def test_keda_scales_on_attempts_topic_lag(full_docs: list[dict[str, Any]]) -> None:
    values = full_values()
    so = one(full_docs, "ScaledObject")
    assert so["apiVersion"] == "keda.sh/v1alpha1"
    assert so["spec"]["scaleTargetRef"]["name"] == deployment(full_docs)["metadata"]["name"]
    assert (so["spec"]["minReplicaCount"], so["spec"]["maxReplicaCount"]) == (2, 24)
    (trigger,) = so["spec"]["triggers"]
    assert trigger["type"] == "kafka"
    meta = trigger["metadata"]
    assert meta["topic"] == values["topics"]["attempts"] == "prod.iam.access-attempts"
    assert meta["consumerGroup"] == values["kafka"]["groupId"] == "access-eval-prod"
    assert meta["bootstrapServers"] == "broker-0.kafka.example.com:9093,broker-1.kafka.example.com:9094"
    assert meta["lagThreshold"] == "5000"
    assert all(isinstance(v, str) for v in meta.values())
    assert (meta["sasl"], meta["tls"]) == ("scram_sha512", "enable")
    # SASL credentials and the CA come from the same Secrets the processor uses.
    auth = one(full_docs, "TriggerAuthentication")
    assert trigger["authenticationRef"] == {"name": auth["metadata"]["name"]}
    refs = {r["parameter"]: (r["name"], r["key"]) for r in auth["spec"]["secretTargetRef"]}
    secret = values["kafka"]["existingSecret"]
    assert refs == {
        "username": (secret, "ACCESS_EVAL_KAFKA_SASL_USERNAME"),
        "password": (secret, "ACCESS_EVAL_KAFKA_SASL_PASSWORD"),
        "ca": (values["kafka"]["caSecret"]["name"], values["kafka"]["caSecret"]["key"]),
    }


@pytest.mark.helm
def test_keda_without_sasl_needs_no_authentication(helm: Helm) -> None:
    docs = helm.render("--set", "keda.enabled=true")
    (trigger,) = one(docs, "ScaledObject")["spec"]["triggers"]
    assert trigger["metadata"]["topic"] == "iam.access-attempts"
    assert trigger["metadata"]["consumerGroup"] == "access-eval"
    assert trigger["metadata"]["bootstrapServers"] == "kafka:9092"
    assert "sasl" not in trigger["metadata"] and "authenticationRef" not in trigger
    assert kind_of(docs, "TriggerAuthentication") == []


@pytest.mark.helm
def test_network_policy(helm: Helm, full_docs: list[dict[str, Any]]) -> None:
    policy = one(full_docs, "NetworkPolicy")["spec"]
    assert policy["podSelector"]["matchLabels"] == deployment(full_docs)["spec"]["selector"]["matchLabels"]
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    (ingress,) = policy["ingress"]
    assert ingress["ports"] == [{"port": "metrics", "protocol": "TCP"}]
    assert ingress["from"] == full_values()["networkPolicy"]["metricsFrom"]

    def egress_ports(spec: dict[str, Any]) -> set[tuple[Any, str]]:
        return {(p["port"], p["protocol"]) for rule in spec["egress"] for p in rule["ports"]}

    # DNS, both bootstrap ports, the schema registry (https -> 443), the extra rule.
    assert egress_ports(policy) == {(53, "UDP"), (53, "TCP"), (9093, "TCP"), (9094, "TCP"), (443, "TCP"), (4317, "TCP")}
    kafka_rule = next(r for r in policy["egress"] if {"port": 9093, "protocol": "TCP"} in r["ports"])
    assert kafka_rule["to"] == [{"ipBlock": {"cidr": "10.20.0.0/16"}}]
    # Defaults: on, bootstrap kafka:9092, no registry; ingress only from Prometheus in `monitoring`.
    defaults = one(helm.render(), "NetworkPolicy")["spec"]
    assert egress_ports(defaults) == {(53, "UDP"), (53, "TCP"), (9092, "TCP")}
    (default_ingress,) = defaults["ingress"]
    assert default_ingress["from"] == [{
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
        "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}},
    }]
    assert kind_of(helm.render("--set", "networkPolicy.enabled=false"), "NetworkPolicy") == []
    # a path is not a credential: ssl.key.location stays allowed in extraProperties
    assert kind_of(helm.render("--set", "kafka.extraProperties.ssl\\.key\\.location=/etc/k/key"), "Deployment")


# --------------------------------------------------------------------------------------------
# documentation: values.yaml comments, README table, schema


def documented_values() -> dict[str, str]:
    """Keys of values.yaml preceded by a `# --` description comment -> the description."""
    docs: dict[str, str] = {}
    stack: list[tuple[int, str]] = []
    pending: list[str] | None = None
    for line in (CHART / "values.yaml").read_text().splitlines():
        stripped = line.strip()
        if not stripped:
            continue
        if stripped.startswith("# --"):
            pending = [stripped[4:].strip()]
            continue
        if stripped.startswith("#"):
            if pending is not None:
                pending.append(stripped[1:].strip())
            continue
        match = re.match(r"([A-Za-z0-9_]+):", stripped)
        if not match:
            continue  # a list item of a default
        indent = len(line) - len(line.lstrip())
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, match.group(1)))
        if pending is not None:
            docs[".".join(key for _, key in stack)] = " ".join(pending)
            pending = None
    return docs


def undocumented(values: dict[str, Any], docs: dict[str, str], prefix: str = "") -> Iterator[str]:
    for key, value in values.items():
        path = prefix + key
        if path in docs:
            continue
        if isinstance(value, dict) and value:
            yield from undocumented(value, docs, path + ".")
        else:
            yield path


def readme_rows() -> dict[str, tuple[str, str]]:
    """README.md values table: key -> (type, default)."""
    rows: dict[str, tuple[str, str]] = {}
    for line in (CHART / "README.md").read_text().splitlines():
        match = re.match(r"\| `([^`]+)` \| ([^|]+) \| `(.*?)` \| .+ \|$", line)
        if match:
            rows[match.group(1)] = (match.group(2).strip(), match.group(3))
    return rows


def test_every_value_is_documented_in_values_yaml() -> None:
    docs = documented_values()
    values = default_values()
    assert list(undocumented(values, docs)) == []
    for key in docs:
        get_path(values, key)  # no description without a value


def test_readme_lists_every_value_with_its_default() -> None:
    docs = documented_values()
    values = default_values()
    rows = readme_rows()
    assert set(rows) == set(docs)
    for key, (_type, default) in rows.items():
        assert json.loads(default) == get_path(values, key), key


def schema_node(schema: dict[str, Any], dotted: str) -> dict[str, Any]:
    node = schema
    for part in dotted.split("."):
        node = node["properties"][part]
    return node


def test_schema_types_every_value() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = default_values()
    for key in documented_values():
        node = schema_node(schema, key)
        assert "type" in node or "oneOf" in node, key
        assert node.get("description"), key
        if node.get("properties"):
            assert node.get("additionalProperties") is False, key
        get_path(values, key)
    # Chart-owned objects reject unknown keys (typos fail loudly instead of being ignored).
    assert schema["additionalProperties"] is False
    for section in ("kafka", "topics", "processor", "keda", "serviceMonitor", "networkPolicy"):
        assert schema["properties"][section]["additionalProperties"] is False
    assert "bootstrapServers" in schema["properties"]["kafka"]["required"]
    assert schema["properties"]["processor"]["properties"]["delivery"]["enum"] == ["exactly-once", "at-least-once"]
