"""`access-eval report`: what switching an account to limited would deny, from the eval events.

The counting is `processor.core.readiness.DenyAggregator`; this module reads the topics and renders
the result (the table and the plain-language verdict).
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from typing import Any

from processor.core.ids import normalize_account, rfc3339_millis, to_millis
from processor.core.readiness import DenyAggregator
from processor.errors import EXIT_OK, OpsError
from processor.kafka.eval_reader import EvalReader
from processor.kafka.settings_log import read_view
from processor.tools.common import (
    account_id,
    connect,
    format_table,
    kafka_props,
    now_ms,
    parse_since,
    quiet_processor_logs,
    raw_properties,
    topic_exists,
    topic_partitions,
    write_json,
)

#: Eval events are produced after their attempt's event time, except attempts up to the processor's
#: max-future bound (1 h) ahead of its clock: start reading this much before the window.
SEEK_MARGIN_MS = 2 * 3_600_000


def cmd_report(args: argparse.Namespace) -> int:
    account = account_id(args.account)
    now = now_ms()
    start_ms, window = parse_since(args.since, now)
    props = kafka_props(args)
    admin = connect(props, args.timeout)
    partitions = topic_partitions(admin, args.eval_topic, "--eval-topic")
    retention_ms, retention_problem = eval_topic_retention(admin, args.eval_topic, args.timeout)
    current = _current_settings(admin, props, args, account)

    agg = DenyAggregator(per_identity=True)
    reader = EvalReader(
        props, args.eval_topic, partitions, registry_url=args.schema_registry_url, raw_props=raw_properties(args)
    )
    # Event ids are deterministic (UUIDv5 of the attempt's identity): a copy of an event (at-least-once
    # delivery, a producer retry, a replay) has the same id and is counted once.
    seen: set[str] = set()
    duplicates = 0
    first_ms: int | None = None
    last_ms: int | None = None
    try:
        reader.start(start_ms - SEEK_MARGIN_MS, timeout_s=args.timeout)
        for event in reader.events(stop_at_end=True, key=account):
            target = event["target"]
            if normalize_account(target["accountId"]) != account:
                continue
            event_ms = _ms(event["eventTime"])
            if event_ms < start_ms:
                continue
            if event["id"] in seen:
                duplicates += 1
                continue
            seen.add(event["id"])
            first_ms = event_ms if first_ms is None else min(first_ms, event_ms)
            last_ms = event_ms if last_ms is None else max(last_ms, event_ms)
            rd = event["responseData"]
            if rd["state"] == "monitor":
                if rd["decision"] == "Deny":
                    agg.count("would_be_deny")
                    ini = event["initiator"]
                    agg.add_deny(
                        account,
                        ini["typeURI"],
                        normalize_account(ini["authnAccountId"]),
                        ini["id"],
                        event_ms,
                        target["action"],
                        name=ini.get("name"),
                    )
                elif rd["decision"] == "Permit":
                    agg.count("permit")
            elif rd["state"] == "limited" and rd["decision"] == "Deny":
                agg.count("enforced_deny")
    finally:
        reader.close()
    if reader.nothing_decodable:
        raise OpsError(
            f"none of the {reader.undecodable} events of {account} read from {args.eval_topic} could be decoded"
            + (": pass --schema-registry-url" if reader.needs_registry else "")
        )

    report = agg.account_report(account, start_ms, now, window, current=current)
    report["undecodable_events"] = reader.undecodable
    report["duplicate_events"] = duplicates
    report["covered_from"] = rfc3339_millis(first_ms) if first_ms is not None else None
    report["covered_to"] = rfc3339_millis(last_ms) if last_ms is not None else None
    report["eval_topic_retention_ms"] = retention_ms
    warnings: list[str] = []
    short = retention_ms is not None and 0 <= retention_ms < now - start_ms
    if short:
        assert retention_ms is not None
        warnings.append(
            f"the eval topic {args.eval_topic} keeps events for {span_words(retention_ms)} (retention.ms="
            f"{retention_ms}), less than the window asked for ({window}): attempts older than that are not counted"
        )
    if retention_problem is not None:
        warnings.append(f"cannot read retention.ms of {args.eval_topic} ({retention_problem}): the window may "
                        "reach back further than the topic keeps events")
    summary = reader.summary()
    if summary is not None:
        warnings.append(summary)
    report["warnings"] = warnings
    report["verdict"] = verdict(report)
    if short:
        assert retention_ms is not None
        report["verdict"] += (
            f"; but the eval topic keeps only {span_words(retention_ms)} of events, so this covers at most the "
            f"last {span_words(retention_ms)}"
        )
    if args.format == "json":
        write_json(report)
    else:
        sys.stdout.write(render_report_table(report))
        sys.stdout.flush()
    return EXIT_OK


def eval_topic_retention(admin: Any, topic: str, timeout_s: float) -> tuple[int | None, str | None]:
    """The topic's effective retention.ms (-1: unlimited), or None and why it could not be read."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import ConfigResource  # type: ignore[attr-defined]

    try:
        res = ConfigResource(ConfigResource.Type.TOPIC, topic)
        configs = admin.describe_configs([res])[res].result(timeout=timeout_s)
        return int(configs["retention.ms"].value), None
    except Exception as exc:  # describe may be denied by ACLs: the report still runs, with a warning
        err = exc.args[0] if isinstance(exc, KafkaException) and exc.args else exc
        return None, err.str() if hasattr(err, "str") else str(err)


