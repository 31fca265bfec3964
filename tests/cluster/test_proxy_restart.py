"""Toxiproxy's API can wedge for good under load (Shopify/toxiproxy#558): in a 60-minute soak every call
for one proxy timed out from minute 53 on, and the soak died in its final heal (`POST /reset: timed
out`). `local_cluster.restart_proxy` kills the server and starts it with the same proxies; these tests
wedge a real toxiproxy-server (SIGSTOP: its API stops answering) and check the way out."""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from processor.errors import LocalKafkaError
from processor.local import cluster as local_cluster
from processor.local import faultproxy
from processor.local.process import free_port
from tests.support.kafka_harness import wait_until

pytestmark = pytest.mark.cluster


@pytest.fixture
def echo_port() -> Iterator[int]:
    """A TCP server that answers each line with the same line (the proxies' upstream)."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    done = threading.Event()

    def serve() -> None:
        while not done.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            with conn:
                data = conn.recv(1024)
                conn.sendall(data)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    yield server.getsockname()[1]
    done.set()
    t.join(2)
    server.close()


def _echo_through(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"ping\n")
        return s.recv(1024)


def _all_stopped(pid: int) -> bool:
    """Every thread of `pid` is in state T (stopped)."""
    tasks = Path(f"/proc/{pid}/task")
    return all("\tT" in (t / "status").read_text().split("\n")[2] for t in tasks.iterdir())


def test_a_wedged_proxy_is_restarted_with_the_same_proxies(tmp_path: Path, echo_port: int) -> None:
    data = tmp_path / "cluster"
    listen, api_port = free_port(), free_port()
    data.mkdir()
    (data / local_cluster.CLUSTER_FILE).write_text(json.dumps({
        "proxy_api_port": api_port, "nodes": [{"id": 1, "advertised_port": listen, "client_port": echo_port}],
    }))
    local_cluster._start_proxy(data, json.loads((data / local_cluster.CLUSTER_FILE).read_text()))
    try:
        assert _echo_through(listen) == b"ping\n"
        state = faultproxy.server_state(data / "proxy")
        assert state is not None
        os.kill(int(state["pid"]), signal.SIGSTOP)  # the wedge: every API call times out
        # kill() returns before every thread of the Go server has stopped: one still running answered
        # the next call at once (3 of 5 runs under load); wait until all of them are stopped
        wait_until(lambda: _all_stopped(int(state["pid"])), 10, "toxiproxy-server's threads to stop")
        with pytest.raises(LocalKafkaError, match="timed out"):
            faultproxy.Toxiproxy(api_port).reset()
        local_cluster.restart_proxy(data)
        after = faultproxy.server_state(data / "proxy")
        assert after is not None and after["pid"] != state["pid"]
        api = faultproxy.Toxiproxy(api_port)
        api.reset()  # answers again
        assert set(api.proxies()) == {local_cluster.proxy_name(1)}
        wait_until(lambda: _echo_through(listen) == b"ping\n", 10, "the proxy to forward again")
    finally:
        faultproxy.stop_server(data / "proxy", timeout=2.0)
