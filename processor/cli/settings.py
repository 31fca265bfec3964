"""`access-eval settings put|get|delete|list`: the parser; the commands are in `processor.tools.settings`."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from processor.cli.common import add_format, add_kafka_flags, add_settings_topic, command_parser
from processor.tools.runner import run_tool
from processor.tools.settings import PutRequest, SettingsTopic, cmd_delete, cmd_get, cmd_list, cmd_put

if TYPE_CHECKING:
    from processor.cli.common import SubParsers


SETTINGS_EXAMPLES = """examples:
  # report-only for users, allowlisting one partner account (service and service_id stay as they are)
  access-eval settings put --bootstrap-servers 127.0.0.1:9092 --account a3f1c0d2e4b5968778695a4b3c2d1e0f \\
      --identity-type user --state monitor --allow 0b1c2d3e4f5a69788796a5b4c3d2e1f0
  # switch users to limited, keeping the allowlist; add one more account to it
  access-eval settings put --bootstrap-servers 127.0.0.1:9092 --account a3f1c0d2e4b5968778695a4b3c2d1e0f \\
      --identity-type user --state limited --add-allow 9f8e7d6c5b4a39281706f5e4d3c2b1a0
  # a whole document from a file (the IAM account settings JSON)
  access-eval settings put --bootstrap-servers 127.0.0.1:9092 --account a3f1c0d2e4b5968778695a4b3c2d1e0f \\
      --file settings.json
  access-eval settings get --bootstrap-servers 127.0.0.1:9092 --account a3f1c0d2e4b5968778695a4b3c2d1e0f
  access-eval settings list --bootstrap-servers 127.0.0.1:9092 --format json
  # accounts whose latest record was rejected (runbook of the AccessEvalSettingsInvalidLatest alert)
  access-eval settings list --bootstrap-servers 127.0.0.1:9092 --invalid
  access-eval settings delete --bootstrap-servers 127.0.0.1:9092 --account a3f1c0d2e4b5968778695a4b3c2d1e0f --yes

exit status: 0 ok, 1 Kafka failure, 2 invalid input or missing confirmation
"""


def add_parser(sub: SubParsers) -> None:
    p = command_parser(
        sub,
        "settings",
        "read and change account settings on the settings topic",
        "Read and change the external identity interaction settings of accounts on the compacted settings "
        "topic. Documents are validated with the processor's own models before anything is sent.",
        SETTINGS_EXAMPLES,
    )
    ssub = p.add_subparsers(dest="settings_command", metavar="ACTION")
    ssub.required = True

    _add_put(ssub)
    _add_get(ssub)
    _add_delete(ssub)
    _add_list(ssub)


def _add_put(ssub: SubParsers) -> None:
    """`settings put`: a whole document from a file, or one identity type merged into the current one."""
    put = command_parser(
        ssub,
        "put",
        "publish a settings document (whole, or one identity type merged into the current one)",
        "Publish the settings of an account. With --file, the document in the file (its account_id may be "
        "omitted; if present it must match --account). With --identity-type/--state, that identity type is "
        "set and merged into the account's current document read from the topic: other identity types are "
        "kept, and so is the type's allowlist unless --allow/--add-allow/--remove-allow/--clear-allow change it. "
        "Unknown identity types are kept; a near miss of a known one (e.g. 'users') is refused. The record is "
        "written under every key spelling of the account in use (compaction works on exact key bytes). "
        "The producer is idempotent and the command waits for the broker's acknowledgement.",
        SETTINGS_EXAMPLES,
    )
    add_kafka_flags(put)
    add_settings_topic(put)
    put.add_argument("--account", required=True, help="account id (the record key)")
    put.add_argument("--file", help="settings JSON document (SPEC §3 shape)")
    put.add_argument("--identity-type", choices=["user", "service_id", "service"], help="identity type to set")
    put.add_argument("--state", help="enabled, monitor or limited")
    put.add_argument(
        "--allow", nargs="+", action="extend", metavar="ID", help="replace the type's allowlist with these ids"
    )
    put.add_argument("--add-allow", nargs="+", action="extend", metavar="ID", help="add ids to the type's allowlist")
    put.add_argument(
        "--remove-allow", nargs="+", action="extend", metavar="ID", help="remove ids from the type's allowlist"
    )
    put.add_argument("--clear-allow", action="store_true", help="empty the type's allowlist")
    put.add_argument("--updated-at", help="RFC 3339 time from which this version is in force (default: now)")
    put.add_argument("--dry-run", action="store_true", help="validate and print the document, send nothing")
    put.set_defaults(func=lambda a: run_tool("settings put", _put, a))


def _add_get(ssub: SubParsers) -> None:
    """`settings get`: one account's settings in force now."""
    get = command_parser(
        ssub,
        "get",
        "show an account's settings in force now",
        "Read the settings topic fully (like the processor's global table) and show the account's "
        "settings in force now; identity types without settings are shown as enabled.",
        SETTINGS_EXAMPLES,
    )
    add_kafka_flags(get)
    add_settings_topic(get)
    get.add_argument("--account", required=True, help="account id")
    add_format(get)
    get.set_defaults(func=lambda a: run_tool("settings get", _get, a))


