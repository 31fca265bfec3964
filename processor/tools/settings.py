"""`access-eval settings put | get | delete | list`: the settings topic as an operator sees it.

The topic is read through `processor.kafka.settings_log` (the processor's own table reader and
acceptance rules), so `get` shows exactly the version the processor would apply now, and says when a
newer record was rejected. Writing validates with the processor's models first.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from processor.core.display import printable
from processor.core.ids import IDENTITY_TYPES, STATES, normalize_account
from processor.core.settings import InvalidSettings, parse_settings
from processor.core.settings_view import Current, DocumentView, Entry
from processor.core.times import rfc3339_millis, to_millis
from processor.errors import EXIT_FAIL, EXIT_OK, usage_error
from processor.kafka.settings_log import publish, read_view
from processor.tools.accounts import account_id, account_list
from processor.tools.connection import connect, kafka_props, topic_partitions
from processor.tools.durations import now_ms
from processor.tools.output import format_table, write_json
from processor.tools.prompt import confirm
from processor.tools.runner import quiet_processor_logs

ALLOWLIST_PREVIEW = 3


@dataclass(frozen=True)
class SettingsTopic:
    """Where a settings command reads and writes (typed, so the commands run and are tested without
    argparse; `processor.cli.settings` builds it from the flags). Kafka is reached only when needed:
    `put --dry-run` validates without any broker."""

    name: str
    bootstrap_servers: str | None = None
    kafka_config: str | None = None
    timeout_s: float = 15.0


@dataclass(frozen=True)
class PutRequest:
    """What `settings put` was asked: a whole document (`file`), or one identity type merged into the
    account's current document. Ids and the account are raw flag values, validated by `cmd_put`."""

    account: str
    file: str | None = None
    identity_type: str | None = None
    state: str | None = None
    allow: tuple[str, ...] | None = None  # replaces the allowlist; None: keep it
    add_allow: tuple[str, ...] = ()
    remove_allow: tuple[str, ...] = ()
    clear_allow: bool = False
    updated_at: str | None = None
    dry_run: bool = False


def _open(topic: SettingsTopic) -> tuple[dict[str, Any], DocumentView]:
    props = kafka_props(topic)
    admin = connect(props, topic.timeout_s)
    topic_partitions(admin, topic.name, "--settings-topic")
    quiet_processor_logs()
    return props, read_view(props, topic.name, topic.timeout_s)


# --- get / list -----------------------------------------------------------------------------------


def _allowlist_cell(ids: list[str]) -> str:
    if not ids:
        return "-"
    shown = ", ".join(ids[:ALLOWLIST_PREVIEW])
    more = len(ids) - ALLOWLIST_PREVIEW
    return f"{len(ids)}: {shown}" + (f", ... (+{more} more)" if more > 0 else "")


def render_current(cur: Current) -> str:
    lines = [f"account  {cur.account}"]
    e = cur.entry
    if e is None:
        lines.append("source   no settings record: defaults (every identity type enabled)")
    elif e.raw is None:
        lines.append(
            f"source   deleted (tombstone) at {e.topic} [{e.partition}] @ {e.offset}, "
            f"{rfc3339_millis(e.effective_ms)}: defaults (every identity type enabled)"
        )
    else:
        lines.append(
            f"source   {e.topic} [{e.partition}] @ {e.offset}, in force since {rfc3339_millis(e.effective_ms)}"
        )
    lines.append("")
    rows = [[t, v["state"], _allowlist_cell(v["external_allowed_accounts"])] for t, v in cur.identity_types().items()]
    lines.append(format_table(["identity type", "state", "external_allowed_accounts"], rows))
    doc = cur.document()
    if doc is not None and doc.unknown_identity_types:
        lines.append(f"\nignored unknown identity types: {', '.join(map(printable, doc.unknown_identity_types))}")
    for s in cur.scheduled:
        lines.append(f"\nnote: a version at offset {s.offset} takes effect at {rfc3339_millis(s.effective_ms)}")
    for r in cur.rejected:
        lines.append(
            f"\nwarning: newer record at [{r.partition}] @ {r.offset} was rejected by the processor "
            f"({r.reason}: {printable(r.detail)}); the version above stays in force"
        )
    return "\n".join(lines) + "\n"


