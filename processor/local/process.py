"""The local servers' processes (broker, cluster nodes, proxy, schema registry), their ports and state
files: is it (still) that process, is a port free, stop it."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Collection, Iterable
from pathlib import Path
from typing import Any

from processor.errors import LocalKafkaError
from processor.local.properties import HOST

KILL_TIMEOUT_S = 15.0
PORT_RELEASE_TIMEOUT_S = 15.0


def _proc_stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (field 3 = state), None if unavailable."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw.rsplit(")", 1)[-1].split()


def start_ticks(pid: int) -> int | None:
    """Process start time in clock ticks since boot: with the pid, it identifies a process, so a
    recycled pid is not mistaken for our broker."""
    fields = _proc_stat(pid)
    # After ")": state is index 0, so starttime (field 22 overall) is index 19.
    return int(fields[19]) if fields and len(fields) > 19 else None


children: dict[int, subprocess.Popen[bytes]] = {}


def alive(pid: int) -> bool:
    """Whether `pid` is a running (not zombie) process. Reaps it if it is our own exited child."""
    child = children.get(pid)
    if child is not None and child.poll() is not None:
        children.pop(pid, None)
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    fields = _proc_stat(pid)
    return not (fields and fields[0] in ("Z", "X"))


def port_free(port: int, host: str = HOST) -> bool:
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


def free_port(host: str = HOST, exclude: Collection[int] = ()) -> int:
    """An ephemeral port nobody listens on right now (the OS picks it), not one of `exclude`."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            port: int = sock.getsockname()[1]
        if port not in exclude:
            return port


def wait_ports_free(ports: Iterable[int], timeout: float = PORT_RELEASE_TIMEOUT_S, host: str = HOST) -> bool:
    """Wait until every port can be bound again (a stopped server's); False if one is still taken."""
    wanted = list(ports)
    deadline = time.monotonic() + timeout
    while not all(port_free(p, host) for p in wanted):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)
    return True


def port_taken_error(port: int, what: str) -> LocalKafkaError:
    """`what` is "port" (of `local start --port`) or "controller port"."""
    option = "--port" if what == "port" else "--controller-port"
    return LocalKafkaError(
        f"{what} {port} on {HOST} is already in use by another process: stop that process or choose "
        f"another port with `access-eval local start {option} N`"
    )


def spawn_detached(
    cmd: list[str], cwd: Path, log_path: Path, state_path: Path, state: dict[str, Any]
) -> tuple[subprocess.Popen[bytes], int, dict[str, Any]]:
    """Start a server that outlives this process (a session of its own), its output appended to
    `log_path`, and record it in `state_path`: `state` plus its pid, start ticks and start time, so a
    later `stop` finds exactly that process. -> (process, log offset of its output, state written)."""
    with log_path.open("ab") as log:
        offset = log.tell()
        proc = subprocess.Popen(cmd, stdout=log, stderr=log, stdin=subprocess.DEVNULL, cwd=cwd,
                                start_new_session=True)
    children[proc.pid] = proc
    written = {**state, "pid": proc.pid, "start_ticks": start_ticks(proc.pid), "started_at": time.time()}
    write_state(state_path, written)
    return proc, offset, written


# --- state files: the pid (and start ticks) and ports of a detached server, for another process ---


def read_state(path: Path) -> dict[str, Any] | None:
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) else None


def write_state(path: Path, state: dict[str, Any]) -> None:
    """Atomically (a reader never sees half a file)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)


def state_is_live(state: dict[str, Any]) -> bool:
    """Whether the process a state file names is still that process (alive, same start time)."""
    pid = state.get("pid")
    if not isinstance(pid, int) or pid <= 0 or not alive(pid):
        return False
    recorded = state.get("start_ticks")
    current = start_ticks(pid)
    return recorded is None or current is None or recorded == current


def live_state(path: Path) -> dict[str, Any] | None:
    """The state in `path` if its process still runs; a stale state file is removed."""
    state = read_state(path)
    if state is None:
        return None
    if state_is_live(state):
        return state
    path.unlink(missing_ok=True)
    return None


# --- stopping -------------------------------------------------------------------------------------


def stop_processes(pids: Collection[int], timeout: float, kill_timeout: float = KILL_TIMEOUT_S) -> list[int]:
    """SIGTERM every pid at once (Kafka shuts down cleanly on it), then SIGKILL what is left as a last
    resort; returns the pids still alive after that (normally none)."""
    for sig, wait_s in ((signal.SIGTERM, timeout), (signal.SIGKILL, kill_timeout)):
        for pid in [p for p in pids if alive(p)]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if not any(alive(p) for p in pids):
                return []
            time.sleep(0.1)
    return [p for p in pids if alive(p)]


def terminate(
    pid: int,
    timeout: float,
    kill_timeout: float = KILL_TIMEOUT_S,
    *,
    what: str = "broker process",
    error: type[Exception] = LocalKafkaError,
) -> None:
    """Stop one process (`stop_processes`); `error` if even SIGKILL did not end it."""
    if stop_processes([pid], timeout, kill_timeout):
        raise error(f"{what} {pid} did not exit after SIGKILL")
