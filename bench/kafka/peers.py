"""Section `peers`: the same drain through a Kafka Streams application (bench/peers/KStreamsPeer.java).

The issue's target is a multiple of the best peer, measured in the same run: the peer drains the same
preloaded mix from the same broker, exactly once, and is timed by the same committed-offset watch as
`access-eval run`. Its output is checked like ours: exactly the mix's expected number of events. What
the peer does less than access-eval is written at the top of its source; every difference favours it.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from bench.kafka.common import REPO, num, say
from bench.kafka.procs import Bench, Proc
from bench.kafka.throughput import drain
from bench.kafka.topics import count_committed_records
from bench.kafka.workload import Mixed
from processor.local.fetch import KAFKA_VERSION, SLF4J_BINDING, fetch_closure

SOURCE = REPO / "bench" / "peers" / "KStreamsPeer.java"
#: Kafka Streams of the broker's version, and the logging binding the broker uses (slf4j-api 1.7).
COORDINATES = [("org.apache.kafka", "kafka-streams", KAFKA_VERSION), SLF4J_BINDING]


def unavailable() -> str | None:
    """Why the peer cannot run here (no JDK, no mvn), or None."""
    missing = [tool for tool in ("javac", "java", "mvn") if shutil.which(tool) is None]
    return f"{', '.join(missing)} not installed" if missing else None


def build(work: Path) -> str:
    """Fetch Kafka Streams (once, cached beside the broker's jars), compile the peer; return its classpath."""
    libs = fetch_closure(f"kafka-streams-{KAFKA_VERSION}", COORDINATES, progress=say)
    classpath = ":".join(str(j) for j in sorted(libs.glob("*.jar")))
    classes = work / "peer-classes"
    classes.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["javac", "-d", str(classes), "-Xlint:all", "-Werror", "-cp", classpath, str(SOURCE)],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"javac {SOURCE.name} failed:\n{done.stdout}{done.stderr}")
    return f"{classes}:{classpath}"


def peer_run(bench: Bench, mixed: Mixed, classpath: str, rep: int) -> dict[str, Any]:
    app = bench.fresh(f"peer-kstreams-r{rep}")
    out = bench.topic(bench.fresh("peer-out"), bench.args.partitions)
    state = Path(tempfile.mkdtemp(prefix="kstreams-state-", dir=bench.tmp))
    argv = ["java", "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn", "-cp", classpath, "KStreamsPeer",
            bench.bootstrap, app, bench.settings_topic, bench.attempts_topic, out, str(state)]
    proc: Proc = bench.spawn(argv, app)
    try:
        result = drain(bench, app, [proc], mixed.attempts_total, bench.args.run_timeout)
    finally:
        code = proc.stop()
    events = count_committed_records(bench.bootstrap, out)
    result.update(events=events, expected_events=mixed.expected_events,
                  correct=events == mixed.expected_events, exit_codes=[code])
    bench.drop(out)
    shutil.rmtree(state, ignore_errors=True)
    say(f"  peer kafka-streams run {rep + 1}: {num(result['attempts_per_s'])} attempts/s, "
        f"events {events}/{mixed.expected_events}, cpu {result['cpu_per_process']}, broker {result.get('broker_cpu')}")
    return result
