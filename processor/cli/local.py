"""`access-eval local start|stop|status|fetch`: the parser; the commands are in `processor.local.commands`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from processor.local.broker import DEFAULT_PORT
from processor.local.commands import cmd_fetch, cmd_start, cmd_status, cmd_stop
from processor.local.registry import add_registry_parser

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
    add_registry_parser(commands)
