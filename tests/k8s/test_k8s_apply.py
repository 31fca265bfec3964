"""The Helm chart against a real Kubernetes API server (tests/support/k8s_harness.py: etcd + kube-apiserver
built by scripts/bootstrap --all).

Every rendered variant (defaults, each ci/*-values.yaml alone, all of them together, the HPA) is
sent with ``kubectl apply --dry-run=server`` into namespaces labelled Pod Security ``restricted``
(enforce and warn), with the Prometheus Operator and KEDA CRDs installed from their published Go
modules: decoding, defaulting, strict field validation, CRD schemas and admission must all pass
with no error and no warning. The pod each Deployment would create is dry-run created as well, so
Pod Security *enforcement* (which applies to Pods only; for Deployments it only warns) judges it.
The last tests plant defects and show the server rejecting them.
"""

from __future__ import annotations

import copy
import json
import os
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from tests.support.helm_chart import (
    CHART,
    CI_VALUES,
    CRD_KINDS,
    FULL_VALUES,
    NAMESPACE,
    RELEASE,
    Helm,
    find_helm,
    values_args,
)
from tests.support.k8s_harness import KubeAPIServer, kube_version
from tests.support.required import missing

pytestmark = [pytest.mark.k8s, pytest.mark.helm]

# serviceMonitor.namespace and grafanaDashboard.namespace in ci/monitoring-values.yaml
MONITORING_NAMESPACE = "monitoring"
POD_SECURITY = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/warn": "restricted",
}
VARIANTS: dict[str, list[str]] = {
    "defaults": [],
    **{path.name: values_args([path]) for path in CI_VALUES},
    "full-values": values_args(FULL_VALUES),
    "hpa": ["--set", "autoscaling.enabled=true", "--set", "autoscaling.targetMemoryUtilizationPercentage=80"],
}


@pytest.fixture(scope="session")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeAPIServer]:
    with KubeAPIServer.start(tmp_path_factory.mktemp("k8s")) as server:
        began = time.monotonic()
        server.install_crds(CRD_KINDS)
        for namespace in (NAMESPACE, MONITORING_NAMESPACE):
            server.create_namespace(namespace, POD_SECURITY)
        print(f"\nkube-apiserver ready in {server.started_in:.1f} s, CRDs and namespaces in "
              f"{time.monotonic() - began:.1f} s, RSS {server.rss_bytes() / 2**20:.0f} MiB")
        yield server


@pytest.fixture(scope="session")
def k8s_helm(tmp_path_factory: pytest.TempPathFactory) -> Helm:
    binary = find_helm()
    if binary is None:
        missing("helm", "run `scripts/bootstrap --all` (go install helm.sh/helm/v3/cmd/helm)")
        raise AssertionError("unreachable")
    home = tmp_path_factory.mktemp("helm-home-k8s")
    env = {var: str(home / var.lower()) for var in ("HELM_CACHE_HOME", "HELM_CONFIG_HOME", "HELM_DATA_HOME")}
    return Helm(binary, {**os.environ, **env})


def render(helm: Helm, args: list[str]) -> list[dict[str, Any]]:
    """helm template for the API server's exact version."""
    proc = helm.run("template", RELEASE, str(CHART), "--namespace", NAMESPACE,
                    "--kube-version", kube_version().removeprefix("v"), *args)
    assert proc.returncode == 0, proc.stderr
    return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]


def dry_run(api: KubeAPIServer, docs: list[dict[str, Any]]) -> tuple[int, str, str]:
    stream = "\n".join("---\n" + yaml.safe_dump(doc) for doc in docs)
    proc = api.kubectl("apply", "--dry-run=server", "-f", "-", input=stream)
    return proc.returncode, proc.stdout, proc.stderr


def assert_clean(api: KubeAPIServer, docs: list[dict[str, Any]]) -> None:
    code, out, err = dry_run(api, docs)
    assert code == 0, err
    assert err.strip() == "", f"warnings from the API server:\n{err}"
    created = [line for line in out.splitlines() if line.endswith("created (server dry run)")]
    assert len(created) == len(docs), out


def pod_of(deployment: dict[str, Any]) -> dict[str, Any]:
    """The Pod the Deployment's ReplicaSet would create."""
    template = copy.deepcopy(deployment["spec"]["template"])
    metadata = {**template.get("metadata", {}), "name": deployment["metadata"]["name"] + "-pod",
                "namespace": deployment["metadata"]["namespace"]}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": template["spec"]}


