"""`access-eval local start|stop|status|fetch` and `local registry start|stop|status|fetch`: what each
prints and its exit status (the parser is `processor.cli.local`). `start --brokers N|--proxy` and `status`
of a cluster's data dir go to `processor.local.cluster`."""

from __future__ import annotations

import sys
from pathlib import Path

from processor.errors import EXIT_FAIL, EXIT_INTERRUPTED, EXIT_OK, LocalKafkaError
from processor.local import cluster, registry
from processor.local.broker import start, status, stop
from processor.local.fetch import KAFKA_VERSION, fetch_jars


def _report_error(command: str, exc: LocalKafkaError) -> int:
    print(f"access-eval local {command}: error: {exc}", file=sys.stderr, flush=True)
    return EXIT_FAIL


def cmd_start(
    port: int, data_dir: Path | None, controller_port: int | None, *, brokers: int = 1, proxy: bool = False
) -> int:
    if brokers > 1 or proxy:
        return _cmd_cluster_start(port, data_dir, brokers, proxy)
    try:
        existing = status(data_dir)
        info = existing or start(port, data_dir, controller_port)
    except LocalKafkaError as exc:
        return _report_error("start", exc)
    except KeyboardInterrupt:
        print("access-eval local start: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    if existing is not None:
        print(f"already running (pid {info.pid}, data dir {info.data_dir})")
    else:
        print(f"started (pid {info.pid}, data dir {info.data_dir})")
    print(f"bootstrap: {info.bootstrap}", flush=True)
    return EXIT_OK


def cmd_stop(data_dir: Path | None) -> int:
    try:
        stopped = stop(data_dir)
    except LocalKafkaError as exc:
        return _report_error("stop", exc)
    print("stopped" if stopped else "not running", flush=True)
    return EXIT_OK


def cmd_status(data_dir: Path | None) -> int:
    if cluster.is_cluster(data_dir):
        return _cmd_cluster_status(data_dir)
    info = status(data_dir)
    if info is None:
        print("stopped", flush=True)
        return EXIT_FAIL
    print("running")
    print(f"bootstrap: {info.bootstrap}")
    print(f"pid: {info.pid}")
    print(f"data dir: {info.data_dir}", flush=True)
    return EXIT_OK


def _cmd_cluster_start(port: int, data_dir: Path | None, brokers: int, proxy: bool) -> int:
    try:
        info = cluster.start(port, data_dir, brokers=brokers, proxy=proxy)
    except LocalKafkaError as exc:
        return _report_error("start", exc)
    except KeyboardInterrupt:
        print("access-eval local start: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    print("\n".join(cluster.describe(info)), flush=True)
    return EXIT_OK


def _cmd_cluster_status(data_dir: Path | None) -> int:
    info = cluster.status(data_dir)
    if info is None or not info.running:
        print("stopped", flush=True)
        return EXIT_FAIL
    print("running" if len(info.running) == len(info.nodes) else "degraded")
    print("\n".join(cluster.describe(info)), flush=True)
    return EXIT_OK


def cmd_fetch() -> int:
    try:
        libs = fetch_jars()
    except LocalKafkaError as exc:
        return _report_error("fetch", exc)
    except KeyboardInterrupt:
        print("access-eval local fetch: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    print(f"kafka {KAFKA_VERSION} jars: {libs}", flush=True)
    return EXIT_OK


# --- `access-eval local registry start|stop|status|fetch` ----------------------------------------


def _registry_error(command: str, exc: registry.LocalRegistryError) -> int:
    print(f"access-eval local registry {command}: error: {exc}", file=sys.stderr, flush=True)
    return EXIT_FAIL


def cmd_registry_start(port: int, data_dir: Path | None, management_port: int | None) -> int:
    try:
        existing = registry.status(data_dir)
        info = existing or registry.start(port, data_dir, management_port)
    except registry.LocalRegistryError as exc:
        return _registry_error("start", exc)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    print(f"{'already running' if existing else 'started'} (pid {info.pid}, data dir {info.data_dir})")
    print(f"url: {info.url}", flush=True)
    return EXIT_OK


def cmd_registry_stop(data_dir: Path | None) -> int:
    try:
        stopped = registry.stop(data_dir)
    except registry.LocalRegistryError as exc:
        return _registry_error("stop", exc)
    print("stopped" if stopped else "not running", flush=True)
    return EXIT_OK


def cmd_registry_status(data_dir: Path | None) -> int:
    info = registry.status(data_dir)
    if info is None:
        print("stopped", flush=True)
        return EXIT_FAIL
    print("running")
    print(f"url: {info.url}")
    print(f"management: http://{info.host}:{info.management_port}/health")
    print(f"pid: {info.pid}")
    print(f"data dir: {info.data_dir}", flush=True)
    return EXIT_OK


def cmd_registry_fetch() -> int:
    try:
        app = registry.fetch_app()
    except registry.LocalRegistryError as exc:
        return _registry_error("fetch", exc)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    print(f"apicurio registry {registry.APICURIO_VERSION}: {app}", flush=True)
    return EXIT_OK
