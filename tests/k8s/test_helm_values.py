"""The chart's values reach the running container: every configuration value has an env mapping and
arrives in the container, secrets, CA and state volumes, extra properties, the optional objects
(dashboard, rules, ServiceMonitor, KEDA, NetworkPolicy) and the documentation of every value."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from typing import Any

import pytest

from processor.config import RunConfig
from tests.support.helm_chart import (
    BRIEF_ENV,
    CHART,
    DASHBOARD_FILE,
    ENV_OF_VALUE,
    NAMESPACE,
    NOT_IN_CHART,
    NOT_PLAIN_ENV,
    RULES_FILE,
    Helm,
    as_env,
    checksum,
    container,
    container_env,
    default_values,
    deployment,
    full_values,
    get_path,
    kind_of,
    leaf_paths,
    load_yaml,
    one,
)

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