def provide_pod_prerequisites(api: KubeAPIServer, pod: dict[str, Any]) -> None:
    """What a Pod needs to exist in the cluster (checked by the ServiceAccount and Priority admission
    plugins, not by dry-run of the Deployment): its ServiceAccount and PriorityClass, created for real
    (no controller manager here creates the `default` ServiceAccount)."""
    namespace = pod["metadata"]["namespace"]
    docs = [{"apiVersion": "v1", "kind": "ServiceAccount",
             "metadata": {"name": pod["spec"].get("serviceAccountName", "default"), "namespace": namespace}}]
    if "priorityClassName" in pod["spec"]:
        docs.append({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
                     "metadata": {"name": pod["spec"]["priorityClassName"]}, "value": 1000})
    for doc in docs:
        api.kubectl_ok("apply", "-f", "-", input=json.dumps(doc))


# --------------------------------------------------------------------------------------------


def test_api_server_is_the_version_the_chart_is_rendered_for(api: KubeAPIServer) -> None:
    assert api.get("/version")["gitVersion"] == kube_version()
    served = api.kubectl_ok("api-resources", "-o", "name")
    for group in ("servicemonitors.monitoring.coreos.com", "prometheusrules.monitoring.coreos.com",
                  "scaledobjects.keda.sh", "triggerauthentications.keda.sh"):
        assert group in served.split()
    labels = json.loads(api.kubectl_ok("get", "namespace", NAMESPACE, "-o", "json"))["metadata"]["labels"]
    assert POD_SECURITY.items() <= labels.items()


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_chart_applies_without_error_or_warning(api: KubeAPIServer, k8s_helm: Helm, variant: str) -> None:
    docs = render(k8s_helm, VARIANTS[variant])
    assert {d["metadata"]["namespace"] for d in docs} <= {NAMESPACE, MONITORING_NAMESPACE}
    assert_clean(api, docs)


def test_every_kind_the_chart_renders_was_applied(k8s_helm: Helm) -> None:
    """The variants above cover every object the chart can render."""
    kinds = {d["kind"] for args in VARIANTS.values() for d in render(k8s_helm, args)}
    assert CRD_KINDS | {"Deployment", "HorizontalPodAutoscaler", "NetworkPolicy", "PodDisruptionBudget"} <= kinds


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_pods_pass_pod_security_enforcement(api: KubeAPIServer, k8s_helm: Helm, variant: str) -> None:
    (deployment,) = [d for d in render(k8s_helm, VARIANTS[variant]) if d["kind"] == "Deployment"]
    pod = pod_of(deployment)
    provide_pod_prerequisites(api, pod)
    assert_clean(api, [pod])


# --------------------------------------------------------------------------------------------
# the checks catch planted defects


def test_pod_security_rejects_a_pod_that_may_run_as_root(api: KubeAPIServer, k8s_helm: Helm) -> None:
    (deployment,) = [d for d in render(k8s_helm, []) if d["kind"] == "Deployment"]
    spec = deployment["spec"]["template"]["spec"]
    # Set at pod and container level (values podSecurityContext / securityContext): drop both.
    del spec["securityContext"]["runAsNonRoot"]
    del spec["containers"][0]["securityContext"]["runAsNonRoot"]
    # For the Deployment: a warning (enforcement applies to Pods only) ...
    code, _, err = dry_run(api, [deployment])
    assert code == 0
    assert 'would violate PodSecurity "restricted:latest": runAsNonRoot != true' in err
    # ... for its Pod: rejected.
    pod = pod_of(deployment)
    provide_pod_prerequisites(api, pod)
    code, _, err = dry_run(api, [pod])
    assert code != 0
    assert 'violates PodSecurity "restricted:latest": runAsNonRoot != true' in err


def test_crd_schema_rejects_an_unknown_service_monitor_field(api: KubeAPIServer, k8s_helm: Helm) -> None:
    docs = render(k8s_helm, values_args([CHART / "ci" / "monitoring-values.yaml"]))
    (monitor,) = [d for d in docs if d["kind"] == "ServiceMonitor"]
    monitor["spec"]["endpoints"][0]["scrapeEvery"] = "15s"
    code, _, err = dry_run(api, [monitor])
    assert code != 0
    assert re.search(r'unknown field "spec\.endpoints\[0\]\.scrapeEvery"', err), err
    monitor["spec"]["endpoints"][0].pop("scrapeEvery")
    monitor["spec"]["endpoints"][0]["interval"] = "15 seconds"
    code, _, err = dry_run(api, [monitor])
    assert code != 0
    assert "spec.endpoints[0].interval" in err, err


def test_api_server_rejects_an_invalid_core_object(api: KubeAPIServer, k8s_helm: Helm) -> None:
    (deployment,) = [d for d in render(k8s_helm, []) if d["kind"] == "Deployment"]
    deployment["spec"]["selector"]["matchLabels"] = {"app": "other"}
    code, _, err = dry_run(api, [deployment])
    assert code != 0
    assert "`selector` does not match template `labels`" in err, err
