"""The health/metrics server under a slow-client flood (docs/guarantees.md, "Health server under a
connection flood"): anyone on the pod network can open connections to it, and the probes must still
answer. The server runs in its own process, so its threads, file descriptors and RSS are its own.

The bound on probe time is a functional check (a probe that waits behind thousands of idle
connections takes seconds), not a speed target; the figures are printed (`pytest -s`).
"""

from __future__ import annotations

import contextlib
import http.client
import os
import resource
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from processor.health import DEFAULT_MAX_CONNECTIONS, Health, serve
from processor.metrics import Metrics
from tests.support.kafka_harness import wait_until

ROOT = Path(__file__).resolve().parents[2]
FLOOD = 3000
#: The server process under test: prints its port, then serves until stdin closes.
SERVER = """
import sys
from processor.health import DEFAULT_MAX_CONNECTIONS, Health, serve
from processor.metrics import Metrics
server = serve("127.0.0.1", 0, Metrics(), Health(), read_timeout_s=float(sys.argv[1]))
print(server.port, flush=True)
sys.stdin.read()
"""


def _status(pid: int) -> dict[str, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("Threads", "VmRSS"):
            fields[name] = int(value.split()[0])
    fields["fds"] = len(os.listdir(f"/proc/{pid}/fd"))
    return fields


@pytest.fixture
def enough_fds() -> Iterator[None]:
    """Client and server each need a descriptor per connection (the server's child inherits this)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, 4 * FLOOD) if hard != resource.RLIM_INFINITY else 4 * FLOOD
    if want < 2 * FLOOD + 200:
        pytest.fail(f"RLIMIT_NOFILE hard limit {hard} is too low for the flood test (needs {2 * FLOOD + 200})")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, want), hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def _probe(port: int, path: str) -> tuple[int, float, str]:
    started = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        resp.read()
        return resp.status, time.perf_counter() - started, resp.getheader("Server") or ""
    finally:
        conn.close()


def test_probes_answer_fast_while_thousands_of_idle_connections_are_open(enough_fds: None) -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-c", SERVER, "30"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            env=env, text=True)
    idle: list[socket.socket] = []
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        assert _probe(port, "/livez")[0] == 200
        before = _status(proc.pid)
        probes: list[tuple[int, float, str]] = []
        opened, refused = _flood(port, idle, time.monotonic() + 60, lambda: probes.append(_probe(port, "/readyz")))
        # aborted connections' descriptors are released on the server loop's next turns
        held = wait_until(lambda: _capped(proc.pid, before["fds"]), 10, "idle connections are not capped")
        probes += [_probe(port, path) for path in ("/readyz", "/livez") * 5]
        assert all(status in (200, 503) for status, _, _ in probes)
        worst = max(took for _, took, _ in probes)
        server_header = probes[-1][2]
        after = _status(proc.pid)
        print(f"\nflood: {opened} connections opened ({refused} refused or timed out); "
              f"server held {held['fds'] - before['fds']} more fds; "
              f"threads {before['Threads']} -> {after['Threads']}; RSS {before['VmRSS']} -> {after['VmRSS']} kB; "
              f"worst of {len(probes)} probes (during and after the flood) {worst * 1000:.1f} ms")
        assert opened == FLOOD, f"only {opened} of {FLOOD} connections were accepted within 60 s"
        assert worst < 1.0, f"a probe took {worst:.2f} s behind {FLOOD} idle connections"
        assert after["Threads"] - before["Threads"] < 10, "a thread per connection"
        assert "Python" not in server_header and server_header.startswith("access-eval")
    finally:
        for s in idle:
            s.close()
        with contextlib.suppress(Exception):
            proc.communicate(timeout=10)
        if proc.poll() is None:
            proc.kill()


def _capped(pid: int, fds_before: int) -> dict[str, int] | None:
    """The server's status once it holds at most the cap of connections (plus its own few)."""
    status = _status(pid)
    return status if status["fds"] - fds_before <= DEFAULT_MAX_CONNECTIONS + 64 else None


def _flood(port: int, idle: list[socket.socket], deadline: float, probe: Callable[[], None]) -> tuple[int, int]:
    """Open up to FLOOD connections (until the deadline), probing after every FLOOD/20; half of them
    send the start of a request and stall (slowloris). Returns (opened, refused or timed out)."""
    opened = refused = 0
    for i in range(FLOOD):
        if time.monotonic() > deadline:
            break
        if i % (FLOOD // 20) == 0:
            probe()
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=2)
            if i % 2:
                s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
        except OSError:
            refused += 1
            continue
        idle.append(s)
        opened += 1
    return opened, refused


def test_an_idle_connection_is_closed_after_the_read_timeout() -> None:
    server = serve("127.0.0.1", 0, Metrics(), Health(), read_timeout_s=0.3)
    try:
        silent = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        partial = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        partial.sendall(b"GET /livez HTTP/1.1\r\n")
        for s in (silent, partial):
            s.settimeout(0.2)
            # recv returns b"" once the server has closed its end (or raises if it reset it)
            wait_until(lambda s=s: _closed(s), 10, "the server keeps an idle connection open past its read timeout")
            s.close()
        assert _probe(server.port, "/livez")[0] == 200
    finally:
        server.close()


def _closed(s: socket.socket) -> bool:
    try:
        return s.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False