def cmd_get(topic: SettingsTopic, account: str, fmt: str = "table") -> int:
    account = account_id(account)
    _props, view = _open(topic)
    cur = view.current(account, now_ms())
    if fmt == "json":
        write_json(cur.as_json())
    else:
        sys.stdout.write(render_current(cur))
    return EXIT_OK


def _state_cell(v: dict[str, Any]) -> str:
    n = len(v["external_allowed_accounts"])
    return v["state"] if v["state"] == "enabled" and n == 0 else f"{v['state']} ({n} allowed)"


def invalid_latest_json(view: DocumentView) -> list[dict[str, Any]]:
    return [
        {
            "account_id": r.account,
            "reason": r.reason,
            "detail": r.detail,
            "topic": r.topic,
            "partition": r.partition,
            "offset": r.offset,
            "has_valid_version": r.has_valid_version,
        }
        for r in view.invalid_latest()
    ]


def _short(text: str, width: int = 60) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def cmd_list_invalid(topic: str, view: DocumentView, fmt: str = "table") -> int:
    """`settings list --invalid`: the accounts whose latest record was rejected (exit 0 either way)."""
    rows = invalid_latest_json(view)
    if fmt == "json":
        write_json(rows)
        return EXIT_OK
    if not rows:
        print(f"no account whose latest settings record was rejected in {topic} "
              f"({view.records} records read)")
        return EXIT_OK
    print(format_table(
        ["account", "reason", "detail", "partition", "offset", "valid version"],
        [[r["account_id"] or "(no key)", r["reason"], _short(r["detail"]), r["partition"], r["offset"],
          "in force" if r["has_valid_version"] else "NONE (treated as enabled)"] for r in rows],
    ))
    lost = sum(1 for r in rows if not r["has_valid_version"])
    print(
        f"\n{len(rows)} account(s) in {topic} whose latest record was rejected; {lost} without any "
        "valid version. Publish a valid record for each (`settings put --account ID ...`) before compaction "
        "removes the version still in force."
    )
    return EXIT_OK


def cmd_list(topic: SettingsTopic, fmt: str = "table", invalid: bool = False) -> int:
    _props, view = _open(topic)
    if invalid:
        return cmd_list_invalid(topic.name, view, fmt)
    at = now_ms()
    currents = [view.current(a, at) for a in sorted(view.entries)]
    currents = [c for c in currents if c.exists or c.scheduled]
    if fmt == "json":
        write_json([c.as_json() for c in currents])
        return EXIT_OK
    if not currents:
        print(f"no accounts with settings in {topic.name} ({view.records} records read)")
        return EXIT_OK
    rows = []
    for c in currents:
        types = c.identity_types()
        e = c.entry
        rows.append(
            [
                c.account,
                *(_state_cell(types[t]) for t in IDENTITY_TYPES),
                rfc3339_millis(e.effective_ms) if e is not None else "-",
                e.offset if e is not None else "-",
            ]
        )
    print(format_table(["account", *IDENTITY_TYPES, "in force since", "offset"], rows))
    rejected = sum(len(r) for r in view.rejections.values())
    if rejected:
        print(
            f"\nwarning: {rejected} record(s) in the topic were rejected; `settings get --account ID` shows them, "
            "`settings list --invalid` the accounts whose latest record was rejected"
        )
    return EXIT_OK


# --- put ------------------------------------------------------------------------------------------


def _parse_time(text: str, flag: str) -> str:
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        usage_error(f"{flag}: invalid time {text!r}: use RFC 3339, e.g. 2026-11-27T12:00:00Z")
    if dt.tzinfo is None:
        usage_error(f"{flag}: {text!r} has no UTC offset: add Z or +HH:MM")
    return rfc3339_millis(to_millis(dt))


