"""The soak's nemesis: faults picked at random from a seed, overlapping, each healed after a random
time; every fault is a `Fault` with its start, end (healed) and what it hit, written to the timeline.

Kinds (`KINDS`): SIGKILL or SIGTERM of a processor with a restart after a random delay; SIGSTOP
then SIGCONT (a zombie once the pause exceeds the 3 s session timeout); a rolling restart of every
processor; SIGKILL of a broker (the leader of most attempts partitions, a processor's transaction
coordinator, the group coordinator, or any), restarted after a random delay; quorum loss (two
brokers down, bounded); through the proxy, which only processor ``p0`` uses: a partition from all
brokers or from one, latency, a bandwidth limit, connection resets.

Rules that keep the overlap within what the cluster promises to survive: at most one broker down
(two only in a quorum-loss step, alone among broker faults); one proxy partition at a time; one
fault per processor instance at a time; a rolling restart holds every instance.
"""

from __future__ import annotations

import contextlib
import random
import signal
import threading
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from processor.errors import LocalKafkaError
from processor.local import cluster as local_cluster
from processor.local.cluster import ClusterInfo, proxy_name
from tests.cluster.test_cluster import coordinator, group_coordinator, leaders
from tests.support.soak_world import Fleet, Life

#: kind -> weight
KINDS = {"proc-kill": 3, "proc-term": 2, "proc-pause": 2, "rolling-restart": 1, "broker-kill": 3,
         "quorum-loss": 1, "partition-all": 2, "partition-one": 2, "latency": 2, "bandwidth": 1, "reset": 1}
PROXY_KINDS = {"partition-all", "partition-one", "latency", "bandwidth", "reset"}


@dataclass
class Fault:
    id: int
    kind: str
    target: str
    start: float
    end: float | None = None
    affected: list[str] = field(default_factory=list)  # processor instances that should commit again
    detail: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    def covers(self, t: float, until: float) -> bool:
        return self.start <= t <= (self.end if self.end is not None else until)

    def row(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "target": self.target, "start": round(self.start, 2),
                "end": None if self.end is None else round(self.end, 2), "affected": self.affected,
                **self.detail, **({"error": self.error} if self.error else {})}


