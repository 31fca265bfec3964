"""The local cluster's layout: the ports of every node (reused from the last run when still free), the
cluster id, the proxy's API port, and each node's ``server.properties`` built from them (the single
broker's, with the cluster's listeners, quorum and replication on top). Nothing here starts a process."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from processor.local.fetch import KAFKA_VERSION
from processor.local.process import free_port, port_free, port_taken_error
from processor.local.properties import HOST, cluster_id
from processor.local.properties import server_properties as node_properties

#: Classic consumer groups: a killed member is noticed after its session timeout, which may not be
#: lower than this (broker default 6 s). Lowered so tests (and a developer's experiments) wait 1-3 s.
GROUP_MIN_SESSION_TIMEOUT_MS = 1000


def plan_layout(port: int | None, brokers: int, proxy: bool, previous: dict[str, Any] | None) -> dict[str, Any]:
    """Ports of every node (reused from the last run when free), the cluster id, the proxy API port."""
    if previous and len(previous.get("nodes", [])) == brokers and bool(previous.get("proxy_api_port")) == proxy:
        wanted = [p for n in previous["nodes"] for p in _ports_of(n)] + [previous.get("proxy_api_port") or 0]
        if all(p == 0 or port_free(p) for p in wanted):
            return previous
    taken: set[int] = set()

    def pick(fixed: int | None = None) -> int:
        if fixed is not None:
            if fixed in taken or not port_free(fixed):
                raise port_taken_error(fixed, "port")
            taken.add(fixed)
            return fixed
        candidate = free_port(exclude=taken | (set(range(port, port + brokers)) if port is not None else set()))
        taken.add(candidate)
        return candidate

    nodes = []
    for i in range(1, brokers + 1):
        advertised = pick(port + i - 1 if port is not None else None)
        client = pick() if proxy else advertised
        nodes.append({"id": i, "client_port": client, "advertised_port": advertised, "direct_port": pick(),
                      "internal_port": pick(), "controller_port": pick()})
    return {"cluster_id": cluster_id(), "kafka_version": KAFKA_VERSION, "nodes": nodes,
            "proxy_api_port": pick() if proxy else None}


def _ports_of(node: dict[str, Any]) -> list[int]:
    ports = {node["client_port"], node["advertised_port"], node["direct_port"], node["internal_port"],
             node["controller_port"]}
    return sorted(int(p) for p in ports)


def listening_ports(node: dict[str, Any]) -> list[int]:
    """The ports the node's JVM binds (the advertised one belongs to the proxy when proxied)."""
    return [node["client_port"], node["direct_port"], node["internal_port"], node["controller_port"]]


def server_properties(node_dir: Path, node: dict[str, Any], layout: dict[str, Any]) -> str:
    """One node's config: the single broker's (`properties.server_properties`) with the cluster's
    listeners, quorum and replication on top (later keys win in java.util.Properties)."""
    h = HOST
    brokers = len(layout["nodes"])
    rf = min(3, brokers)
    min_isr = 2 if brokers >= 3 else 1
    voters = ",".join(f"{n['id']}@{h}:{n['controller_port']}" for n in layout["nodes"])
    props = {
        "node.id": str(node["id"]),
        "controller.quorum.voters": voters,
        "listeners": f"CLIENT://{h}:{node['client_port']},DIRECT://{h}:{node['direct_port']},"
                     f"INTERNAL://{h}:{node['internal_port']},CONTROLLER://{h}:{node['controller_port']}",
        "advertised.listeners": f"CLIENT://{h}:{node['advertised_port']},DIRECT://{h}:{node['direct_port']},"
                                f"INTERNAL://{h}:{node['internal_port']}",
        "inter.broker.listener.name": "INTERNAL",
        "controller.listener.names": "CONTROLLER",
        "listener.security.protocol.map": "CLIENT:PLAINTEXT,DIRECT:PLAINTEXT,INTERNAL:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "default.replication.factor": str(rf),
        "min.insync.replicas": str(min_isr),
        "offsets.topic.replication.factor": str(rf),
        "transaction.state.log.replication.factor": str(rf),
        "transaction.state.log.min.isr": str(min_isr),
        "share.coordinator.state.topic.replication.factor": str(rf),
        "share.coordinator.state.topic.min.isr": str(min_isr),
        "group.min.session.timeout.ms": str(GROUP_MIN_SESSION_TIMEOUT_MS),
        # Abort transactions past their transaction.timeout.ms within 1 s of expiry (default: 10 s checks).
        "transaction.abort.timed.out.transaction.cleanup.interval.ms": "1000",
        # Modest CPU: three JVMs share the machine.
        "num.io.threads": "2",
        "num.replica.fetchers": "1",
        "background.threads": "4",
    }
    base = node_properties(node_dir, node["client_port"], node["controller_port"])
    return (base.replace("processor/local/properties.py", "processor/local/cluster_layout.py")
            + "# cluster overrides\n" + "".join(f"{k}={v}\n" for k, v in props.items()))
