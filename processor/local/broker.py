"""A real single-node Apache Kafka broker for development, demos and tests (`access-eval local ...`).

Why a real broker rather than a mock or a container: the processor's contract (SPEC §8) rests on
Kafka transactions, consumer-group rebalances and compacted topics; only the real broker proves
those. Containers are not available on every machine this project runs on, whereas a JVM and
Maven Central are, so the broker jars come from Maven Central through the machine's `mvn` and run
with the machine's `java` (17+), in KRaft mode (one process that is both broker and controller).

Layout:

- jars: ``<repo>/.cache/kafka/<version>/libs`` (override the cache root with
  ``ACCESS_EVAL_KAFKA_CACHE``), reused once a marker file records a complete download;
- data: ``<repo>/var/kafka`` (override with ``ACCESS_EVAL_DATA_DIR`` or ``--data-dir``) holding
  ``server.properties``, the Kafka log dirs, ``broker.log`` and ``broker.json`` (pid, ports) that
  lets ``stop`` and ``status`` find the detached broker again from another process.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import errno
import fcntl
import json
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

__all__ = [
    "DEFAULT_PORT",
    "KAFKA_VERSION",
    "BrokerInfo",
    "LocalKafkaError",
    "add_local_parser",
    "default_cache_dir",
    "default_data_dir",
    "fetch_jars",
    "start",
    "status",
    "stop",
]

KAFKA_VERSION = "4.4.0"
SCALA_BINARY_VERSION = "2.13"
# Kafka 4.x still compiles against slf4j-api 1.7 (checked in the resolved closure, see
# `_check_slf4j_binding`), so the binding must be a 1.7 one: an slf4j 2.x binding is not found by
# the 1.7 API (it looks for StaticLoggerBinder) and the broker would silently log nothing.
SLF4J_BINDING = ("org.slf4j", "slf4j-simple", "1.7.36")
# Pinned so a download does not depend on whatever default plugin version the local Maven has.
DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1"
MIN_JAVA = 17

HOST = "127.0.0.1"  # not "localhost": that may resolve to ::1 first while the broker listens on IPv4
DEFAULT_PORT = 9092
START_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 60.0
KILL_TIMEOUT_S = 15.0
PORT_RELEASE_TIMEOUT_S = 15.0
HEARTBEAT_S = 15.0  # how often `fetch` says it is still working when mvn prints nothing new

# slf4j-simple writes to stderr, which goes to <data_dir>/broker.log; timestamps make it readable.
LOG_OPTS = (
    "-Dorg.slf4j.simpleLogger.showDateTime=true",
    "-Dorg.slf4j.simpleLogger.dateTimeFormat=yyyy-MM-dd'T'HH:mm:ss.SSSZ",
    "-Dorg.slf4j.simpleLogger.defaultLogLevel=info",
)
# A fixed heap: without -Xmx the JVM takes a quarter of the machine's memory.
JVM_OPTS = (
    "-Xms256m",
    "-Xmx512m",
    "-XX:+ExitOnOutOfMemoryError",
    "-XX:-UsePerfData",  # no hsperfdata files in /tmp
    "-Djava.awt.headless=true",
    *LOG_OPTS,
)
LOG_ROTATE_BYTES = 50 * 1024 * 1024

STATE_FILE = "broker.json"
LOG_FILE = "broker.log"
PROPERTIES_FILE = "server.properties"
MARKER_FILE = ".complete"

Progress = Callable[[str], None]


class LocalKafkaError(Exception):
    """A failure the user can act on; the message says what to install, free or change."""


@dataclass(frozen=True)
class BrokerInfo:
    """Where a running local broker is, and which process it is."""

    host: str
    port: int
    pid: int
    data_dir: Path

    @property
    def bootstrap(self) -> str:
        """The `bootstrap.servers` value for clients, e.g. ``127.0.0.1:9092``."""
        return f"{self.host}:{self.port}"


# --------------------------------------------------------------------------------------------------
# Paths and small helpers


def _repo_root() -> Path | None:
    """The checkout this module lives in (installed editable), or None when installed as a wheel:
    then the cache and data go to the user's XDG folders instead of into site-packages."""
    root = Path(__file__).resolve().parents[2]
    return root if (root / "pyproject.toml").is_file() else None


