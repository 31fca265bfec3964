"""A real Prometheus server for tests, plus helpers to query it.

Import as ``from tests.support.prometheus_harness import ...``.

    with PrometheusServer.start(tmp_path, targets=[f"127.0.0.1:{port}"]) as prom:
        prom.wait_for_series('access_eval_attempts_total{outcome="permit"}', timeout=20)
        prom.query_value('sum(access_eval_attempts_total)')

The server gets a free loopback port, a temporary config (scrape and rule evaluation every 1 s,
job ``access-eval``, the repository's rule file) and a data dir under the test's tmp dir. It is
always stopped, even when the test fails, and dies with the test process (PR_SET_PDEATHSIG) if
that is killed outright. The binaries come from Debian's ``prometheus`` package (installed by
``scripts/bootstrap --all``): when they are missing the tests fail (tests/support/required.py).
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.kafka_harness import die_with_parent, free_port
from tests.support.required import require_binary

REPO = Path(__file__).resolve().parents[2]
FILES = REPO / "helm" / "access-eval" / "files"
RULES_FILE = FILES / "access-eval.rules.yaml"
DASHBOARD_FILE = FILES / "access-eval-dashboard.json"
RULE_TESTS_DIR = REPO / "tests" / "k8s" / "rules"
JOB = "access-eval"

_START_ATTEMPTS = 3  # a free port picked by the OS can be taken before Prometheus binds it




class PrometheusError(AssertionError):
    """The Prometheus API answered with an error (e.g. a PromQL parse error)."""


@dataclass
class PrometheusServer:
    """A running ``prometheus`` process; use :meth:`start` and ``with``."""

    process: subprocess.Popen[bytes]
    port: int
    workdir: Path
    config_file: Path
    log_file: Path
    _closed: bool = field(default=False, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- lifecycle ---------------------------------------------------------------------------------

    @classmethod
    def start(
        cls,
        workdir: Path,
        targets: Sequence[str],
        rule_files: Sequence[Path] = (RULES_FILE,),
        *,
        job: str = JOB,
        scrape_interval: str = "1s",
        evaluation_interval: str = "1s",
        extra_scrape_configs: Sequence[dict[str, Any]] = (),
        ready_timeout: float = 30.0,
    ) -> PrometheusServer:
        """Start Prometheus scraping ``targets`` (host:port) as ``job`` and wait for /-/ready."""
        binary = require_binary("prometheus")
        workdir.mkdir(parents=True, exist_ok=True)
        config = {
            "global": {
                "scrape_interval": scrape_interval,
                "scrape_timeout": scrape_interval,
                "evaluation_interval": evaluation_interval,
            },
            "rule_files": [str(Path(p).resolve()) for p in rule_files],
            "scrape_configs": [
                {"job_name": job, "static_configs": [{"targets": list(targets)}]},
                *extra_scrape_configs,
            ],
        }
        config_file = workdir / "prometheus.yml"
        config_file.write_text(yaml.safe_dump(config, sort_keys=False))
        last_error = ""
        for attempt in range(1, _START_ATTEMPTS + 1):
            port = free_port()
            data_dir = workdir / f"data-{attempt}"
            log_file = workdir / f"prometheus-{attempt}.log"
            with log_file.open("wb") as log:
                process = subprocess.Popen(
                    [
                        binary,
                        f"--config.file={config_file}",
                        f"--storage.tsdb.path={data_dir}",
                        f"--web.listen-address=127.0.0.1:{port}",
                        "--web.enable-lifecycle",
                        "--log.level=warn",
                    ],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=workdir,
                    preexec_fn=die_with_parent(signal.SIGTERM),
                )
            server = cls(process, port, workdir, config_file, log_file)
            try:
                server._wait_ready(ready_timeout)
                return server
            except PrometheusError as exc:
                server.stop()
                last_error = str(exc)
                if "address already in use" not in last_error:
                    break
        pytest.fail(f"could not start Prometheus: {last_error}", pytrace=False)

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise PrometheusError(f"prometheus exited with {self.process.returncode}: {self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.1)
        raise PrometheusError(f"prometheus not ready after {timeout:g} s: {self.log_tail()}")

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server (SIGTERM, then SIGKILL after ``timeout``); idempotent."""
        if self._closed:
            return
        self._closed = True
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)

    def __enter__(self) -> PrometheusServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- HTTP API ----------------------------------------------------------------------------------

    def api(self, path: str, **params: str) -> Any:
        """GET /api/v1/<path>; returns ``data``; raises PrometheusError with the API's error text."""
        query = urllib.parse.urlencode(params)
        url = f"{self.url}/api/v1/{path}" + (f"?{query}" if query else "")
        try:
            with urllib.request.urlopen(url, timeout=30) as resp:
                doc = json.loads(resp.read())
        except urllib.error.HTTPError as err:
            body = err.read().decode(errors="replace")
            try:
                doc = json.loads(body)
            except ValueError:
                raise PrometheusError(f"{url}: HTTP {err.code}: {body[:500]}") from None
        if doc.get("status") != "success":
            raise PrometheusError(f"{params.get('query', path)!r}: {doc.get('errorType')}: {doc.get('error')}")
        return doc["data"]

    def query(self, expr: str, at: float | None = None) -> dict[str, Any]:
        """Instant query: ``{"resultType": ..., "result": [...]}``; PromQL errors raise PrometheusError."""
        params = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        data: dict[str, Any] = self.api("query", **params)
        return data

    def query_vector(self, expr: str) -> dict[tuple[tuple[str, str], ...], float]:
        """Instant vector as {sorted label items (without __name__): value}."""
        data = self.query(expr)
        if data["resultType"] != "vector":
            raise PrometheusError(f"{expr!r} is a {data['resultType']}, not a vector")
        return {
            tuple(sorted((k, v) for k, v in r["metric"].items() if k != "__name__")): float(r["value"][1])
            for r in data["result"]
        }

    def query_value(self, expr: str) -> float | None:
        """The single value of ``expr``, or None when it returns no series."""
        data = self.query(expr)
        result = data["result"]
        if data["resultType"] == "scalar":
            return float(result[1])
        if not result:
            return None
        if len(result) != 1:
            raise PrometheusError(f"{expr!r} returned {len(result)} series, expected one")
        return float(result[0]["value"][1])

    def wait_for(
        self, expr: str, predicate: Callable[[dict[tuple[tuple[str, str], ...], float]], bool], timeout: float
    ) -> dict[tuple[tuple[str, str], ...], float]:
        """Poll the instant vector ``expr`` until ``predicate`` holds; fail with the last result."""
        deadline = time.monotonic() + timeout
        last: dict[tuple[tuple[str, str], ...], float] = {}
        while True:
            last = self.query_vector(expr)
            if predicate(last):
                return last
            if time.monotonic() >= deadline:
                raise AssertionError(f"timed out after {timeout:g} s waiting on {expr!r}; last result: {last}")
            time.sleep(0.2)

    def wait_for_series(self, expr: str, timeout: float = 20.0) -> dict[tuple[tuple[str, str], ...], float]:
        """Wait until ``expr`` returns at least one series."""
        return self.wait_for(expr, bool, timeout)

    def targets(self) -> list[dict[str, Any]]:
        active: list[dict[str, Any]] = self.api("targets")["activeTargets"]
        return active

    def rules(self) -> list[dict[str, Any]]:
        """All loaded rules (alerting and recording) with health, lastError and state."""
        return [rule for group in self.api("rules")["groups"] for rule in group["rules"]]

    def alerts(self) -> list[dict[str, Any]]:
        alerts: list[dict[str, Any]] = self.api("alerts")["alerts"]
        return alerts


