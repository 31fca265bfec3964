"""The soak's world: the three-node cluster behind Toxiproxy, the topics, and the processor fleet.

Processor instance ``p0`` connects through the fault proxy (the cluster's advertised client
addresses), the others through the unproxied DIRECT listener: every proxy fault (partition from all
brokers or from one, latency, bandwidth, connection resets) therefore hits exactly one processor,
while broker kills hit all of them. The soak's own traffic, settings and checks use DIRECT too.

Every processor life (one process) is a `Life`; a sampler scrapes the committed-attempt counters of
each running life every `SCRAPE_S`, so the soak knows when each instance last committed (recovery
times) and what each life had counted when it died (the counter check; see soak_check).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from processor import stacks
from processor.errors import LocalKafkaError
from processor.local import cluster as local_cluster
from processor.local.cluster import ClusterInfo
from tests.cluster.test_cluster import FAST
from tests.support.kafka_harness import Topics, wait_until
from tests.support.processor_harness import RunningProcessor, start_processor

SCRAPE_S = 0.5
#: The settings topic: compacted, and cleaned often, so the cleaner runs many times during a soak.
#: Tombstones stay 5 minutes (`delete.retention.ms`), longer than any broker outage of the nemesis: with
#: 1 s, a broker down when a tombstone was written came back after the leader had already removed it,
#: kept the account's older record, and served it as leader later (the soak of seed 20261208 on `36d7bdd`:
#: 176 events of two tombstoned accounts; docs/guarantees.md, Soak). Kafka's default is 24 hours.
COMPACTING = {"segment.ms": "1000", "min.cleanable.dirty.ratio": "0.01", "delete.retention.ms": "300000",
              "min.compaction.lag.ms": "0", "max.compaction.lag.ms": "2000"}
#: A zombie's open transaction is aborted by the coordinator 10 s after it stopped.
PROCESSOR_ENV = {**FAST, "ACCESS_EVAL_KAFKA_TRANSACTION_TIMEOUT_MS": "10000"}
SHUTDOWN_TIMEOUT_S = 20.0
PROCESSOR_ARGS = ("--batch-size", "500", "--shutdown-timeout-s", str(int(SHUTDOWN_TIMEOUT_S)))
COUNTERS = ("access_eval_attempts_total", "access_eval_settings_records_total")
#: A running, unpaused life whose /metrics has not answered for this long is frozen: its stacks are taken.
FROZEN_S = 45.0


@dataclass
class Life:
    """One process of one instance: its start and end, how it ended, and its last scraped counters."""

    instance: str
    number: int
    proc: RunningProcessor
    started: float
    ended: float | None = None
    how: str = ""  # "SIGKILL", "SIGTERM", or "" while running
    rc: int | None = None
    signalled: float | None = None  # when the soak sent SIGTERM/SIGKILL
    paused: bool = False
    outcomes: dict[str, float] = field(default_factory=dict)  # access_eval_attempts_total by outcome
    scraped_at: float | None = None
    unanswered_since: float | None = None  # the first unanswered scrape since the last answered one
    stacks: Path | None = None  # where its stacks were written when it froze

    @property
    def committed(self) -> float:
        return sum(self.outcomes.values())

    def summary(self) -> dict[str, object]:
        return {"instance": self.instance, "life": self.number, "pid": self.proc.proc.pid,
                "started": round(self.started, 3), "ended": None if self.ended is None else round(self.ended, 3),
                "how": self.how, "rc": self.rc, "signalled": self.signalled, "counted": self.outcomes,
                "last_scrape": self.scraped_at, "log": str(self.proc.log_path),
                "stacks": None if self.stacks is None else str(self.stacks)}


def parse_outcomes(body: str) -> dict[str, float]:
    """access_eval_attempts_total by outcome, from a /metrics body."""
    out: dict[str, float] = {}
    prefix = 'access_eval_attempts_total{outcome="'
    for line in body.splitlines():
        if line.startswith(prefix):
            label, _, value = line[len(prefix):].partition('"} ')
            out[label] = float(value)
    return out


class Fleet:
    """The processor instances of one consumer group; thread-safe start, signal, scrape."""

    def __init__(self, topics: Topics, info: ClusterInfo, tmp: Path, instances: int, clock: float) -> None:
        self.topics = topics
        self.info = info
        self.tmp = tmp
        self.clock = clock  # monotonic time 0 of the soak
        self.names = [f"p{i}" for i in range(instances)]
        self.current: dict[str, Life] = {}
        self.lives: list[Life] = []
        self.rises: dict[str, list[tuple[float, float]]] = {n: [] for n in self.names}  # (prev scrape, scrape)
        self.lock = threading.Lock()
        self.frozen: list[str] = []  # one line per life that froze, with where its stacks are

    def now(self) -> float:
        return time.monotonic() - self.clock

    def start(self, name: str) -> Life:
        topics = self.topics if name != "p0" else dataclasses.replace(self.topics, bootstrap=self.info.bootstrap)
        proc = start_processor(topics, self.tmp, *PROCESSOR_ARGS, instance=name, env=PROCESSOR_ENV)
        with self.lock:
            life = Life(name, sum(1 for x in self.lives if x.instance == name) + 1, proc, self.now())
            self.current[name] = life
            self.lives.append(life)
        return life

    def running(self, name: str) -> Life | None:
        life = self.current.get(name)
        return life if life is not None and life.ended is None else None

    def scrape(self, life: Life) -> None:
        if life.paused or life.ended is not None:
            return
        status, body = life.proc.get("/metrics")
        if status != 200:
            at = self.now()
            if life.unanswered_since is None:
                life.unanswered_since = at
            elif at - life.unanswered_since > FROZEN_S and life.stacks is None and not life.paused:
                self.take_stacks(life, f"/metrics unanswered since {life.unanswered_since:.1f} s")
            return
        life.unanswered_since = None
        outcomes, at = parse_outcomes(body), self.now()
        with self.lock:
            if life.ended is not None:
                return
            if life.scraped_at is not None and sum(outcomes.values()) > life.committed:
                self.rises[life.instance].append((life.scraped_at, at))
            elif life.scraped_at is None and sum(outcomes.values()) > 0:
                self.rises[life.instance].append((life.started, at))
            life.outcomes, life.scraped_at = outcomes, at

    def scrape_all(self) -> None:
        for name in self.names:
            life = self.running(name)
            if life is not None:
                self.scrape(life)

    def stop(self, name: str, sig: signal.Signals, timeout: float = 90) -> Life | None:
        """SIGKILL or SIGTERM the running life of `name` (scraped just before); its exit code."""
        life = self.running(name)
        if life is None:
            return None
        self.scrape(life)
        if life.paused:
            self.resume(name)
        life.signalled = self.now()
        if sig == signal.SIGKILL:
            life.proc.kill()
            rc: int | None = life.proc.proc.returncode
        else:
            try:
                rc = life.proc.terminate(timeout)
            except subprocess.TimeoutExpired:  # did not exit in time: a failure the checker reports (rc None)
                if life.stacks is None:
                    self.take_stacks(life, f"no exit {timeout:g} s after SIGTERM")
                life.proc.kill()
                rc = None
        with self.lock:
            life.ended, life.how, life.rc = self.now(), sig.name, rc
        return life

    def take_stacks(self, life: Life, why: str) -> Path:
        """Record a life that froze, with its stacks (`capture_stacks`)."""
        out = capture_stacks(life.proc, f"{life.instance}#{life.number}: {why} (at {self.now():.1f} s)")
        life.stacks = out
        with self.lock:
            self.frozen.append(f"{life.instance}#{life.number} froze ({why}); stacks: {out}")
        return out

    def pause(self, name: str) -> Life | None:
        life = self.running(name)
        if life is not None and not life.paused:
            self.scrape(life)
            os.kill(life.proc.proc.pid, signal.SIGSTOP)
            life.paused, life.unanswered_since = True, None
        return life

    def resume(self, name: str) -> None:
        life = self.current.get(name)
        if life is not None and life.paused:
            with contextlib.suppress(ProcessLookupError):
                os.kill(life.proc.proc.pid, signal.SIGCONT)
            life.paused, life.unanswered_since = False, None

    def exited_by_itself(self) -> list[Life]:
        """Lives whose process ended without a signal from the soak (a crash): recorded as ended."""
        crashed = []
        for name in self.names:
            life = self.running(name)
            if life is not None and not life.paused and life.proc.proc.poll() is not None:
                with self.lock:
                    life.ended, life.how, life.rc = self.now(), "exited", life.proc.proc.returncode
                crashed.append(life)
        return crashed

    def kill_all(self) -> None:
        for life in self.lives:
            if life.paused:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(life.proc.proc.pid, signal.SIGCONT)
            life.proc.kill()



def capture_stacks(proc: RunningProcessor, why: str, answer_s: float = 10.0) -> Path:
    """Every thread's stack of a processor that froze, for the diagnosis: Python's, into its log, and,
    when gdb is installed, the native ones (which C call blocks), into `<log>.stacks.txt`. SIGUSR1
    first (safe: dumped with the GIL held); when no dump ends within `answer_s` a thread holds the
    GIL, no thread runs Python, and SIGUSR2's dump from C is safe (processor/stacks.py)."""
    pid = proc.proc.pid
    out = proc.log_path.with_suffix(".stacks.txt")
    lines = [f"pid {pid}: {why}"]

    def dumps() -> int:
        return proc.log_path.read_text(errors="replace").count(stacks.FOOTER)

    with contextlib.suppress(ProcessLookupError):
        before = dumps()
        os.kill(pid, stacks.DUMP)
        answered = False
        with contextlib.suppress(AssertionError):
            answered = wait_until(lambda: dumps() > before, answer_s, "the answer to SIGUSR1")
        if answered:
            lines.append(f"SIGUSR1 answered: Python stacks at the end of {proc.log_path.name}")
        else:
            os.kill(pid, stacks.FROZEN_DUMP)
            lines.append(f"SIGUSR1 unanswered in {answer_s:g} s (the GIL is held); SIGUSR2 sent: Python "
                         f"stacks, from C, at the end of {proc.log_path.name}")
    gdb = shutil.which("gdb")
    if gdb is None:
        lines.append("gdb not installed: no native stacks")
    else:
        try:
            done = subprocess.run([gdb, "-p", str(pid), "-batch", "-nx", "-ex", "thread apply all bt"],
                                  capture_output=True, text=True, timeout=120)
            lines += [done.stdout, done.stderr]
        except subprocess.TimeoutExpired:
            lines.append("gdb did not finish within 120 s")
    out.write_text("\n".join(lines) + "\n")
    return out