def _xdg(variable: str, fallback: str) -> Path:
    value = os.environ.get(variable)
    return Path(value) if value else Path.home() / fallback


def default_cache_dir() -> Path:
    """Cache root for jars and Maven's local repository: ``$ACCESS_EVAL_KAFKA_CACHE`` or
    ``<repo>/.cache/kafka`` (git-ignored), so a clean clone re-downloads but a re-run does not."""
    env = os.environ.get("ACCESS_EVAL_KAFKA_CACHE")
    if env:
        return Path(env).expanduser().resolve()
    root = _repo_root()
    return root / ".cache" / "kafka" if root else _xdg("XDG_CACHE_HOME", ".cache") / "access-eval" / "kafka"


def default_data_dir() -> Path:
    """Broker data dir: ``$ACCESS_EVAL_DATA_DIR`` or ``<repo>/var/kafka`` (git-ignored as /var/)."""
    env = os.environ.get("ACCESS_EVAL_DATA_DIR")
    if env:
        return Path(env).expanduser().resolve()
    root = _repo_root()
    return (
        root / "var" / "kafka" if root else _xdg("XDG_STATE_HOME", ".local/state") / "access-eval" / "kafka"
    )


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive advisory lock, so that two processes (two shells, parallel test workers) do not
    download into, format or start from the same directory at the same time."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _tail(path: Path, lines: int = 40, start_offset: int = 0) -> str:
    """The last lines of a log written from `start_offset` on: what a failure message shows."""
    try:
        with path.open("rb") as handle:
            handle.seek(start_offset)
            data = handle.read()
    except OSError:
        return ""
    text = data.decode("utf-8", errors="replace")
    return "\n".join(text.splitlines()[-lines:])


# --------------------------------------------------------------------------------------------------
# Java and Maven


def _java_executable() -> str:
    """The `java` to run: ``$JAVA_HOME/bin/java`` when JAVA_HOME is set (as Maven does), else PATH."""
    java_home = os.environ.get("JAVA_HOME")
    if java_home:
        candidate = Path(java_home) / "bin" / "java"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which("java")
    if not found:
        raise LocalKafkaError(
            f"Java {MIN_JAVA}+ is needed to run the local Kafka broker but `java` was not found: install a "
            f"JDK or JRE {MIN_JAVA} or newer (Debian/Ubuntu: apt-get install openjdk-17-jre-headless) "
            "or set JAVA_HOME"
        )
    return found


def _parse_java_major(version_output: str) -> int | None:
    """Major version from `java -version` output: ``"17.0.15"`` → 17, legacy ``"1.8.0_392"`` → 8."""
    match = re.search(r'version "(\d+)(?:\.(\d+))?', version_output)
    if not match:
        return None
    major = int(match.group(1))
    if major == 1 and match.group(2):
        major = int(match.group(2))
    return major


def _check_java() -> str:
    """Path of a usable java (17+), or a LocalKafkaError naming what to install."""
    java = _java_executable()
    try:
        result = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise LocalKafkaError(f"could not run `{java} -version`: {exc}") from exc
    major = _parse_java_major(result.stderr + result.stdout)
    if major is None or major < MIN_JAVA:
        found = f"Java {major}" if major is not None else "an unrecognised Java"
        raise LocalKafkaError(
            f"the local Kafka broker needs Java {MIN_JAVA}+ but {java} is {found}: install a JDK or JRE "
            f"{MIN_JAVA} or newer (Debian/Ubuntu: apt-get install openjdk-17-jre-headless) or point "
            "JAVA_HOME at one"
        )
    return java


def _check_mvn() -> str:
    found = shutil.which("mvn")
    if not found:
        raise LocalKafkaError(
            "Apache Maven (`mvn`) is needed once to download the Kafka broker jars from Maven Central "
            "but was not found: install it (Debian/Ubuntu: apt-get install maven; macOS: brew install maven)"
        )
    return found