def span_words(ms: int) -> str:
    """`172800000` -> `2 days`, `129600000` -> `36 hours`, `5400000` -> `90 minutes`."""
    for unit, size in (("day", 86_400_000), ("hour", 3_600_000), ("minute", 60_000), ("second", 1000)):
        if ms >= size and ms % size == 0:
            n = ms // size
            return f"{n} {unit}" if n == 1 else f"{n} {unit}s"
    return f"{ms} ms"


def _ms(value: Any) -> int:
    return to_millis(value) if isinstance(value, datetime) else int(value)


def _current_settings(
    admin: Any, props: dict[str, Any], args: argparse.Namespace, account: str
) -> dict[str, Any] | None:
    """The account's settings in force now, when the settings topic can be read (else None)."""
    if not topic_exists(admin, args.settings_topic):
        return None
    quiet_processor_logs()
    try:
        view = read_view(props, args.settings_topic, args.timeout)
    except OpsError:
        return None
    return view.current(account, now_ms()).as_json()


# --- rendering ------------------------------------------------------------------------------------


def _n(count: int, word: str, plural: str | None = None) -> str:
    return f"{count} {word if count == 1 else plural or word + 's'}"


def verdict(report: dict[str, Any]) -> str:
    """One or two plain sentences answering "what breaks if I switch to limited now?"."""
    n, window = report["would_be_denies"], report["window"]["text"]
    if n == 0:
        permits = report["report_only_permits"]
        if permits == 0:
            text = (
                f"no report-only (monitor) evaluations of {report['account_id']} {window}: there is no evidence "
                "of what limited would deny; put the identity types in monitor first"
            )
        else:
            text = (
                f"switching to limited now would have denied no attempts {window}: all "
                f"{_n(permits, 'report-only evaluation')} were permits"
            )
        return text
    k = len(report["external_accounts"])
    text = (
        f"switching to limited now would have denied {_n(n, 'attempt')} by "
        f"{_n(report['identities'], 'identity', 'identities')} from {_n(k, 'external account')} {window}"
    )
    remaining = report.get("denies_with_current_allowlist")
    if remaining is not None and remaining != n:
        text += (
            f"; {n - remaining} of those attempts come from accounts on the allowlist now, so with the current "
            f"allowlist it would deny {_n(remaining, 'attempt')}"
        )
    return text


def render_report_table(report: dict[str, Any]) -> str:
    """The human-readable `report`."""
    acct = report["account_id"]
    w = report["window"]
    out = [f"account {acct}: would-be denies {w['text']} ({w['since']} .. {w['until']})"]
    if report["covered_from"] is not None:
        out.append(f"data covers {report['covered_from']} .. {report['covered_to']} (first and last event read)")
    else:
        out.append("data covers: no events of this account in the window")
    if report["duplicate_events"]:
        out.append(f"{_n(report['duplicate_events'], 'duplicate event')} (same id) counted once")
    out += [f"warning: {w_}" for w_ in report["warnings"]]
    out.append("")
    current = report.get("current_settings")
    if current is not None:
        states = ", ".join(
            f"{t} {v['state']} ({len(v['external_allowed_accounts'])} allowed)"
            for t, v in current["identity_types"].items()
        )
        out += [f"settings now: {states}", ""]
    externals = report["external_accounts"]
    if externals:
        out.append("by external account:")
        out.append(
            format_table(
                ["external account", "attempts", "identities", "types", "first seen", "last seen"],
                [
                    [e["account_id"], e["attempts"], e["identities"], ",".join(e["identity_types"]),
                     e["first_seen"], e["last_seen"]]
                    for e in externals
                ],
            )
        )
        out.append("")
    ids = report.get("by_identity") or []
    if ids:
        out.append("by identity:")
        out.append(
            format_table(
                ["identity", "name", "type", "from account", "attempts", "first seen", "last seen", "actions"],
                [
                    [i["iam_id"], i["name"] or "-", i["identity_type"], i["external_account_id"], i["attempts"],
                     i["first_seen"], i["last_seen"], ", ".join(i["actions"][:3])
                     + (f" (+{len(i['actions']) - 3})" if len(i["actions"]) > 3 else "")]
                    for i in ids
                ],
            )
        )
        out.append("")
    additions = report["allowlist_additions"]
    if additions:
        out.append("allowlist additions that would have turned them into permits:")
        for itype, exts in additions.items():
            state = current["identity_types"][itype]["state"] if current is not None else "monitor"
            state = "monitor" if state == "enabled" else state
            out.append(f"  {itype}: {', '.join(exts)}")
            out.append(
                f"    access-eval settings put --account {acct} --identity-type {itype} --state {state} "
                f"--add-allow {' '.join(exts)}"
            )
        out.append("")
    already = report.get("already_allowlisted") or {}
    for itype, exts in already.items():
        out.append(f"already on the {itype} allowlist now: {', '.join(exts)}")
    if already:
        out.append("")
    out.append(f"verdict: {report['verdict']}")
    return "\n".join(out) + "\n"
