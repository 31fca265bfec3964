"""A real TCP fault proxy (Toxiproxy) between Kafka clients and the local cluster's brokers.

Every broker of a proxied local cluster advertises the proxy's address for its client listener, so
every client connection (bootstrap and per-broker) crosses the proxy; inter-broker and controller
traffic use listeners of their own that are not proxied. Faults are driven over Toxiproxy's HTTP
API with `urllib` (no dependency): disable a proxy (connections are cut and refused: a network
partition), or add a toxic (latency, bandwidth, ...) on the upstream (client to broker: the
produce path) or downstream direction.

The server binary is built by ``scripts/bootstrap --all`` into ``<repo>/.cache/bin/toxiproxy-server``
(``go install github.com/Shopify/toxiproxy/v2/cmd/server@v2.5.0``).
"""

from __future__ import annotations

import json
import os
import shutil
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from processor.errors import LocalKafkaError
from processor.local.paths import STATE_FILE, repo_root, tail_log
from processor.local.process import children, live_state, spawn_detached, terminate, wait_ports_free
from processor.local.properties import HOST

__all__ = ["TOXIPROXY_VERSION", "Toxiproxy", "find_server", "server_state", "start_server", "stop_server"]

TOXIPROXY_VERSION = "v2.5.0"
SERVER_BINARY = "toxiproxy-server"
LOG_FILE = "toxiproxy.log"


def find_server() -> str:
    """The toxiproxy-server executable: PATH, then ``<repo>/.cache/bin``; else a LocalKafkaError."""
    found = shutil.which(SERVER_BINARY)
    root = repo_root()
    if found is None and root is not None:
        candidate = root / ".cache" / "bin" / SERVER_BINARY
        if candidate.is_file() and os.access(candidate, os.X_OK):
            found = str(candidate)
    if found is None:
        raise LocalKafkaError(
            f"{SERVER_BINARY} is needed for a proxied cluster but was not found: run `scripts/bootstrap --all` "
            f"(GOBIN=.cache/bin go install github.com/Shopify/toxiproxy/v2/cmd/server@{TOXIPROXY_VERSION}, "
            f"renamed to {SERVER_BINARY})"
        )
    return found


class Toxiproxy:
    """A client of one Toxiproxy server's HTTP API (``http://127.0.0.1:<api_port>``)."""

    def __init__(self, api_port: int, host: str = HOST) -> None:
        self.url = f"http://{host}:{api_port}"

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.url + path, data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                text = response.read().decode()
        except urllib.error.HTTPError as exc:
            raise LocalKafkaError(f"toxiproxy {method} {path}: HTTP {exc.code} {exc.read().decode()[:300]}") from None
        except OSError as exc:
            raise LocalKafkaError(f"toxiproxy {method} {path}: {exc}") from None
        try:
            return json.loads(text) if text.strip() else None
        except ValueError:  # /version answers plain text
            return text

    def alive(self) -> bool:
        try:
            self._call("GET", "/version")
        except LocalKafkaError:
            return False
        return True

    def proxies(self) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", "/proxies")
        return result

    def create(self, name: str, listen_port: int, upstream_port: int, host: str = HOST) -> None:
        """A proxy `name` listening on `listen_port`, forwarding to `upstream_port` (replaced if present)."""
        if name in self.proxies():
            self._call("DELETE", f"/proxies/{name}")
        self._call("POST", "/proxies", {"name": name, "listen": f"{host}:{listen_port}",
                                        "upstream": f"{host}:{upstream_port}", "enabled": True})

    def set_enabled(self, name: str, enabled: bool) -> None:
        """Disabled: the listener closes and every open connection through it is cut (a partition)."""
        self._call("POST", f"/proxies/{name}", {"enabled": enabled})

    def add_toxic(self, proxy: str, name: str, kind: str, attributes: dict[str, int],
                  stream: str = "upstream", toxicity: float = 1.0) -> None:
        """E.g. kind "latency" {"latency": 200, "jitter": 0}, "bandwidth" {"rate": KB/s}; stream
        "upstream" is client to broker (produce requests), "downstream" broker to client."""
        self._call("POST", f"/proxies/{proxy}/toxics", {"name": name, "type": kind, "stream": stream,
                                                        "toxicity": toxicity, "attributes": attributes})

    def remove_toxic(self, proxy: str, name: str) -> None:
        self._call("DELETE", f"/proxies/{proxy}/toxics/{name}")

    def reset(self) -> None:
        """Enable every proxy and remove every toxic."""
        self._call("POST", "/reset")


def start_server(state_dir: Path, api_port: int, timeout: float = 30.0) -> int:
    """Start a detached toxiproxy-server with its API on `api_port`; returns its pid.

    Its state file (``state_dir/broker.json``) has the broker state format (pid, start ticks, the
    port it listens on); `stop_server(state_dir)` stops it."""
    binary = find_server()
    state_dir.mkdir(parents=True, exist_ok=True)
    log_path = state_dir / LOG_FILE
    proc, offset, _ = spawn_detached([binary, "-host", HOST, "-port", str(api_port)], state_dir, log_path,
                                     state_dir / STATE_FILE, {"host": HOST, "port": api_port, "kind": "toxiproxy"})
    api = Toxiproxy(api_port)
    deadline = time.monotonic() + timeout
    while not api.alive():
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_server(state_dir)
            raise LocalKafkaError(f"toxiproxy-server did not start on port {api_port}:\n"
                                  f"{tail_log(log_path, 20, offset)}")
        time.sleep(0.1)  # polling a condition with a deadline
    return proc.pid


def server_state(state_dir: Path) -> dict[str, Any] | None:
    """The state of the toxiproxy-server running from `state_dir` (pid, API port), or None."""
    return live_state(state_dir / STATE_FILE)


def stop_server(state_dir: Path, timeout: float = 30.0) -> bool:
    """Stop the toxiproxy-server of `state_dir` (True if one ran); returns once its API port is free."""
    state = server_state(state_dir)
    if state is None:
        return False
    pid = int(state["pid"])
    terminate(pid, timeout, what="toxiproxy-server")
    children.pop(pid, None)
    if not wait_ports_free([int(state["port"])]):
        raise LocalKafkaError(f"toxiproxy-server {pid} exited but port {state['port']} is still taken")
    (state_dir / STATE_FILE).unlink(missing_ok=True)
    return True