def _from_file(path: str, account: str) -> dict[str, Any]:
    try:
        text = Path(path).read_text()
    except OSError as exc:
        usage_error(f"--file: cannot read {path}: {exc.strerror}")
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        usage_error(f"--file {path}: malformed JSON: {exc}")
    if not isinstance(obj, dict):
        usage_error(f"--file {path}: expected a JSON object (the settings document)")
    given = obj.get("account_id")
    if given is None:
        obj = {"account_id": account, **obj}
    elif not isinstance(given, str) or normalize_account(given) != account:
        usage_error(f"--file {path}: account_id {given!r} differs from --account {account!r}")
    else:
        obj["account_id"] = account
    return obj


def _merge(req: PutRequest, base: dict[str, Any] | None, account: str) -> dict[str, Any]:
    """Set one identity type on (a copy of) the current document, keeping everything else."""
    doc: dict[str, Any] = json.loads(json.dumps(base)) if base is not None else {}
    doc["account_id"] = account
    doc.pop("updated_at", None)  # the new version takes effect now (or at --updated-at)
    interaction = doc.get("external_account_identity_interaction")
    if not isinstance(interaction, dict):
        interaction = doc["external_account_identity_interaction"] = {}
    types = interaction.get("identity_types")
    if not isinstance(types, dict):
        types = interaction["identity_types"] = {}
    assert req.identity_type is not None and req.state is not None  # _check_put_flags
    entry = types.get(req.identity_type)
    entry = dict(entry) if isinstance(entry, dict) else {}
    allowed = [normalize_account(a) for a in entry.get("external_allowed_accounts") or [] if isinstance(a, str)]
    if req.clear_allow:
        allowed = []
    if req.allow is not None:
        allowed = account_list(list(req.allow), "--allow")
    for a in account_list(list(req.add_allow), "--add-allow"):
        if a not in allowed:
            allowed.append(a)
    removed = set(account_list(list(req.remove_allow), "--remove-allow"))
    allowed = [a for a in allowed if a not in removed]
    entry["state"] = req.state
    entry["external_allowed_accounts"] = allowed
    types[req.identity_type] = entry
    return doc


def _check_put_flags(req: PutRequest) -> None:
    allow_flags = req.allow is not None or req.add_allow or req.remove_allow or req.clear_allow
    if req.file and (req.identity_type or req.state or allow_flags):
        usage_error("--file cannot be combined with --identity-type/--state/--allow flags")
    if not req.file:
        if not req.identity_type or req.state is None:
            usage_error("give --file F, or --identity-type T and --state S")
        if req.state not in STATES:
            usage_error(f"--state: unknown state {req.state!r}: use one of {', '.join(STATES)}")
        # Validate ids now, before any Kafka contact.
        account_list(list(req.allow or ()), "--allow")
        account_list(list(req.add_allow), "--add-allow")
        account_list(list(req.remove_allow), "--remove-allow")


def validate_document(obj: dict[str, Any], account: str) -> bytes:
    """The exact bytes to publish, accepted by the processor's parser (its AccountId rule for every
    id, the caps, near misses of an identity type refused), or a usage error.

    Unknown identity types are kept (forward compatibility: a type added upstream must survive a
    merge by an older tool) and said on stderr."""
    value = json.dumps(obj, separators=(",", ":")).encode()
    try:
        doc = parse_settings(value)
    except InvalidSettings as exc:
        usage_error(f"invalid settings document: {exc.detail}")
    if doc.account_id != account:
        usage_error(f"account_id {doc.account_id!r} differs from --account {account!r}")
    if doc.unknown_identity_types:
        print(
            f"note: keeping unknown identity type(s) {', '.join(map(repr, doc.unknown_identity_types))}: this "
            f"processor ignores them (known: {', '.join(IDENTITY_TYPES)})",
            file=sys.stderr,
        )
    for t in IDENTITY_TYPES:
        cfg = getattr(doc.external_account_identity_interaction.identity_types, t)
        for entry in cfg.external_allowed_accounts if cfg is not None else []:
            account_id(entry, f"{t}.external_allowed_accounts")  # each entry is one id, as published
    return value