def _add_delete(ssub: SubParsers) -> None:
    """`settings delete`: a tombstone, confirmed."""
    delete = command_parser(
        ssub,
        "delete",
        "publish a tombstone: the account reverts to defaults (all enabled)",
        "Publish a tombstone (null value) for the account: from its timestamp every identity type of the "
        "account is enabled (nothing is evaluated or reported). A tombstone goes under every key spelling of the "
        "account in use, and also clears a rejected latest record (the AccessEvalSettingsInvalidLatest runbook). "
        "Asks for confirmation on a terminal; without a terminal --yes is required.",
        SETTINGS_EXAMPLES,
    )
    add_kafka_flags(delete)
    add_settings_topic(delete)
    delete.add_argument("--account", required=True, help="account id")
    delete.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    delete.set_defaults(func=lambda a: run_tool("settings delete", _delete, a))


def _add_list(ssub: SubParsers) -> None:
    """`settings list`: every account with settings, or those whose latest record was rejected."""
    lst = command_parser(
        ssub,
        "list",
        "list every account with settings",
        "Read the settings topic fully and list every account with settings in force now "
        "(deleted accounts are not listed). With --invalid, list the accounts whose latest settings record "
        "was rejected (the AccessEvalSettingsInvalidLatest alert): each needs a valid record published.",
        SETTINGS_EXAMPLES,
    )
    add_kafka_flags(lst)
    add_settings_topic(lst)
    lst.add_argument(
        "--invalid",
        action="store_true",
        help="list instead the accounts whose latest settings record was rejected (reason, detail, "
        "partition/offset, whether a valid version is still in force); exit status 0 either way",
    )
    add_format(lst)
    lst.set_defaults(func=lambda a: run_tool("settings list", _list, a))


# --- flags -> the commands' typed parameters ------------------------------------------------------


def _topic(args: argparse.Namespace) -> SettingsTopic:
    return SettingsTopic(args.settings_topic, args.bootstrap_servers, args.kafka_config, args.timeout)


def _put(args: argparse.Namespace) -> int:
    request = PutRequest(
        account=args.account,
        file=args.file,
        identity_type=args.identity_type,
        state=args.state,
        allow=None if args.allow is None else tuple(args.allow),
        add_allow=tuple(args.add_allow or ()),
        remove_allow=tuple(args.remove_allow or ()),
        clear_allow=args.clear_allow,
        updated_at=args.updated_at,
        dry_run=args.dry_run,
    )
    return cmd_put(_topic(args), request)


def _get(args: argparse.Namespace) -> int:
    return cmd_get(_topic(args), args.account, args.format)


def _delete(args: argparse.Namespace) -> int:
    return cmd_delete(_topic(args), args.account, yes=args.yes)


def _list(args: argparse.Namespace) -> int:
    return cmd_list(_topic(args), args.format, invalid=args.invalid)
