"""The processes under test (`access-eval run`, `--worker` modes) and the run's topics, started and stopped."""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.kafka.common import (
    REPO,
    SCRIPT,
    free_port,
)
from bench.kafka.topics import (
    create_topics,
    delete_topics,
)


@dataclass
class Proc:
    popen: subprocess.Popen[bytes]
    port: int
    log: Path
    started: float = field(default_factory=time.monotonic)

    def get(self, path: str) -> int:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=2) as r:
                return int(r.status)
        except urllib.error.HTTPError as e:
            return int(e.code)
        except OSError:
            return 0

    def histogram(self, name: str) -> dict[str, Any]:
        """count, mean and the bucket bound holding the p99 of a histogram on the process's /metrics."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as r:
            text = r.read().decode()
        buckets: list[tuple[float, float]] = []
        total = count = 0.0
        for line in text.splitlines():
            head, _, value = line.rpartition(" ")
            if head.startswith(name + "_bucket{"):
                le = head.split('le="', 1)[1].split('"', 1)[0]
                buckets.append((float(le), float(value)))
            elif head == name + "_sum":
                total = float(value)
            elif head == name + "_count":
                count = float(value)
        p99 = next((le for le, n in sorted(buckets) if count and n >= 0.99 * count), None)
        return {"count": int(count), "mean_ms": round(total / count * 1000, 1) if count else None,
                "p99_at_most_ms": p99 * 1000 if p99 is not None and p99 != float("inf") else p99}

    def alive(self) -> bool:
        return self.popen.poll() is None

    def check(self) -> None:
        if not self.alive():
            raise RuntimeError(f"process exited {self.popen.returncode}; log {self.log}:\n{tail(self.log)}")

    def stop(self, timeout: float = 60) -> int:
        if self.alive():
            self.popen.send_signal(signal.SIGTERM)
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            return self.popen.wait(10)


def tail(path: Path, n: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


@dataclass
class Bench:
    args: argparse.Namespace
    bootstrap: str
    tmp: Path
    prefix: str
    broker_pid: int | None
    created: list[str] = field(default_factory=list)
    procs: list[Proc] = field(default_factory=list)
    serial: int = 0

    @property
    def settings_topic(self) -> str:
        return f"{self.prefix}.iam.account-settings"

    @property
    def attempts_topic(self) -> str:
        return f"{self.prefix}.iam.access-attempts"

    @property
    def dlq_topic(self) -> str:
        return f"{self.prefix}.iam.access-attempts.dlq"

    def topic(self, name: str, partitions: int, config: dict[str, str] | None = None) -> str:
        create_topics(self.bootstrap, [(name, partitions, config or {})])
        self.created.append(name)
        return name

    def drop(self, *names: str) -> None:
        """Delete topics made by `topic` once a section is done with them (the rest go at the end)."""
        delete_topics(self.bootstrap, list(names))
        for name in names:
            self.created.remove(name)

    def fresh(self, what: str) -> str:
        self.serial += 1
        return f"{self.prefix}.{what}.{self.serial}.{uuid.uuid4().hex[:4]}"

    def spawn(self, argv: list[str], name: str, port: int = 0) -> Proc:
        log = self.tmp / f"{name}.log"
        with log.open("wb") as fh:
            popen = subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT, cwd=REPO)
        proc = Proc(popen, port, log)
        self.procs.append(proc)
        return proc

    def processor(
        self,
        group: str,
        eval_topic: str,
        *,
        delivery: str = "exactly-once",
        instance: int = 0,
        settings_topic: str | None = None,
        attempts_topic: str | None = None,
        extra: list[str] | None = None,
    ) -> Proc:
        port = free_port()
        argv = [
            sys.executable, "-m", "processor", "run",
            "--bootstrap-servers", self.bootstrap,
            "--metrics-port", str(port),
            "--group-id", group,
            "--settings-topic", settings_topic or self.settings_topic,
            "--attempts-topic", attempts_topic or self.attempts_topic,
            "--eval-topic", eval_topic,
            "--dlq-topic", self.dlq_topic,
            "--metrics-host", "127.0.0.1",
            "--delivery", delivery,
            "--transactional-id", f"{group}-{instance}",
            "--log-level", "WARNING" if not self.args.verbose else "INFO",
            *self.args.processor_arg,
            *(extra or []),
        ]
        return self.spawn(argv, f"{group}-{instance}", port)

    def worker(self, mode: str, group: str, *, out_topic: str = "", instance: int = 0, extra: list[str] | None = None,
               topic: str | None = None) -> Proc:
        argv = [
            sys.executable, str(SCRIPT), "--worker", mode,
            "--bootstrap-servers", self.bootstrap,
            "--w-topic", topic or self.attempts_topic,
            "--w-group", group,
            "--w-out-topic", out_topic,
            "--w-txn-id", f"{group}-{instance}",
            *(extra or []),
        ]
        for a in self.args.processor_arg:
            argv += ["--processor-arg=" + a]
        return self.spawn(argv, f"{mode}-{group}-{instance}")
