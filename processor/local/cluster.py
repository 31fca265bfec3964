"""A real multi-node Apache Kafka cluster (KRaft) on loopback ports: `access-eval local start --brokers 3`.

Each node is both broker and controller (a static ``controller.quorum.voters`` of all nodes), a JVM
of its own, started like the single local broker (same jars, java check, JVM options, state file
format: `fetch`, `java`, `process`, `properties`). Replication is what a production cluster has:
replication factor 3 and ``min.insync.replicas=2`` for created topics (``default.replication.factor``)
and for the internal ``__consumer_offsets`` and ``__transaction_state`` topics, so a broker may die
without losing a committed record or blocking a transaction.

Listeners per node (all on 127.0.0.1):

- ``CLIENT``: what clients use. It advertises the fault proxy's port for that node when the
  cluster is proxied (``proxy=True``: Toxiproxy, see `faultproxy`), so every client connection
  crosses the proxy; else its own port;
- ``DIRECT``: an unproxied client listener (advertised as itself) for tooling and test checks that
  must not be hit by injected faults;
- ``INTERNAL``: inter-broker replication, never proxied;
- ``CONTROLLER``: the KRaft quorum.

Layout under the data dir: ``cluster.json`` (ports, cluster id; written once, reused on restart),
``node-<id>/`` per node (``server.properties``, ``logs/``, ``broker.log``, ``broker.json``: the
single broker's layout, so `broker.stop(node_dir)` stops one node), and ``proxy/`` for the proxy.

`broker.stop` of the cluster's data dir stops it all; `access-eval local start --brokers N|--proxy` and
`status` print what `processor.local.commands` makes of `start`, `status` and `describe`.

Start/stop/status of every node and the proxy wiring are one lifecycle; the ports and each node's
configuration are `cluster_layout`, the proxy itself is `faultproxy`.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from processor.errors import LocalKafkaError
from processor.kafka import clients
from processor.local import faultproxy
from processor.local.cluster_layout import listening_ports, plan_layout, server_properties
from processor.local.fetch import KAFKA_VERSION, fetch_jars
from processor.local.java import JVM_OPTS, check_java
from processor.local.paths import (
    LOG_FILE,
    STATE_FILE,
    Progress,
    locked,
    resolve_data_dir,
    rotate_log,
    say_stderr,
    tail_log,
)
from processor.local.process import (
    alive,
    children,
    live_state,
    port_taken_error,
    spawn_detached,
    stop_processes,
    wait_ports_free,
)
from processor.local.properties import (
    DEFAULT_PORT,
    HOST,
    PROPERTIES_FILE,
    format_command,
    is_formatted,
)

__all__ = ["CLUSTER_FILE", "ClusterInfo", "NodeInfo", "describe", "is_cluster", "kill_node", "start",
           "start_node", "status", "stop"]

CLUSTER_FILE = "cluster.json"
NODE_START_TIMEOUT_S = 90.0  # the single broker's
START_TIMEOUT_S = 2 * NODE_START_TIMEOUT_S  # every JVM starts on the same cores
STOP_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class NodeInfo:
    node_id: int
    client_port: int
    advertised_port: int
    direct_port: int
    internal_port: int
    controller_port: int
    pid: int | None  # None: not running
    data_dir: Path


@dataclass(frozen=True)
class ClusterInfo:
    data_dir: Path
    nodes: list[NodeInfo]
    proxy_api_port: int | None  # Toxiproxy's HTTP API when proxied
    proxy_pid: int | None

    @property
    def host(self) -> str:
        return HOST

    @property
    def bootstrap(self) -> str:
        """What clients use: the advertised client addresses (the proxy's when proxied)."""
        return ",".join(f"{HOST}:{n.advertised_port}" for n in self.nodes)

    @property
    def direct_bootstrap(self) -> str:
        """Unproxied addresses, for checks that must not suffer the injected faults."""
        return ",".join(f"{HOST}:{n.direct_port}" for n in self.nodes)

    @property
    def running(self) -> list[NodeInfo]:
        return [n for n in self.nodes if n.pid is not None]

    def node(self, node_id: int) -> NodeInfo:
        return next(n for n in self.nodes if n.node_id == node_id)

    def proxy(self) -> faultproxy.Toxiproxy:
        if self.proxy_api_port is None:
            raise LocalKafkaError(f"the cluster in {self.data_dir} was started without a proxy")
        return faultproxy.Toxiproxy(self.proxy_api_port)


def proxy_name(node_id: int) -> str:
    return f"broker-{node_id}"


def is_cluster(data_dir: Path | None) -> bool:
    return (resolve_data_dir(data_dir) / CLUSTER_FILE).is_file()


def _node_dir(data: Path, node_id: int) -> Path:
    return data / f"node-{node_id}"


def _proxy_dir(data: Path) -> Path:
    return data / "proxy"


# --------------------------------------------------------------------------------------------------
# Processes


def _format_all(java: str, libs: Path, data: Path, layout: dict[str, Any]) -> None:
    """Format every unformatted node with the cluster's one id, in parallel (a JVM start each)."""
    running: list[tuple[subprocess.Popen[bytes], Path, int]] = []
    for node in layout["nodes"]:
        node_dir = _node_dir(data, node["id"])
        if is_formatted(node_dir):
            continue
        log_path = node_dir / LOG_FILE
        cmd = format_command(java, libs, node_dir, layout["cluster_id"])
        with log_path.open("ab") as log:
            offset = log.tell()
            running.append((subprocess.Popen(cmd, stdout=log, stderr=log, stdin=subprocess.DEVNULL, cwd=node_dir),
                            log_path, offset))
    for proc, log_path, offset in running:
        try:
            rc = proc.wait(timeout=180)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise LocalKafkaError(f"formatting Kafka storage for {log_path.parent} timed out") from None
        if rc != 0:
            raise LocalKafkaError(f"formatting Kafka storage in {log_path.parent} failed (exit {rc}):\n"
                                  f"{tail_log(log_path, 30, offset)}")


def _launch(java: str, libs: Path, data: Path, node: dict[str, Any], layout: dict[str, Any]) -> tuple[
        subprocess.Popen[bytes], int]:
    node_dir = _node_dir(data, node["id"])
    (node_dir / PROPERTIES_FILE).write_text(server_properties(node_dir, node, layout))
    log_path = node_dir / LOG_FILE
    rotate_log(log_path)
    cmd = [java, *JVM_OPTS, "-cp", f"{libs}/*", "kafka.Kafka", str(node_dir / PROPERTIES_FILE)]
    # `port` + `controller_port` are what `broker.stop(node_dir)` waits to be released.
    proc, offset, _ = spawn_detached(cmd, node_dir, log_path, node_dir / STATE_FILE, {
        "host": HOST, "port": node["client_port"], "controller_port": node["controller_port"],
        "advertised_port": node["advertised_port"], "direct_port": node["direct_port"],
        "internal_port": node["internal_port"], "node_id": node["id"], "kafka_version": KAFKA_VERSION,
    })
    return proc, offset


def registered_brokers(direct_bootstrap: str, timeout: float = 2.0) -> set[int]:
    """Ids of the brokers the cluster's metadata lists (registered and unfenced), asked unproxied."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient(clients.probe_conf(direct_bootstrap))
    try:
        metadata = admin.list_topics(timeout=timeout)
    except Exception:
        return set()
    return set(metadata.brokers)


def _wait_registered(data: Path, launched: dict[int, tuple[subprocess.Popen[bytes], int]], layout: dict[str, Any],
                     want: Iterable[int], timeout: float, say: Progress) -> None:
    """Until every node in `want` is listed by the metadata of each launched node; fail early with the
    log tail of a JVM that exits."""
    wanted = set(want)
    deadline = time.monotonic() + timeout
    next_note = time.monotonic() + 15.0
    by_id = {n["id"]: n for n in layout["nodes"]}
    while True:
        for node_id, (proc, offset) in launched.items():
            rc = proc.poll()
            if rc is not None:
                log_path = _node_dir(data, node_id) / LOG_FILE
                raise LocalKafkaError(f"Kafka node {node_id} exited during start-up (exit {rc}); last lines of "
                                      f"{log_path}:\n{tail_log(log_path, 40, offset)}")
        if all(wanted <= registered_brokers(f"{HOST}:{by_id[i]['direct_port']}") for i in launched):
            return
        if time.monotonic() > deadline:
            tails = "\n".join(f"--- node {i}:\n{tail_log(_node_dir(data, i) / LOG_FILE, 15, off)}"
                              for i, (_, off) in launched.items())
            raise LocalKafkaError(f"the Kafka cluster did not list nodes {sorted(wanted)} within {timeout:.0f} s:\n"
                                  f"{tails}")
        if time.monotonic() >= next_note:
            say(f"  waiting for Kafka nodes {sorted(wanted)} ...")
            next_note = time.monotonic() + 15.0
        time.sleep(0.3)  # polling a condition with a deadline


def _read_layout(data: Path) -> dict[str, Any] | None:
    try:
        value = json.loads((data / CLUSTER_FILE).read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _info(data: Path, layout: dict[str, Any]) -> ClusterInfo:
    nodes = []
    for n in layout["nodes"]:
        state = live_state(_node_dir(data, n["id"]) / STATE_FILE)
        nodes.append(NodeInfo(n["id"], n["client_port"], n["advertised_port"], n["direct_port"], n["internal_port"],
                              n["controller_port"], int(state["pid"]) if state else None,
                              _node_dir(data, n["id"])))
    proxy_state = faultproxy.server_state(_proxy_dir(data)) if layout.get("proxy_api_port") else None
    return ClusterInfo(data, nodes, layout.get("proxy_api_port") if proxy_state else None,
                       int(proxy_state["pid"]) if proxy_state else None)


def _start_proxy(data: Path, layout: dict[str, Any]) -> None:
    api_port = int(layout["proxy_api_port"])
    if faultproxy.server_state(_proxy_dir(data)) is None:
        faultproxy.start_server(_proxy_dir(data), api_port)
    api = faultproxy.Toxiproxy(api_port)
    for n in layout["nodes"]:
        api.create(proxy_name(n["id"]), n["advertised_port"], n["client_port"])


def restart_proxy(data_dir: Path) -> None:
    """Kill the cluster's Toxiproxy and start it again on the same API port with the same proxies.

    Under load Toxiproxy's API can wedge for good: a toxic's removal (or a proxy's disabling) blocks on
    a link, and every later call for that proxy times out (Shopify/toxiproxy#558, open; a server
    restart is the known way out; seen in a 60-minute soak). Clients crossing the proxy see their
    connections reset, as in a `reset_peer` fault; the brokers are not touched."""
    data = resolve_data_dir(data_dir)
    with locked(data / ".lock"):
        layout = _read_layout(data)
        if layout is None or not layout.get("proxy_api_port"):
            raise LocalKafkaError(f"no proxied cluster in {data}")
        faultproxy.stop_server(_proxy_dir(data), timeout=2.0)
        _start_proxy(data, layout)


def start(
    port: int | None = DEFAULT_PORT,
    data_dir: Path | None = None,
    *,
    brokers: int = 3,
    proxy: bool = False,
    timeout: float = START_TIMEOUT_S,
    progress: Progress | None = None,
) -> ClusterInfo:
    """Start a detached `brokers`-node cluster (or find the one running from `data_dir`); with `proxy`,
    a Toxiproxy in front of every node's client listener. Clients use ``ClusterInfo.bootstrap``:
    ports `port` .. `port + brokers - 1` (any free ones when `port` is None)."""
    say = progress or say_stderr
    if brokers < 2:
        raise LocalKafkaError("a cluster needs --brokers 2 or more (also with --proxy)")
    data = resolve_data_dir(data_dir)
    data.mkdir(parents=True, exist_ok=True)
    with locked(data / ".lock"):
        if live_state(data / STATE_FILE) is not None:
            raise LocalKafkaError(f"a single-node broker is running from {data}: `access-eval local stop` it first")
        previous = _read_layout(data)
        if previous is not None:
            info = _info(data, previous)
            if info.running:
                if len(info.running) < len(info.nodes):
                    say(f"restarting the stopped nodes of the cluster in {data}")
                    for n in info.nodes:
                        if n.pid is None:
                            _start_node_locked(data, previous, n.node_id, timeout, say)
                    return _info(data, previous)
                return info
        elif (data / "logs").exists():
            raise LocalKafkaError(f"{data} holds a single-node broker's data: use another --data-dir for a cluster")
        java = check_java()
        libs = fetch_jars(progress=say)
        layout = plan_layout(port, brokers, proxy, previous)
        if previous is not None and layout is not previous:  # new ports: the old logs name the old quorum
            layout["cluster_id"] = previous["cluster_id"]
            if [n["controller_port"] for n in previous["nodes"]] != [n["controller_port"] for n in layout["nodes"]]:
                raise LocalKafkaError(f"the ports of the cluster in {data} are taken now: free them, or remove {data} "
                                      "to start a new cluster")
        for n in layout["nodes"]:
            node_dir = _node_dir(data, n["id"])
            node_dir.mkdir(parents=True, exist_ok=True)
            (node_dir / PROPERTIES_FILE).write_text(server_properties(node_dir, n, layout))
        (data / CLUSTER_FILE).write_text(json.dumps(layout, indent=2) + "\n")
        started = time.monotonic()
        if proxy:
            _start_proxy(data, layout)
        _format_all(java, libs, data, layout)
        launched = {n["id"]: _launch(java, libs, data, n, layout) for n in layout["nodes"]}
        try:
            _wait_registered(data, launched, layout, launched, timeout, say)
        except BaseException:
            _stop_locked(data, layout)
            raise
        info = _info(data, layout)
        say(f"Kafka {KAFKA_VERSION} cluster of {brokers} nodes ready in {time.monotonic() - started:.1f} s; "
            f"bootstrap {info.bootstrap}" + (" (through Toxiproxy)" if proxy else ""))
        return info


def _start_node_locked(data: Path, layout: dict[str, Any], node_id: int, timeout: float,
                       say: Progress) -> None:
    node = next(n for n in layout["nodes"] if n["id"] == node_id)
    if live_state(_node_dir(data, node_id) / STATE_FILE) is not None:
        return
    for p in listening_ports(node):
        if not wait_ports_free([p]):
            raise port_taken_error(p, "port")
    java = check_java()
    libs = fetch_jars(progress=say)
    launched = {node_id: _launch(java, libs, data, node, layout)}
    _wait_registered(data, launched, layout, [node_id], timeout, say)


def start_node(data_dir: Path, node_id: int, *, timeout: float = NODE_START_TIMEOUT_S) -> None:
    """(Re)start one node of a cluster (same data, same ports); returns once the cluster lists it."""
    data = resolve_data_dir(data_dir)
    with locked(data / ".lock"):
        layout = _read_layout(data)
        if layout is None:
            raise LocalKafkaError(f"no cluster in {data}")
        _start_node_locked(data, layout, node_id, timeout, lambda _m: None)


def kill_node(data_dir: Path, node_id: int, sig: signal.Signals = signal.SIGKILL) -> None:
    """Send `sig` to one node (SIGKILL: a crash) and wait until its process is gone."""
    node_dir = _node_dir(resolve_data_dir(data_dir), node_id)
    state = live_state(node_dir / STATE_FILE)
    if state is None:
        return
    pid = int(state["pid"])
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while alive(pid):
        if time.monotonic() > deadline:
            raise LocalKafkaError(f"node {node_id} (pid {pid}) did not exit after {sig.name}")
        time.sleep(0.05)
    (node_dir / STATE_FILE).unlink(missing_ok=True)


def _stop_locked(data: Path, layout: dict[str, Any]) -> bool:
    """SIGTERM every node at once (a node shutting down alone waits for the others' controller), then
    SIGKILL what is left; then the proxy. True if anything was running."""
    states = {n["id"]: live_state(_node_dir(data, n["id"]) / STATE_FILE) for n in layout["nodes"]}
    pids = [int(s["pid"]) for s in states.values() if s]
    left = stop_processes(pids, STOP_TIMEOUT_S)
    for pid in pids:
        children.pop(pid, None)
    if left:
        raise LocalKafkaError(f"Kafka nodes {left} did not exit after SIGKILL")
    for n in layout["nodes"]:
        (_node_dir(data, n["id"]) / STATE_FILE).unlink(missing_ok=True)
    proxy_stopped = faultproxy.stop_server(_proxy_dir(data))
    return bool(pids) or proxy_stopped


def stop(data_dir: Path | None = None) -> bool:
    """Stop every node (and the proxy) of the cluster in `data_dir`; True if any was running."""
    data = resolve_data_dir(data_dir)
    layout = _read_layout(data)
    if layout is None:
        return False
    with locked(data / ".lock"):
        return _stop_locked(data, layout)


def status(data_dir: Path | None = None) -> ClusterInfo | None:
    """The cluster in `data_dir` with every node (pid None: not running), or None if there is none."""
    data = resolve_data_dir(data_dir)
    layout = _read_layout(data)
    if layout is None:
        return None
    with locked(data / ".lock"):
        return _info(data, layout)


def describe(info: ClusterInfo) -> list[str]:
    """`local status` lines for a cluster: one per node, then the bootstrap addresses."""
    lines = [f"cluster of {len(info.nodes)} nodes ({len(info.running)} running), data dir {info.data_dir}"]
    for n in info.nodes:
        state = f"running pid {n.pid}" if n.pid is not None else "STOPPED"
        lines.append(f"node {n.node_id}: {state}; client {HOST}:{n.advertised_port}"
                     + (f" (proxied to {n.client_port})" if n.advertised_port != n.client_port else "")
                     + f", direct {n.direct_port}, internal {n.internal_port}, controller {n.controller_port}")
    if info.proxy_api_port is not None:
        lines.append(f"toxiproxy: pid {info.proxy_pid}, API http://{HOST}:{info.proxy_api_port}")
    lines.append(f"bootstrap: {info.bootstrap}")
    return lines