class Nemesis(threading.Thread):
    def __init__(self, fleet: Fleet, info: ClusterInfo, seed: int, timeline: Any, kinds: dict[str, int],
                 mean_gap_s: float = 6.0) -> None:
        super().__init__(name="nemesis", daemon=True)
        self.fleet, self.info, self.timeline = fleet, info, timeline
        self.rng = random.Random(seed + 17)
        self.kinds, self.mean_gap_s = kinds, mean_gap_s
        self.faults: list[Fault] = []
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.proxy_lock = threading.Lock()
        self.proxy_restarted = -1e9  # monotonic time of the last Toxiproxy restart
        self.proxy_restarts = 0
        self.busy: set[str] = set()  # instances under a fault; "broker" / "brokers2" / "proxy-cut"
        self.threads: list[threading.Thread] = []
        self.term_exits: list[Life] = []

    # -- scheduling ---------------------------------------------------------------------------------

    def _claim(self, kind: str) -> list[str] | None:
        """The resources a new fault of `kind` takes (instances, broker slot, proxy), or None if busy."""
        free = [n for n in self.fleet.names if n not in self.busy and self.fleet.running(n) is not None]
        if kind == "rolling-restart":
            return list(self.fleet.names) if len(free) == len(self.fleet.names) else None
        if kind.startswith("proc-"):
            return [self.rng.choice(free)] if len(free) >= 2 else None
        if kind == "broker-kill":
            return ["broker"] if not {"broker", "brokers2"} & self.busy else None
        if kind == "quorum-loss":
            return ["brokers2"] if not {"broker", "brokers2"} & self.busy else None
        if kind in ("partition-all", "partition-one"):
            return ["proxy-cut"] if "proxy-cut" not in self.busy else None
        return [f"toxic-{kind}"] if f"toxic-{kind}" not in self.busy else None

    def run(self) -> None:
        names, weights = list(self.kinds), list(self.kinds.values())
        while not self.stop.wait(self.rng.uniform(0.3, 2 * self.mean_gap_s)):
            kind = self.rng.choices(names, weights)[0]
            with self.lock:
                claimed = self._claim(kind)
                if claimed is None:
                    continue
                self.busy.update(claimed)
                fault = Fault(len(self.faults) + 1, kind, ",".join(claimed), self.fleet.now())
                self.faults.append(fault)
            duration = self.rng.uniform(2.0, 20.0) if kind != "quorum-loss" else self.rng.uniform(3.0, 10.0)
            t = threading.Thread(target=self._run_fault, args=(fault, claimed, duration), daemon=True)
            self.threads.append(t)
            t.start()

    def finish(self, timeout: float = 300) -> None:
        """Stop starting faults and wait until every fault is healed."""
        self.stop.set()
        self.join(timeout)
        for t in self.threads:
            t.join(timeout)

    def _run_fault(self, fault: Fault, claimed: list[str], duration: float) -> None:
        try:
            getattr(self, "_" + fault.kind.replace("-", "_"))(fault, claimed, duration)
        except Exception as exc:  # a fault that could not be injected or healed: reported, not fatal
            fault.error = f"{type(exc).__name__}: {exc}"
            self.timeline.write("fault-error", id=fault.id, error=fault.error, trace=traceback.format_exc()[-800:])
            if isinstance(exc, LocalKafkaError) and "toxiproxy" in str(exc):
                self._restart_proxy(fault)
        finally:
            fault.end = fault.end if fault.end is not None else self.fleet.now()
            with self.lock:
                self.busy.difference_update(claimed)
            self.timeline.write("fault", **fault.row())

    def _restart_proxy(self, fault: Fault) -> None:
        """Toxiproxy's API wedged (`local_cluster.restart_proxy`): restart it, once per wedge."""
        with self.proxy_lock:
            if time.monotonic() - self.proxy_restarted < 30:
                return  # the same wedge, seen by another fault's thread: restarted already
            local_cluster.restart_proxy(self.info.data_dir)
            self.proxy_restarted = time.monotonic()
            self.proxy_restarts += 1
            self.timeline.write("proxy-restart", after_fault=fault.id)

    # -- processors ---------------------------------------------------------------------------------

    def _stop_restart(self, fault: Fault, name: str, sig: signal.Signals, delay: float) -> None:
        life = self.fleet.stop(name, sig)
        if sig == signal.SIGTERM and life is not None:
            self.term_exits.append(life)
            fault.detail["exit"] = life.rc
        time.sleep(delay)  # the fault: the instance stays down this long
        self.fleet.start(name)
        fault.end = self.fleet.now()
        fault.affected = [name]

    def _proc_kill(self, fault: Fault, claimed: list[str], duration: float) -> None:
        self._stop_restart(fault, claimed[0], signal.SIGKILL, duration / 2)

    def _proc_term(self, fault: Fault, claimed: list[str], duration: float) -> None:
        self._stop_restart(fault, claimed[0], signal.SIGTERM, duration / 2)

    def _proc_pause(self, fault: Fault, claimed: list[str], duration: float) -> None:
        self.fleet.pause(claimed[0])
        time.sleep(duration)  # the fault: SIGSTOPped this long
        self.fleet.resume(claimed[0])
        fault.end, fault.affected = self.fleet.now(), [claimed[0]]

    def _rolling_restart(self, fault: Fault, claimed: list[str], duration: float) -> None:
        for name in claimed:
            life = self.fleet.stop(name, signal.SIGTERM)
            if life is not None:
                self.term_exits.append(life)
            self.fleet.start(name).proc.wait_ready(180)
        fault.end, fault.affected = self.fleet.now(), list(claimed)

    # -- brokers ------------------------------------------------------------------------------------

    def _victim(self) -> tuple[int, str]:
        """A broker to kill and why: a partition leader, a coordinator, or any running one."""
        status = local_cluster.status(self.info.data_dir)
        running = [n.node_id for n in status.nodes if n.pid is not None] if status else []
        role = self.rng.choice(["leader", "txn-coordinator", "group-coordinator", "any"])
        node: int | None = None
        with contextlib.suppress(Exception):
            if role == "leader":
                node = Counter(leaders(self.info, self.fleet.topics.attempts).values()).most_common(1)[0][0]
            elif role == "txn-coordinator":
                node = coordinator(self.info, "__transaction_state",
                                   f"{self.fleet.topics.group}-{self.rng.choice(self.fleet.names)}")
            elif role == "group-coordinator":
                node = group_coordinator(self.info, self.fleet.topics.group)
        if node not in running:
            node, role = self.rng.choice(running), "any"
        assert node is not None
        return node, role

    def _broker_kill(self, fault: Fault, claimed: list[str], duration: float) -> None:
        node, role = self._victim()
        fault.target, fault.detail["role"] = f"broker-{node}", role
        local_cluster.kill_node(self.info.data_dir, node)
        time.sleep(duration)  # the fault: the broker stays down this long
        local_cluster.start_node(self.info.data_dir, node)
        fault.end, fault.affected = self.fleet.now(), list(self.fleet.names)

    def _quorum_loss(self, fault: Fault, claimed: list[str], duration: float) -> None:
        nodes = self.rng.sample([n.node_id for n in self.info.nodes], 2)
        fault.target = ",".join(f"broker-{n}" for n in nodes)
        for n in nodes:
            local_cluster.kill_node(self.info.data_dir, n)
        time.sleep(duration)  # the fault: no quorum, no ISR of 2, this long
        for n in nodes:
            local_cluster.start_node(self.info.data_dir, n)
        fault.end, fault.affected = self.fleet.now(), list(self.fleet.names)

    # -- the proxy (processor p0 only) --------------------------------------------------------------

    def _cut(self, fault: Fault, nodes: list[int], duration: float) -> None:
        api = self.info.proxy()
        fault.target = "p0<->" + ",".join(f"broker-{n}" for n in nodes)
        try:
            for n in nodes:
                api.set_enabled(proxy_name(n), False)
            time.sleep(duration)  # the fault: the partition lasts this long
        finally:
            for n in nodes:
                api.set_enabled(proxy_name(n), True)
        fault.end, fault.affected = self.fleet.now(), ["p0"]

    def _partition_all(self, fault: Fault, claimed: list[str], duration: float) -> None:
        self._cut(fault, [n.node_id for n in self.info.nodes], duration)

    def _partition_one(self, fault: Fault, claimed: list[str], duration: float) -> None:
        self._cut(fault, [self.rng.choice(self.info.nodes).node_id], duration)

    def _toxic(self, fault: Fault, kind: str, attributes: dict[str, int], duration: float) -> None:
        api = self.info.proxy()
        stream = self.rng.choice(["upstream", "downstream"])
        name = f"soak-{fault.id}"
        fault.target, fault.detail = f"p0 {stream}", {**attributes, "stream": stream}
        added = []
        try:
            for n in self.info.nodes:
                api.add_toxic(proxy_name(n.node_id), name, kind, attributes, stream=stream)
                added.append(n.node_id)
            time.sleep(duration)  # the fault: the toxic stays this long
        finally:
            for node in added:
                api.remove_toxic(proxy_name(node), name)
        fault.end, fault.affected = self.fleet.now(), ["p0"]

    def _latency(self, fault: Fault, claimed: list[str], duration: float) -> None:
        self._toxic(fault, "latency", {"latency": self.rng.randint(50, 500), "jitter": 50}, duration)

    def _bandwidth(self, fault: Fault, claimed: list[str], duration: float) -> None:
        self._toxic(fault, "bandwidth", {"rate": self.rng.choice([16, 64, 256])}, duration)

    def _reset(self, fault: Fault, claimed: list[str], duration: float) -> None:
        self._toxic(fault, "reset_peer", {"timeout": self.rng.randint(200, 3000)}, duration)