def _coordinates() -> list[tuple[str, str, str]]:
    return [("org.apache.kafka", f"kafka_{SCALA_BINARY_VERSION}", KAFKA_VERSION), SLF4J_BINDING]


def _pom(coordinates: list[tuple[str, str, str]]) -> str:
    """The throwaway POM that `copy-dependencies` needs (it refuses to run without a project)."""
    deps = "\n".join(
        "    <dependency>\n"
        f"      <groupId>{group}</groupId>\n"
        f"      <artifactId>{artifact}</artifactId>\n"
        f"      <version>{version}</version>\n"
        "    </dependency>"
        for group, artifact, version in coordinates
    )
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>access-eval.local</groupId>
  <artifactId>kafka-broker-jars</artifactId>
  <version>{KAFKA_VERSION}</version>
  <packaging>pom</packaging>
  <dependencies>
{deps}
  </dependencies>
</project>
"""


_DOWNLOADED = re.compile(r"Downloaded from [^:]+: \S+/([^/\s]+\.jar) \(([^)]*?)(?: at [^)]*)?\)")


def _run_mvn(mvn: str, pom_dir: Path, out_dir: Path, repo_local: Path, progress: Progress) -> None:
    """Run `copy-dependencies`, relaying one line per downloaded jar and a heartbeat when mvn is quiet.

    mvn's own output is thousands of lines (every POM); the user only needs to see that it moves.
    """
    cmd = [
        mvn,
        "-B",  # batch mode: no colours, no interactive transfer bars, one line per transfer
        "-f",
        str(pom_dir / "pom.xml"),
        f"-Dmaven.repo.local={repo_local}",
        f"{DEPENDENCY_PLUGIN}:copy-dependencies",
        "-DincludeScope=runtime",
        f"-DoutputDirectory={out_dir}",
    ]
    try:
        proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            errors="replace",
            cwd=pom_dir,
        )
    except OSError as exc:
        raise LocalKafkaError(f"could not run {mvn}: {exc}") from exc
    assert proc.stdout is not None
    lines: queue.Queue[str | None] = queue.Queue()

    def pump(stream: TextIO) -> None:
        for line in stream:
            lines.put(line.rstrip("\n"))
        lines.put(None)

    reader = threading.Thread(target=pump, args=(proc.stdout,), daemon=True)
    reader.start()
    recent: deque[str] = deque(maxlen=60)
    errors: list[str] = []
    jars = 0
    started = time.monotonic()
    last_said = started
    try:
        while True:
            try:
                line = lines.get(timeout=1.0)
            except queue.Empty:
                if time.monotonic() - last_said >= HEARTBEAT_S:
                    elapsed = time.monotonic() - started
                    progress(f"  still downloading, {jars} jars so far ({elapsed:.0f} s)")
                    last_said = time.monotonic()
                continue
            if line is None:
                break
            recent.append(line)
            if line.startswith("[ERROR]"):
                errors.append(line)
            match = _DOWNLOADED.search(line)
            if match:
                jars += 1
                progress(f"  downloaded {match.group(1)} ({match.group(2)})")
                last_said = time.monotonic()
        rc = proc.wait()
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    finally:
        proc.stdout.close()
    if rc != 0:
        detail = "\n".join(errors[:15] or list(recent)[-20:])
        raise LocalKafkaError(
            f"downloading the Kafka {KAFKA_VERSION} jars with mvn failed (exit {rc}). Check that this "
            "machine reaches Maven Central (or the mirror in your ~/.m2/settings.xml) and re-run "
            f"`access-eval local fetch`. mvn said:\n{detail}"
        )


def _check_slf4j_binding(libs: Path) -> None:
    """Fail loudly if the closure's slf4j-api and the binding disagree on the major.minor line,
    instead of running a broker that silently logs nothing."""
    apis = sorted(libs.glob("slf4j-api-*.jar"))
    binding = SLF4J_BINDING[2]
    for api in apis:
        api_version = api.name.removeprefix("slf4j-api-").removesuffix(".jar")
        if api_version.split(".")[:2] != binding.split(".")[:2]:
            raise LocalKafkaError(
                f"Kafka {KAFKA_VERSION} resolved {api.name} but the logging binding is slf4j-simple "
                f"{binding}; update SLF4J_BINDING in processor/local.py to the matching version"
            )


def _libs_dir(cache_dir: Path) -> Path:
    return cache_dir / KAFKA_VERSION / "libs"


def _marker_text() -> str:
    return json.dumps({"coordinates": [":".join(c) for c in _coordinates()]}, sort_keys=True) + "\n"


def _jars_ready(cache_dir: Path) -> bool:
    marker = cache_dir / KAFKA_VERSION / MARKER_FILE
    try:
        return marker.read_text() == _marker_text() and _libs_dir(cache_dir).is_dir()
    except OSError:
        return False


def fetch_jars(cache_dir: Path | None = None, *, progress: Progress | None = None) -> Path:
    """Make sure the Kafka broker jars (plus a logging binding) are in the cache; return their folder.

    The download goes to a temporary folder that is renamed into place, and the marker file is
    written only after that, so an interrupted download is never mistaken for a complete one.
    `mvn` is only needed when the cache is empty.
    """
    say = progress or _stderr
    cache = (cache_dir or default_cache_dir()).resolve()
    libs = _libs_dir(cache)
    if _jars_ready(cache):
        return libs
    version_dir = cache / KAFKA_VERSION
    with _locked(cache / f".{KAFKA_VERSION}.lock"):
        if _jars_ready(cache):  # another process finished the download while we waited
            return libs
        mvn = _check_mvn()
        _check_java()  # mvn needs it too, and the message for a missing java is the clearer one
        version_dir.mkdir(parents=True, exist_ok=True)
        (version_dir / MARKER_FILE).unlink(missing_ok=True)
        say(f"Fetching Apache Kafka {KAFKA_VERSION} jars from Maven Central into {libs} (once; cached)")
        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="libs.tmp-", dir=version_dir) as tmp:
            tmp_dir = Path(tmp)
            out_dir = tmp_dir / "libs"
            (tmp_dir / "pom.xml").write_text(_pom(_coordinates()))
            _run_mvn(mvn, tmp_dir, out_dir, cache / "m2", say)
            jars = sorted(out_dir.glob("*.jar"))
            if not any(j.name.startswith(f"kafka_{SCALA_BINARY_VERSION}-") for j in jars):
                raise LocalKafkaError(f"mvn finished but no kafka_{SCALA_BINARY_VERSION} jar is in {out_dir}")
            _check_slf4j_binding(out_dir)
            if libs.exists():
                shutil.rmtree(libs)
            out_dir.rename(libs)
        (version_dir / MARKER_FILE).write_text(_marker_text())
        say(f"Fetched {len(jars)} jars in {time.monotonic() - started:.0f} s")
    return libs


# --------------------------------------------------------------------------------------------------
# Processes and ports


def _proc_stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (field 3 = state), None if unavailable."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw.rsplit(")", 1)[-1].split()


def _start_ticks(pid: int) -> int | None:
    """Process start time in clock ticks since boot: with the pid, it identifies a process, so a
    recycled pid is not mistaken for our broker."""
    fields = _proc_stat(pid)
    # After ")": state is index 0, so starttime (field 22 overall) is index 19.
    return int(fields[19]) if fields and len(fields) > 19 else None


_children: dict[int, subprocess.Popen[bytes]] = {}


def _alive(pid: int) -> bool:
    """Whether `pid` is a running (not zombie) process. Reaps it if it is our own exited child."""
    child = _children.get(pid)
    if child is not None and child.poll() is not None:
        _children.pop(pid, None)
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    fields = _proc_stat(pid)
    return not (fields and fields[0] in ("Z", "X"))


def _port_free(port: int, host: str = HOST) -> bool:
    """Whether a listener could bind `port` now. SO_REUSEADDR as the JVM uses it, so connections in
    TIME_WAIT from a previous broker do not count as "taken"; only another listener does."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


