"""The Helm chart (helm/access-eval): lint, values schema, rendering, offline Kubernetes schema
validation, and the wiring from values to the running container. The check against a real API
server (admission, CRD schemas, Pod Security) is tests/k8s/test_k8s_apply.py.

Tests that run helm are marked `helm`. helm is found on PATH or in .cache/bin (scripts/bootstrap
--all builds it there); without it these tests fail (tests/support/required.py).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from tests.support.helm_chart import (
    CHART,
    CI_VALUES,
    CRD_KINDS,
    FULL_VALUES,
    KUBE_VERSION,
    NAMESPACE,
    RELEASE,
    Helm,
    container,
    container_env,
    default_values,
    deployment,
    full_values,
    load_yaml,
    one,
    values_args,
    write_values,
)

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
