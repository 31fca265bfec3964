"""Health and metrics HTTP endpoints: ``/metrics``, ``/livez``, ``/readyz`` (SPEC §9).

Standard library only (an asyncio server in a daemon thread, `HttpServer`): the endpoints must keep
answering while the processing loop is busy or stuck, which is exactly when they matter, and while
anyone on the pod network holds connections open; and they must not add a web framework to the image.

* **Liveness** means "the processing loop is turning": the loop calls :meth:`Health.mark_progress`
  on every iteration, idle or not, so a deadlocked or wedged loop stops answering within
  ``idle_deadline_s`` and Kubernetes restarts the pod. A broker outage is *not* a liveness
  failure: restarting cannot fix it and would only add churn.
* **Readiness** means "this instance is doing useful work": settings bootstrap done (SPEC §5),
  at least one partition assigned, and no known problem such as an unreachable broker.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Callable
from email.utils import formatdate
from http import HTTPStatus
from typing import Any
from urllib.parse import urlsplit

from prometheus_client.exposition import choose_encoder

from processor.metrics import Metrics

DEFAULT_IDLE_DEADLINE_S = 60.0


class Health:
    """Thread-safe liveness/readiness state, written by the processing loop, read by HTTP threads."""

    def __init__(
        self, idle_deadline_s: float = DEFAULT_IDLE_DEADLINE_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.idle_deadline_s = idle_deadline_s
        self._clock = clock
        self._lock = threading.Lock()
        # Starting counts as progress: the loop gets a full deadline to begin turning.
        self._last_progress = clock()
        self._bootstrapped = False
        self._assigned: int | None = None  # None: not (yet) a member of the consumer group
        self._problem: str | None = None

    def mark_progress(self) -> None:
        """Called by the processing loop on every iteration (also when idle), and by every wait and
        retry loop on every turn: waiting for Kafka is progress, being stuck is not (SPEC §9)."""
        now = self._clock()
        with self._lock:
            self._last_progress = now

    def set_bootstrapped(self, done: bool) -> None:
        """Whether the settings view has caught up to the start-up end offsets."""
        with self._lock:
            self._bootstrapped = done

    def set_assigned(self, partitions: int | None) -> None:
        """Attempt partitions assigned to this group member; None when not a member (start-up, shutdown).

        A member with zero partitions is ready: with more replicas than partitions the spare ones
        are standbys that take over at the next rebalance, and must not stall rollouts or page anyone.
        """
        with self._lock:
            self._assigned = partitions

    def set_problem(self, reason: str | None) -> None:
        """A current problem that makes the instance unready (e.g. "broker unreachable"), or None."""
        with self._lock:
            self._problem = reason

    @property
    def assigned(self) -> int:
        with self._lock:
            return self._assigned or 0

    def liveness(self) -> tuple[bool, dict[str, Any]]:
        """Live when the loop made progress within ``idle_deadline_s``."""
        with self._lock:
            age = self._clock() - self._last_progress
        live = age <= self.idle_deadline_s
        body: dict[str, Any] = {
            "live": live,
            "last_progress_age_s": round(age, 3),
            "idle_deadline_s": self.idle_deadline_s,
        }
        if not live:
            body["reasons"] = [
                f"processing loop made no progress for {age:.0f}s (> {self.idle_deadline_s:g}s)"
            ]
        return live, body

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        """Ready when bootstrapped, in the consumer group (assignment received), and no problem reported."""
        with self._lock:
            bootstrapped, assigned, problem = self._bootstrapped, self._assigned, self._problem
        reasons: list[str] = []
        if not bootstrapped:
            reasons.append("settings bootstrap not complete")
        if assigned is None:
            reasons.append("consumer group not joined (no partition assignment yet)")
        if problem:
            reasons.append(problem)
        body: dict[str, Any] = {"ready": not reasons, "assigned_partitions": assigned or 0}
        if reasons:
            body["reasons"] = reasons
        return not reasons, body


#: A client must send its whole request head within this time, and read the answer within it again.
DEFAULT_READ_TIMEOUT_S = 10.0
#: Connections held at once; above it the oldest unanswered one is dropped, so a new probe always gets
#: in. Well below the usual 1,024 open-files soft limit (the Kafka clients need descriptors too).
DEFAULT_MAX_CONNECTIONS = 512
#: Longest request head accepted (request line plus headers); a longer one is answered 431.
MAX_HEAD_BYTES = 16 * 1024
_PATHS = ["/metrics", "/livez", "/readyz"]


def _respond(metrics: Metrics, health: Health, path: str, accept: str) -> tuple[int, str, bytes]:
    """(status, content type, body) of a GET of `path`."""
    try:
        if path == "/metrics":
            encoder, content_type = choose_encoder(accept)
            return 200, content_type, encoder(metrics.registry)
        if path == "/livez":
            ok, body = health.liveness()
        elif path == "/readyz":
            ok, body = health.readiness()
        else:
            return _json(404, {"error": "not found", "paths": _PATHS})
        return _json(200 if ok else 503, body)
    except Exception as exc:  # an endpoint must answer, never kill the server
        return _json(500, {"error": type(exc).__name__, "detail": str(exc)})


def _json(status: int, body: dict[str, Any]) -> tuple[int, str, bytes]:
    return status, "application/json", (json.dumps(body, sort_keys=True) + "\n").encode()


def _head(status: int, content_type: str, length: int, extra: str = "") -> bytes:
    """The response head. `Server` names the product only: no Python or library version to fingerprint."""
    return (
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\nServer: access-eval\r\n"
        f"Date: {formatdate(usegmt=True)}\r\nContent-Type: {content_type}\r\nContent-Length: {length}\r\n"
        f"Cache-Control: no-store\r\nConnection: close\r\n{extra}\r\n"
    ).encode("latin-1")


def _parse(head: bytes) -> tuple[str, str, str] | None:
    """(method, path, Accept) of a request head, or None when it is not HTTP/1.x."""
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        return None
    accept = ""
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "accept":
            accept = value.strip()
    return parts[0], urlsplit(parts[1]).path.rstrip("/") or "/", accept


class HttpServer:
    """The health/metrics server: one asyncio event loop in a daemon thread, one request per connection.

    Why not a thread per connection (http.server): anyone on the pod network can open connections, and
    thousands of idle ones meant thousands of threads and probes answered in seconds. Here an idle
    connection costs a few kB and no thread; each must send its request head within `read_timeout_s`;
    at most `max_connections` are held, the oldest unanswered one dropped for a new one, so a kubelet
    probe always gets in (tested by tests/observability/test_http_flood.py). ``port`` is the bound port (port 0).
    """

    def __init__(
        self, sock: socket.socket, metrics: Metrics, health: Health, read_timeout_s: float, max_connections: int
    ) -> None:
        self._sock, self._metrics, self._health = sock, metrics, health
        self.read_timeout_s, self.max_connections = read_timeout_s, max_connections
        address = sock.getsockname()
        self.host: str = str(address[0])
        self.port: int = int(address[1])
        #: open connections, oldest first
        self._open: dict[asyncio.StreamWriter, None] = {}
        self._loop = asyncio.new_event_loop()
        self._closed = False
        started = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(started,), name="access-eval-http", daemon=True)
        self._thread.start()
        started.wait()

    def _run(self, started: threading.Event) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(
            asyncio.start_server(self._client, sock=self._sock, limit=MAX_HEAD_BYTES)
        )
        started.set()
        try:
            self._loop.run_forever()
        finally:
            server.close()
            for writer in list(self._open):
                writer.transport.abort()
            self._loop.run_until_complete(server.wait_closed())
            self._loop.close()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._open[writer] = None
        while len(self._open) > self.max_connections:
            oldest = next(iter(self._open))
            del self._open[oldest]
            oldest.transport.abort()
        try:
            async with asyncio.timeout(self.read_timeout_s):
                await self._answer(reader, writer)
            async with asyncio.timeout(self.read_timeout_s):
                await writer.drain()
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError):
            pass  # a client that stalls or goes away is dropped without a word
        finally:
            self._open.pop(writer, None)
            writer.transport.abort()  # answered or given up on: no lingering close handshake to wait for

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.LimitOverrunError:
            writer.write(_head(431, "text/plain", 0))
            return
        request = _parse(head)
        if request is None:
            writer.write(_head(400, "text/plain", 0))
            return
        method, path, accept = request
        if method not in ("GET", "HEAD"):
            writer.write(_head(405, "text/plain", 0, "Allow: GET, HEAD\r\n"))
            return
        status, content_type, body = _respond(self._metrics, self._health, path, accept)
        writer.write(_head(status, content_type, len(body)) + (body if method == "GET" else b""))

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        if host in ("0.0.0.0", "[::]"):
            host = "127.0.0.1" if host == "0.0.0.0" else "[::1]"
        return f"http://{host}:{self.port}"

    def close(self) -> None:
        """Stop serving and release the port (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._sock.close()

    def __enter__(self) -> HttpServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def serve(
    host: str, port: int, metrics: Metrics, health: Health,
    read_timeout_s: float = DEFAULT_READ_TIMEOUT_S, max_connections: int = DEFAULT_MAX_CONNECTIONS,
) -> HttpServer:
    """Serve /metrics, /livez and /readyz on ``host:port`` in a daemon thread. The port is bound here,
    so a port in use raises OSError in the caller.

    Also binds the ``access_eval_ready`` and ``access_eval_assigned_partitions`` gauges to
    ``health`` so that what Prometheus scrapes always agrees with /readyz.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # SO_REUSEADDR on POSIX. The kernel caps the backlog at net.core.somaxconn (4096 by default): a
    # flood must not fill the accept queue, or a probe's SYN is dropped and retried a second later.
    sock = socket.create_server((host, port), family=family, backlog=4096)
    metrics.bind_health(lambda: health.readiness()[0], lambda: health.assigned)
    return HttpServer(sock, metrics, health, read_timeout_s, max_connections)