def _free_port(host: str = HOST) -> int:
    """An ephemeral port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _port_taken_error(port: int, what: str) -> LocalKafkaError:
    option = "--port" if what == "port" else "--controller-port"
    return LocalKafkaError(
        f"{what} {port} on {HOST} is already in use by another process: stop that process or choose "
        f"another port with `access-eval local start {option} N`"
    )


def _cluster_id() -> str:
    """A KRaft cluster id: a random UUID as 22 chars of URL-safe base64 without padding, as Kafka's
    `Uuid.toString` makes it. Like Kafka's `Uuid.randomUuid`, avoid a leading '-' (it reads as an
    option on command lines)."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode("ascii").rstrip("=")
        if not text.startswith("-"):
            return text


# --------------------------------------------------------------------------------------------------
# State file


def _resolve_data_dir(data_dir: Path | None) -> Path:
    return (data_dir or default_data_dir()).expanduser().resolve()


def _read_state(data_dir: Path) -> dict[str, Any] | None:
    try:
        state = json.loads((data_dir / STATE_FILE).read_text())
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) else None


def _write_state(data_dir: Path, state: dict[str, Any]) -> None:
    tmp = data_dir / f".{STATE_FILE}.tmp"
    tmp.write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")
    tmp.replace(data_dir / STATE_FILE)


