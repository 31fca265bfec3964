"""Health and metrics HTTP endpoints: ``/metrics``, ``/livez``, ``/readyz`` (SPEC §9).

Standard library only (``ThreadingHTTPServer`` in a daemon thread): the endpoints must keep
answering while the processing loop is busy or stuck, which is exactly when they matter, and they
must not add a web framework to the image.

* **Liveness** means "the processing loop is turning": the loop calls :meth:`Health.mark_progress`
  on every iteration, idle or not, so a deadlocked or wedged loop stops answering within
  ``idle_deadline_s`` and Kubernetes restarts the pod. A broker outage is *not* a liveness
  failure: restarting cannot fix it and would only add churn.
* **Readiness** means "this instance is doing useful work": settings bootstrap done (SPEC §5),
  at least one partition assigned, and no known problem such as an unreachable broker.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
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


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], metrics: Metrics, health: Health) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.metrics = metrics
        self.health = health
        super().__init__(address, _Handler)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    server_version = "access-eval"

    def do_GET(self) -> None:
        self._handle(send_body=True)

    def do_HEAD(self) -> None:
        self._handle(send_body=False)

    def _handle(self, send_body: bool) -> None:
        path = urlsplit(self.path).path.rstrip("/") or "/"
        try:
            if path == "/metrics":
                encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
                self._send(200, content_type, encoder(self.server.metrics.registry), send_body)
            elif path == "/livez":
                ok, body = self.server.health.liveness()
                self._send_json(200 if ok else 503, body, send_body)
            elif path == "/readyz":
                ok, body = self.server.health.readiness()
                self._send_json(200 if ok else 503, body, send_body)
            else:
                self._send_json(
                    404, {"error": "not found", "paths": ["/metrics", "/livez", "/readyz"]}, send_body
                )
        except Exception as exc:  # an endpoint must answer, never kill the server thread
            self._send_json(500, {"error": type(exc).__name__, "detail": str(exc)}, send_body)

    def _send_json(self, status: int, body: dict[str, Any], send_body: bool) -> None:
        data = (json.dumps(body, sort_keys=True) + "\n").encode()
        self._send(status, "application/json", data, send_body)

    def _send(self, status: int, content_type: str, data: bytes, send_body: bool) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if send_body:
            self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        """Silence per-request logging: probes hit these endpoints every few seconds."""


class HttpServer:
    """A running health/metrics server; ``port`` is the bound port (useful with port 0)."""

    def __init__(self, server: _Server) -> None:
        self._server = server
        self.host: str = str(server.server_address[0])
        self.port: int = int(server.server_address[1])
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.2}, name="access-eval-http", daemon=True
        )
        self._thread.start()

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        if host in ("0.0.0.0", "[::]"):
            host = "127.0.0.1" if host == "0.0.0.0" else "[::1]"
        return f"http://{host}:{self.port}"

    def close(self) -> None:
        """Stop serving and release the port (idempotent)."""
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join(timeout=5)
        self._server.server_close()

    def __enter__(self) -> HttpServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def serve(host: str, port: int, metrics: Metrics, health: Health) -> HttpServer:
    """Serve /metrics, /livez and /readyz on ``host:port`` in a daemon thread.

    Also binds the ``access_eval_ready`` and ``access_eval_assigned_partitions`` gauges to
    ``health`` so that what Prometheus scrapes always agrees with /readyz.
    """
    metrics.bind_health(lambda: health.readiness()[0], lambda: health.assigned)
    return HttpServer(_Server((host, port), metrics, health))