@contextlib.contextmanager
def running_prometheus(workdir: Path, targets: Sequence[str], **kwargs: Any) -> Iterator[PrometheusServer]:
    """``with running_prometheus(tmp_path, [target]) as prom:`` - started, always stopped."""
    server = PrometheusServer.start(workdir, targets, **kwargs)
    try:
        yield server
    finally:
        server.stop()


# -- the dashboard and rule files -------------------------------------------------------------------

#: Grafana's built-in interval variables, replaced with fixed windows that suit a 1 s scrape interval.
GRAFANA_BUILTINS = {
    "__rate_interval": "1m",
    "__interval": "1m",
    "__range": "1h",
    "__interval_ms": "60000",
    "__range_s": "3600",
}


def load_dashboard() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(DASHBOARD_FILE.read_text())
    return doc


def load_rules() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(RULES_FILE.read_text())
    return doc


def dashboard_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, including panels nested in collapsed rows; rows themselves excluded."""
    out: list[dict[str, Any]] = []
    for panel in dashboard.get("panels", []):
        if panel.get("type") == "row":
            out.extend(panel.get("panels", []))
        else:
            out.append(panel)
    return out


def dashboard_variables(dashboard: dict[str, Any]) -> dict[str, str]:
    """Values to substitute for the dashboard's variables: "All" (``.*``) for query variables,
    the current value for custom/interval/constant ones, plus Grafana's built-ins."""
    values = dict(GRAFANA_BUILTINS)
    for var in dashboard.get("templating", {}).get("list", []):
        name, kind = var["name"], var.get("type")
        if kind == "datasource":
            continue
        if kind == "query":
            values[name] = var.get("allValue") or ".*"
        else:
            current = var.get("current", {}).get("value")
            values[name] = str(current if current is not None else var.get("query", "").split(",")[0])
    return values


def substitute(expr: str, variables: dict[str, str]) -> str:
    """Replace ``$var``, ``${var}`` and ``[[var]]`` like Grafana does (longest names first)."""
    for name in sorted(variables, key=len, reverse=True):
        value = variables[name]
        expr = expr.replace(f"${{{name}}}", value).replace(f"[[{name}]]", value).replace(f"${name}", value)
    return expr


def dashboard_exprs(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title, PromQL expr) for every target of every panel, variables substituted."""
    variables = dashboard_variables(dashboard)
    return [
        (panel.get("title", "?"), substitute(target["expr"], variables))
        for panel in dashboard_panels(dashboard)
        for target in panel.get("targets", [])
        if target.get("expr")
    ]


def rule_exprs(rules: dict[str, Any]) -> list[tuple[str, str]]:
    """(alert or record name, PromQL expr) for every rule."""
    return [
        (rule.get("alert") or rule.get("record") or "?", rule["expr"])
        for group in rules["groups"]
        for rule in group["rules"]
    ]