def _state_is_live(state: dict[str, Any]) -> bool:
    """Whether the process a state file names is still that broker (alive, same start time)."""
    pid = state.get("pid")
    if not isinstance(pid, int) or pid <= 0 or not _alive(pid):
        return False
    recorded = state.get("start_ticks")
    current = _start_ticks(pid)
    return recorded is None or current is None or recorded == current


def _info(state: dict[str, Any], data_dir: Path) -> BrokerInfo:
    return BrokerInfo(
        host=str(state["host"]), port=int(state["port"]), pid=int(state["pid"]), data_dir=data_dir
    )


def _live_state(data_dir: Path) -> dict[str, Any] | None:
    """The state of a broker still running from `data_dir`; a stale state file is removed."""
    state = _read_state(data_dir)
    if state is None:
        return None
    if _state_is_live(state):
        return state
    (data_dir / STATE_FILE).unlink(missing_ok=True)
    return None


# --------------------------------------------------------------------------------------------------
# Broker lifecycle


def _server_properties(data_dir: Path, port: int, controller_port: int) -> str:
    """Single-node KRaft config. The internal topics default to replication factor 3 / min ISR 2,
    which one node can never satisfy: consumer groups and transactions would hang, so all are 1."""
    props = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@{HOST}:{controller_port}",
        "listeners": f"PLAINTEXT://{HOST}:{port},CONTROLLER://{HOST}:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://{HOST}:{port}",
        "inter.broker.listener.name": "PLAINTEXT",
        "controller.listener.names": "CONTROLLER",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "log.dirs": str(data_dir / "logs"),
        "num.partitions": "1",
        "default.replication.factor": "1",
        "min.insync.replicas": "1",
        "auto.create.topics.enable": "false",
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "3",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "transaction.state.log.num.partitions": "3",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "share.coordinator.state.topic.num.partitions": "1",
        "group.initial.rebalance.delay.ms": "0",
        "num.network.threads": "2",
        "num.io.threads": "4",
    }
    header = "# Written by `access-eval local start` (processor/local.py) on every start; edits are lost.\n"
    return header + "".join(f"{key}={value}\n" for key, value in props.items())


def _format_storage(java: str, libs: Path, data_dir: Path, log_path: Path) -> None:
    """Format the KRaft metadata log once per data dir (Kafka 4 refuses to start unformatted)."""
    if (data_dir / "logs" / "meta.properties").exists():
        return
    cmd = [
        java,
        "-Xmx256m",
        "-XX:-UsePerfData",
        *LOG_OPTS,
        "-cp",
        f"{libs}/*",
        "kafka.tools.StorageTool",
        "format",
        "-t",
        _cluster_id(),
        "-c",
        str(data_dir / PROPERTIES_FILE),
    ]
    with log_path.open("ab") as log:
        offset = log.tell()
        try:
            result = subprocess.run(
                cmd, stdout=log, stderr=log, stdin=subprocess.DEVNULL, cwd=data_dir, timeout=120, check=False
            )
        except subprocess.TimeoutExpired as exc:
            raise LocalKafkaError(f"formatting Kafka storage in {data_dir} timed out") from exc
    if result.returncode != 0:
        raise LocalKafkaError(
            f"formatting Kafka storage in {data_dir} failed (exit {result.returncode}):\n"
            f"{_tail(log_path, 30, offset)}"
        )