def heal_cluster(info: ClusterInfo) -> None:
    """Every node running, every proxy enabled and without toxics."""
    status = local_cluster.status(info.data_dir)
    assert status is not None
    for node in status.nodes:
        if node.pid is None:
            local_cluster.start_node(info.data_dir, node.node_id)
    try:
        info.proxy().reset()
    except LocalKafkaError:  # Toxiproxy's API wedged (Shopify/toxiproxy#558): a restart also heals
        local_cluster.restart_proxy(info.data_dir)


def soak_topics(info: ClusterInfo, partitions: int) -> Topics:
    topics = Topics.for_test(info.direct_bootstrap, "soak")
    topics.create(partitions=partitions, settings_config=COMPACTING)
    return topics


def wait_fleet_ready(fleet: Fleet, timeout: float = 180) -> None:
    for name in fleet.names:
        life = fleet.running(name)
        assert life is not None, f"{name} is not running"
        life.proc.wait_ready(timeout)


Rises = dict[str, list[tuple[float, float]]]


def first_commit_after(rises: Rises, name: str, t: float) -> float | None:
    """When `name` was first seen to commit after `t`: the scrape that saw its committed counter rise,
    with the scrape before it at or after `t` (so the commit itself is after `t`); None: not yet. The one
    reading of `Fleet.rises` (recovery times, the wait for a commit, the checker's exit rule)."""
    return next((seen for prev, seen in rises.get(name, []) if prev >= t), None)


def wait_rise(fleet: Fleet, name: str, after: float, timeout: float) -> None:
    wait_until(lambda: first_commit_after(fleet.rises, name, after) is not None, timeout,
               f"{name} to commit", interval=SCRAPE_S)