def cmd_put(topic: SettingsTopic, req: PutRequest) -> int:
    account = account_id(req.account)
    _check_put_flags(req)
    updated_at = _parse_time(req.updated_at, "--updated-at") if req.updated_at else None
    if req.file:
        obj = _from_file(req.file, account)
        if updated_at is not None:
            obj["updated_at"] = updated_at
        value = validate_document(obj, account)  # validated before any Kafka contact
        if req.dry_run:
            write_json(obj)
            return EXIT_OK
        props, view = _open(topic)
    else:
        props, view = _open(topic)
        cur = view.current(account, now_ms())
        obj = _merge(req, cur.entry.raw if cur.entry is not None else None, account)
        if updated_at is not None:
            obj["updated_at"] = updated_at
        value = validate_document(obj, account)
        if cur.rejected:
            print(
                f"note: {len(cur.rejected)} newer record(s) of {account} were rejected; "
                "merged into the version in force",
                file=sys.stderr,
            )
        if req.dry_run:
            write_json(obj)
            return EXIT_OK
    for key in _keys_in_use(view, account):
        partition, offset = publish(props, topic.name, key, value, topic.timeout_s)
        print(f"published settings of {account}{_spelt(key, account)} to {topic.name} "
              f"[{partition}] @ {offset}")
    doc = parse_settings(value)
    cur = Current(
        account, Entry(account, now_ms(), now_ms(), topic.name, partition, offset, json.loads(value))
    )
    rows = [[t, v["state"], _allowlist_cell(v["external_allowed_accounts"])] for t, v in cur.identity_types().items()]
    print(format_table(["identity type", "state", "external_allowed_accounts"], rows))
    if doc.updated_at is not None:
        print(f"in force from {rfc3339_millis(to_millis(doc.updated_at))}")
    return EXIT_OK


# --- delete ---------------------------------------------------------------------------------------


def cmd_delete(topic: SettingsTopic, account: str, yes: bool = False) -> int:
    account = account_id(account)
    if not yes and not sys.stdin.isatty():
        usage_error(
            f"refusing to delete the settings of {account} without confirmation: stdin is not a terminal; pass --yes"
        )
    props, view = _open(topic)
    cur = view.current(account, now_ms())
    keys = view.live_keys(account)
    if not cur.exists and not cur.scheduled and not keys and not view.has_invalid_latest(account):
        print(f"no settings in force for {account}: nothing to delete")
        return EXIT_OK
    if not yes:
        sys.stderr.write(render_current(cur) + "\n")
        if not confirm(
            f"Delete the settings of {account}? Every identity type reverts to enabled (nothing evaluated or "
            "reported). [y/N] "
        ):
            print("not deleted", file=sys.stderr)
            return EXIT_FAIL
    for key in keys or [account.encode()]:
        partition, offset = publish(props, topic.name, key, None, topic.timeout_s)
        print(f"deleted settings of {account}{_spelt(key, account)}: tombstone at {topic.name} "
              f"[{partition}] @ {offset}")
    return EXIT_OK


def _keys_in_use(view: DocumentView, account: str) -> list[bytes]:
    """Where a new document of the account goes: every key spelling whose last record is a document
    (the log cleaner compacts exact key bytes, so each must be replaced), else the normal form."""
    return view.live_keys(account) or [account.encode()]


def _spelt(key: bytes, account: str) -> str:
    """` (key 'ACCT-A')` when the record key is spelt otherwise than the normal form."""
    return "" if key == account.encode() else f" (key {printable(key.decode('utf-8', 'replace'))!r})"
