"""processor.health: a real server on an ephemeral port, real HTTP requests."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from processor.health import Health, HttpServer, serve
from processor.metrics import Metrics
from processor.metrics.tally import Tally


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


CLOCK = FakeClock()


@pytest.fixture
def running() -> Iterator[tuple[HttpServer, Metrics, Health]]:
    metrics = Metrics()
    health = Health(idle_deadline_s=0.5, clock=CLOCK)
    server = serve("127.0.0.1", 0, metrics, health)
    try:
        yield server, metrics, health
    finally:
        server.close()


def get(server: HttpServer, path: str, accept: str | None = None) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(f"http://127.0.0.1:{server.port}{path}")
    if accept:
        req.add_header("Accept", accept)
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def test_metrics_endpoint(running: tuple[HttpServer, Metrics, Health]) -> None:
    server, metrics, _ = running
    assert server.port > 0
    t = Tally()
    t.add("would_be_deny", "user", "monitor", "a1")
    metrics.commit(t)
    status, headers, body = get(server, "/metrics")
    assert status == 200
    assert headers["Content-Type"].startswith("text/plain")
    text = body.decode()
    for name in (
        "access_eval_permits_total",
        "access_eval_would_be_denies_total",
        "access_eval_enforced_denies_total",
        "access_eval_attempts_total",
        "access_eval_invalid_total",
        "access_eval_event_age_seconds_bucket",
        "access_eval_batch_processing_seconds_bucket",
        "access_eval_settings_bootstrap_complete",
        "access_eval_ready",
        "access_eval_build_info",
        "process_",
    ):
        assert name in text, name
    assert 'access_eval_would_be_denies_total{identity_type="user"} 1.0' in text
    assert "access_eval_ready 0.0" in text


def test_metrics_openmetrics_negotiation(running: tuple[HttpServer, Metrics, Health]) -> None:
    server, _, _ = running
    status, headers, body = get(server, "/metrics?x=1", accept="application/openmetrics-text; version=1.0.0")
    assert status == 200
    assert headers["Content-Type"].startswith("application/openmetrics-text")
    assert body.rstrip().endswith(b"# EOF")


def test_readiness_transitions(running: tuple[HttpServer, Metrics, Health]) -> None:
    server, _, health = running
    status, headers, body = get(server, "/readyz")
    assert status == 503
    assert headers["Content-Type"] == "application/json"
    doc = json.loads(body)
    assert doc["ready"] is False
    assert "settings bootstrap not complete" in doc["reasons"]
    assert "consumer group not joined (no partition assignment yet)" in doc["reasons"]

    health.set_bootstrapped(True)
    doc = json.loads(get(server, "/readyz")[2])
    assert doc["reasons"] == ["consumer group not joined (no partition assignment yet)"]

    health.set_assigned(3)
    status, _, body = get(server, "/readyz")
    assert status == 200 and json.loads(body)["ready"] is True
    assert "access_eval_ready 1.0" in get(server, "/metrics")[2].decode()
    assert "access_eval_assigned_partitions 3.0" in get(server, "/metrics")[2].decode()

    health.set_problem("broker unreachable")
    status, _, body = get(server, "/readyz")
    assert status == 503 and json.loads(body) == {
        "ready": False,
        "assigned_partitions": 3,
        "reasons": ["broker unreachable"],
    }
    assert "access_eval_ready 0.0" in get(server, "/metrics")[2].decode()
    health.set_problem(None)
    assert get(server, "/readyz")[0] == 200
    health.set_assigned(0)  # a member without partitions (more replicas than partitions) is a ready standby
    status, _, body = get(server, "/readyz")
    assert status == 200 and json.loads(body)["assigned_partitions"] == 0
    health.set_assigned(None)  # left the group (shutdown)
    assert get(server, "/readyz")[0] == 503


def test_liveness_deadline(running: tuple[HttpServer, Metrics, Health]) -> None:
    server, _, health = running
    status, _, body = get(server, "/livez")
    assert status == 200 and json.loads(body)["live"] is True
    CLOCK.now += 0.7  # past the 0.5 s deadline with no mark_progress() (an injected clock: no waiting)
    status, _, body = get(server, "/livez")
    doc = json.loads(body)
    assert status == 503 and doc["live"] is False and "no progress" in doc["reasons"][0]
    health.mark_progress()
    assert get(server, "/livez")[0] == 200
    # liveness ignores readiness: an unready but turning loop is alive
    health.set_problem("broker unreachable")
    assert get(server, "/livez")[0] == 200


def test_not_found_and_head(running: tuple[HttpServer, Metrics, Health]) -> None:
    server, _, _ = running
    status, _, body = get(server, "/nope")
    assert status == 404 and json.loads(body)["error"] == "not found"
    req = urllib.request.Request(f"http://127.0.0.1:{server.port}/livez", method="HEAD")
    with urllib.request.urlopen(req, timeout=5) as resp:
        assert resp.status == 200 and resp.read() == b""


def test_close_releases_port_and_is_idempotent(capfd: pytest.CaptureFixture[str]) -> None:
    server = serve("127.0.0.1", 0, Metrics(), Health())
    port = server.port
    assert get(server, "/livez")[0] == 200
    server.close()
    server.close()
    _, err = capfd.readouterr()
    assert err == ""  # no per-request log lines on stderr
    again = serve("127.0.0.1", port, Metrics(), Health())
    again.close()
