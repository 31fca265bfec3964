"""The broker's JVM process and its ports: is it (still) that process, is a port free, stop it."""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

from processor.errors import LocalKafkaError
from processor.local.properties import HOST

KILL_TIMEOUT_S = 15.0


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


def free_port(host: str = HOST) -> int:
    """An ephemeral port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def terminate(pid: int, timeout: float, kill_timeout: float = KILL_TIMEOUT_S) -> None:
    """SIGTERM (Kafka shuts down cleanly on it), then SIGKILL as a last resort."""
    for sig, wait_s in ((signal.SIGTERM, timeout), (signal.SIGKILL, kill_timeout)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if not alive(pid):
                return
            time.sleep(0.1)
    raise LocalKafkaError(f"broker process {pid} did not exit after SIGKILL")