def _choose_controller_port(port: int, previous: dict[str, Any] | None, requested: int | None) -> int:
    if requested is not None:
        if requested == port:
            raise LocalKafkaError(f"the controller port must differ from the broker port {port}")
        if not _port_free(requested):
            raise _port_taken_error(requested, "controller port")
        return requested
    # Reuse the last controller port of this data dir when free (stable, easier to read in logs).
    last = previous.get("controller_port") if previous else None
    if isinstance(last, int) and last != port and _port_free(last):
        return last
    while True:
        candidate = _free_port()
        if candidate != port:
            return candidate


def _ready(bootstrap: str, timeout: float) -> bool:
    """Whether the broker answers a metadata request and lists itself (registered and unfenced)."""
    from confluent_kafka.admin import AdminClient

    host, _, port = bootstrap.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=min(timeout, 1.0)):
            pass
    except OSError:
        return False  # not listening yet: skip the client, which would log connection errors
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0, "socket.timeout.ms": 5000})
    try:
        metadata = admin.list_topics(timeout=timeout)
    except Exception:
        return False
    return len(metadata.brokers) > 0


def _terminate(pid: int, timeout: float, kill_timeout: float = KILL_TIMEOUT_S) -> None:
    """SIGTERM (Kafka shuts down cleanly on it), then SIGKILL as a last resort."""
    for sig, wait_s in ((signal.SIGTERM, timeout), (signal.SIGKILL, kill_timeout)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if not _alive(pid):
                return
            time.sleep(0.1)
    raise LocalKafkaError(f"broker process {pid} did not exit after SIGKILL")


def start(
    port: int = DEFAULT_PORT,
    data_dir: Path | None = None,
    controller_port: int | None = None,
    *,
    timeout: float = START_TIMEOUT_S,
    progress: Progress | None = None,
) -> BrokerInfo:
    """Start a detached single-node broker (or find the one already running from `data_dir`).

    Returns once the broker answers a metadata request, so callers can create topics right away.
    The broker outlives this process; `stop` finds it again through the state file.
    """
    say = progress or _stderr
    data = _resolve_data_dir(data_dir)
    data.mkdir(parents=True, exist_ok=True)
    with _locked(data / ".lock"):
        running = _live_state(data)
        if running is not None:
            info = _info(running, data)
            if info.port != port:
                say(f"A broker from {data} is already running on port {info.port} (requested {port} ignored)")
            return info
        previous = _read_last_ports(data)
        if not _port_free(port):
            raise _port_taken_error(port, "port")
        java = _check_java()
        libs = fetch_jars(progress=say)
        cport = _choose_controller_port(port, previous, controller_port)
        (data / PROPERTIES_FILE).write_text(_server_properties(data, port, cport))
        (data / "last-ports.json").write_text(json.dumps({"port": port, "controller_port": cport}) + "\n")
        log_path = data / LOG_FILE
        _rotate_log(log_path)
        _format_storage(java, libs, data, log_path)

        cmd = [java, *JVM_OPTS, "-cp", f"{libs}/*", "kafka.Kafka", str(data / PROPERTIES_FILE)]
        started = time.monotonic()
        with log_path.open("ab") as log:
            log_offset = log.tell()
            proc = subprocess.Popen(
                cmd, stdout=log, stderr=log, stdin=subprocess.DEVNULL, cwd=data, start_new_session=True
            )
        _children[proc.pid] = proc
        state = {
            "host": HOST,
            "port": port,
            "controller_port": cport,
            "pid": proc.pid,
            "start_ticks": _start_ticks(proc.pid),
            "kafka_version": KAFKA_VERSION,
            "started_at": time.time(),
        }
        _write_state(data, state)
        info = _info(state, data)
        try:
            _wait_ready(proc, info, log_path, log_offset, timeout, say)
        except BaseException:
            with contextlib.suppress(LocalKafkaError):
                _terminate(proc.pid, timeout=10.0)
            (data / STATE_FILE).unlink(missing_ok=True)
            raise
        say(
            f"Kafka {KAFKA_VERSION} broker ready on {info.bootstrap} in {time.monotonic() - started:.1f} s "
            f"(pid {info.pid}, log {log_path})"
        )
        return info


def _rotate_log(log_path: Path) -> None:
    """Keep one previous log: broker.log is appended to on every start and would grow unbounded."""
    with contextlib.suppress(OSError):
        if log_path.stat().st_size > LOG_ROTATE_BYTES:
            log_path.replace(log_path.with_name(log_path.name + ".1"))


def _read_last_ports(data_dir: Path) -> dict[str, Any] | None:
    try:
        value = json.loads((data_dir / "last-ports.json").read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _wait_ready(
    proc: subprocess.Popen[bytes],
    info: BrokerInfo,
    log_path: Path,
    log_offset: int,
    timeout: float,
    say: Progress,
) -> None:
    """Poll until the broker answers, failing early (with the log tail) if the JVM exits."""
    deadline = time.monotonic() + timeout
    next_note = time.monotonic() + 15.0
    while True:
        rc = proc.poll()
        if rc is not None:
            raise LocalKafkaError(
                f"the Kafka broker exited during start-up (exit {rc}); last lines of {log_path}:\n"
                f"{_tail(log_path, 40, log_offset)}"
            )
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise LocalKafkaError(
                f"the Kafka broker did not answer on {info.bootstrap} within {timeout:.0f} s; "
                f"last lines of {log_path}:\n{_tail(log_path, 40, log_offset)}"
            )
        if _ready(info.bootstrap, timeout=min(2.0, max(remaining, 0.1))):
            return
        if time.monotonic() >= next_note:
            say(f"  waiting for the broker on {info.bootstrap} ...")
            next_note = time.monotonic() + 15.0
        time.sleep(0.2)


def stop(data_dir: Path | None = None, *, timeout: float = STOP_TIMEOUT_S) -> bool:
    """Stop the broker running from `data_dir`. True if one was running, False if there was none.

    Returns only once the process is gone and its port can be bound again, so a following `start`
    (or a test) can reuse the port immediately.
    """
    data = _resolve_data_dir(data_dir)
    if not data.is_dir():
        return False
    if (data / "cluster.json").is_file():  # `start --brokers N`: every node (processor/local/cluster.py)
        from processor.local import cluster

        return cluster.stop(data)
    with _locked(data / ".lock"):
        state = _live_state(data)
        if state is None:
            return False
        info = _info(state, data)
        _terminate(info.pid, timeout=timeout)
        _children.pop(info.pid, None)
        ports = [info.port] + (
            [state["controller_port"]] if isinstance(state.get("controller_port"), int) else []
        )
        deadline = time.monotonic() + PORT_RELEASE_TIMEOUT_S
        while not all(_port_free(p) for p in ports):
            if time.monotonic() >= deadline:
                raise LocalKafkaError(f"broker {info.pid} exited but port {info.port} is still taken")
            time.sleep(0.1)
        (data / STATE_FILE).unlink(missing_ok=True)
        return True


def status(data_dir: Path | None = None) -> BrokerInfo | None:
    """The broker running from `data_dir`, or None (a stale state file is cleaned up)."""
    data = _resolve_data_dir(data_dir)
    if not data.is_dir():
        return None
    with _locked(data / ".lock"):
        state = _live_state(data)
    return _info(state, data) if state is not None else None


# --------------------------------------------------------------------------------------------------
# Command line: `access-eval local start|stop|status|fetch`


def _data_dir_arg(value: str) -> Path:
    return Path(value).expanduser().resolve()


def _port_arg(value: str) -> int:
    try:
        port = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {value!r}") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port out of range 1-65535: {port}")
    return port


def _report_error(command: str, exc: LocalKafkaError) -> int:
    print(f"access-eval local {command}: error: {exc}", file=sys.stderr, flush=True)
    return 1


def _cmd_start(args: argparse.Namespace) -> int:
    if args.brokers > 1 or args.proxy:
        from processor.local import cluster

        return cluster.cmd_start(args)
    try:
        existing = status(args.data_dir)
        info = existing or start(args.port, args.data_dir, args.controller_port)
    except LocalKafkaError as exc:
        return _report_error("start", exc)
    except KeyboardInterrupt:
        print("access-eval local start: interrupted", file=sys.stderr)
        return 130
    if existing is not None:
        print(f"already running (pid {info.pid}, data dir {info.data_dir})")
    else:
        print(f"started (pid {info.pid}, data dir {info.data_dir})")
    print(f"bootstrap: {info.bootstrap}", flush=True)
    return 0


def _cmd_stop(args: argparse.Namespace) -> int:
    try:
        stopped = stop(args.data_dir)
    except LocalKafkaError as exc:
        return _report_error("stop", exc)
    print("stopped" if stopped else "not running", flush=True)
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    from processor.local import cluster

    if cluster.is_cluster(args.data_dir):
        return cluster.cmd_status(args)
    info = status(args.data_dir)
    if info is None:
        print("stopped", flush=True)
        return 1
    print("running")
    print(f"bootstrap: {info.bootstrap}")
    print(f"pid: {info.pid}")
    print(f"data dir: {info.data_dir}", flush=True)
    return 0


def _cmd_fetch(args: argparse.Namespace) -> int:
    try:
        libs = fetch_jars()
    except LocalKafkaError as exc:
        return _report_error("fetch", exc)
    except KeyboardInterrupt:
        print("access-eval local fetch: interrupted", file=sys.stderr)
        return 130
    print(f"kafka {KAFKA_VERSION} jars: {libs}", flush=True)
    return 0


def add_local_parser(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> argparse.ArgumentParser:
    """Register `local start|stop|status|fetch` on the main CLI; each sets `func(args) -> exit code`."""
    local = subparsers.add_parser(
        "local",
        help="run a real single-node Kafka broker on this machine",
        description="Run a real single-node Apache Kafka broker (KRaft) for development and tests.",
    )
    commands = local.add_subparsers(dest="local_command", metavar="{start,stop,status,fetch}")
    commands.required = True
    data_help = "broker data dir (default: $ACCESS_EVAL_DATA_DIR or <repo>/var/kafka)"

    p_start = commands.add_parser("start", help="start the broker (no-op if already running)")
    p_start.add_argument("--port", type=_port_arg, default=DEFAULT_PORT, help="client port (default 9092)")
    p_start.add_argument("--data-dir", type=_data_dir_arg, default=None, help=data_help)
    p_start.add_argument(
        "--controller-port",
        type=_port_arg,
        default=None,
        help="KRaft controller port (default: any free one)",
    )
    p_start.add_argument(
        "--brokers",
        type=int,
        default=1,
        help="nodes: 1 (default) or a cluster of N on ports --port..--port+N-1, RF 3 (docs/local-cluster.md)",
    )
    p_start.add_argument(
        "--proxy",
        action="store_true",
        help="put Toxiproxy in front of every node (clients reach the brokers only through it)",
    )
    p_start.set_defaults(func=_cmd_start)

    p_stop = commands.add_parser("stop", help="stop the broker (every node of a cluster)")
    p_stop.add_argument("--data-dir", type=_data_dir_arg, default=None, help=data_help)
    p_stop.set_defaults(func=_cmd_stop)

    p_status = commands.add_parser("status", help="print running/stopped and the bootstrap address")
    p_status.add_argument("--data-dir", type=_data_dir_arg, default=None, help=data_help)
    p_status.set_defaults(func=_cmd_status)

    p_fetch = commands.add_parser("fetch", help="download the broker jars only (used by scripts/bootstrap)")
    p_fetch.set_defaults(func=_cmd_fetch)
    return local
