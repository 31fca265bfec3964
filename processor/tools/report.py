"""`access-eval report`: what switching to limited would deny, for one account or the fleet.

One pass over the eval topic feeds `processor.core.would_be_denies.WouldBeDenies`;
`processor.core.switch_report` builds the report object; `report_text` and `report_html` render it.
This module only reads the topics and puts the pieces together.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

from processor.core.allowlist_advice import DEFAULT_COVER_SHARE, DEFAULT_MAX_ADDITIONS, Allowlists
from processor.core.ids import IDENTITY_TYPES
from processor.core.outcomes import REPORT_ONLY_STATE
from processor.core.settings_view import DocumentView
from processor.core.switch_report import (
    Monitored,
    account_report,
    allowlists_of,
    fleet_counts,
    fleet_rows,
    fleet_verdict,
    rank_fleet,
)
from processor.core.times import rfc3339_millis
from processor.core.would_be_denies import Window
from processor.errors import EXIT_OK, OpsError, usage_error
from processor.kafka.settings_log import read_view
from processor.tools.connection import (
    KafkaFlags,
    connect,
    kafka_props,
    raw_properties,
    topic_exists,
    topic_partitions,
)
from processor.tools.durations import now_ms, parse_since
from processor.tools.report_pass import FleetPart, FleetSpec, PassSpec, default_readers, run_pass
from processor.tools.runner import quiet_processor_logs

#: Eval events are produced after their attempt's event time, except attempts up to the processor's
#: max-future bound (1 h) ahead of its clock: start reading this much before the window.
SEEK_MARGIN_MS = 2 * 3_600_000
DEFAULT_TOP = 20
FORMATS = ("table", "json", "html")


@dataclass(frozen=True)
class ReportOptions:
    """What `report` was asked (typed, so the command runs and is tested without argparse)."""

    account: str | None  # None: the fleet view
    since: str = "30d"
    top: int = DEFAULT_TOP
    max_additions: int = DEFAULT_MAX_ADDITIONS
    cover_share: float = DEFAULT_COVER_SHARE
    fmt: str = "table"
    output: Path | None = None
    eval_topic: str = "iam.access-evaluations"
    settings_topic: str = "iam.account-settings"
    schema_registry_url: str | None = None
    timeout_s: float = 15.0
    readers: int = 0  # reader processes; 0: --account 1, fleet one per core, at most one per partition

    def __post_init__(self) -> None:
        """Checked here, so a typed caller gets the command line's one-line errors too."""
        if self.top < 0:
            usage_error("--top: must be 0 (all) or more")
        if self.max_additions < 0:
            usage_error("--max-additions: must be 0 or more")
        if not 0 < self.cover_share <= 1:
            usage_error("--cover: a percentage above 0 and at most 100")
        if self.readers < 0:
            usage_error("--readers: must be 0 (one per core) or more")
        if self.fmt == "html" and self.output is None:
            usage_error("--format html needs --output FILE (one self-contained page)")


def cmd_report(opts: ReportOptions, kafka: KafkaFlags) -> int:
    """`report`: the typed options and the Kafka flags (a namespace or any object with them)."""
    return run_report(opts, kafka_props(kafka), raw_properties(kafka))


def run_report(opts: ReportOptions, props: dict[str, Any], raw_props: dict[str, str]) -> int:
    now = now_ms()
    start_ms, window_text = parse_since(opts.since, now)
    window = Window(start_ms, now, window_text)
    admin = connect(props, opts.timeout_s)
    partitions = topic_partitions(admin, opts.eval_topic, "--eval-topic")
    retention_ms, retention_problem = eval_topic_retention(admin, opts.eval_topic, opts.timeout_s)
    # What the settings say is taken before the pass and the view dropped: it would otherwise hold
    # every account's documents in memory while the events are counted.
    view = _settings_view(admin, props, opts, required=opts.account is None)
    current: dict[str, Any] | None = None
    monitored: dict[str, tuple[list[str], Allowlists]] = {}
    if opts.account is None:
        assert view is not None
        monitored = monitor_accounts(view, now)
    else:
        current = view.current(opts.account, now).as_json() if view is not None else None
    del view
    spec = PassSpec(
        props, opts.eval_topic, partitions, start_ms - SEEK_MARGIN_MS, window,
        accounts=frozenset(monitored) if opts.account is None else frozenset({opts.account}),
        detail=opts.account is not None, key=opts.account, registry_url=opts.schema_registry_url,
        raw_props=raw_props, timeout_s=opts.timeout_s,
        fleet=FleetSpec(monitored, opts.max_additions, opts.cover_share) if opts.account is None else None,
    )
    # One account's report skips other accounts' records undecoded: one reader is faster than
    # starting more (bench/bench_report.py); the fleet view decodes everything and reads in parallel.
    result = run_pass(spec, opts.readers or (1 if opts.account else default_readers(len(partitions))))
    if result.nothing_decodable:
        whose = f" of {opts.account}" if opts.account else ""
        raise OpsError(
            f"none of the {result.undecodable} events{whose} read from {opts.eval_topic} could be decoded"
            + (": pass --schema-registry-url" if result.needs_registry else "")
        )
    warnings, short = _warnings(opts, window, retention_ms, retention_problem, result.summary())
    common = {"undecodable_events": result.undecodable, "eval_topic_retention_ms": retention_ms,
              "warnings": warnings + result.notes}
    if opts.account is None:
        assert result.fleet is not None
        report = fleet_report(result.fleet, window, monitored, opts)
    else:
        assert result.agg is not None
        report = account_report(opts.account, result.agg.tally(opts.account), window, current,
                                max_additions=opts.max_additions, cover_share=opts.cover_share)
    report.update(common)
    if short is not None:
        report["verdict"] += (
            f"; but the eval topic keeps only {span_words(short)} of events, so this covers at most the "
            f"last {span_words(short)}"
        )
    emit(report, opts)
    return EXIT_OK


def fleet_report(part: FleetPart, window: Window, monitored: Monitored, opts: ReportOptions) -> dict[str, Any]:
    """The fleet view from the readers' rows, with a row (of no counts) for each monitored account
    no reader counted."""
    counted = {r["account_id"] for r in part.rows}
    rows = part.rows + fleet_rows({}, window, {a: v for a, v in monitored.items() if a not in counted},
                                  max_additions=opts.max_additions, cover_share=opts.cover_share, empty=True)
    ranked = rank_fleet(rows)
    counts = fleet_counts(ranked)
    return {
        "fleet": True,
        "window": {"since": rfc3339_millis(window.since_ms), "until": rfc3339_millis(window.until_ms),
                   "text": window.text},
        "series_bucket": "hour" if window.bucket_ms == 3_600_000 else "day",
        "series_start": rfc3339_millis(window.origin_ms),
        "max_additions": opts.max_additions,
        "cover_share": opts.cover_share,
        "classes": counts,
        "accounts": ranked,
        "would_be_denies": sum(r["would_be_denies"] for r in ranked),
        "duplicate_events": sum(r["duplicate_events"] for r in ranked),
        "covered_from": rfc3339_millis(part.first_ms) if part.first_ms is not None else None,
        "covered_to": rfc3339_millis(part.last_ms) if part.last_ms is not None else None,
        "verdict": fleet_verdict(counts, opts.max_additions),
    }


def monitor_accounts(view: DocumentView, at_ms: int) -> dict[str, tuple[list[str], Allowlists]]:
    """Accounts whose settings in force now have at least one identity type in monitor -> those types
    and the allowlists in force."""
    out: dict[str, tuple[list[str], Allowlists]] = {}
    for acct in sorted(view.entries):
        types = view.current(acct, at_ms).identity_types()
        monitor = [t for t in IDENTITY_TYPES if types[t]["state"] == REPORT_ONLY_STATE]
        if monitor:
            allow = allowlists_of({"identity_types": types})
            assert allow is not None
            out[acct] = (monitor, allow)
    return out


def emit(report: dict[str, Any], opts: ReportOptions) -> None:
    """Render in the asked format, to --output or stdout."""
    from processor.tools import report_html, report_text

    pieces: Iterable[str]
    if opts.fmt == "json":
        pieces = json_pieces(report)
    elif opts.fmt == "html":
        pieces = [report_html.render(report, regenerate=regenerate_command(opts))]
    elif report.get("fleet"):
        pieces = [report_text.render_fleet(report, opts.top)]
    else:
        pieces = [report_text.render_account(report, opts.top)]
    if opts.output is None:
        sys.stdout.writelines(pieces)
        sys.stdout.flush()
        return
    try:
        with opts.output.open("w", encoding="utf-8") as f:
            f.writelines(pieces)
    except OSError as exc:
        raise OpsError(f"--output: cannot write {opts.output}: {exc.strerror}") from None


def json_pieces(report: dict[str, Any]) -> Iterator[str]:
    """`json.dumps(report, indent=2)` and a newline, in pieces of 64k tokens: the fleet view's JSON
    at once would be tens of MB, and its million tokens in a list more (bench/bench_report.py)."""
    import json

    tokens = json.JSONEncoder(indent=2).iterencode(report)
    while piece := "".join(islice(tokens, 65536)):
        yield piece
    yield "\n"


def regenerate_command(opts: ReportOptions, bootstrap: str | None = None) -> list[str]:
    """The argv that writes this page again (shown in the page, shell-quoted)."""
    argv = ["access-eval", "report"] + (["--bootstrap-servers", bootstrap] if bootstrap else [])
    argv += ["--all-accounts"] if opts.account is None else ["--account", opts.account]
    argv += ["--since", opts.since, "--eval-topic", opts.eval_topic, "--settings-topic", opts.settings_topic,
             "--format", opts.fmt]
    if opts.output is not None:
        argv += ["--output", str(opts.output)]
    return argv


def _warnings(
    opts: ReportOptions, window: Window, retention_ms: int | None, problem: str | None, undecodable: str | None
) -> tuple[list[str], int | None]:
    """The report's warnings, and the retention when it is shorter than the window (else None)."""
    warnings: list[str] = []
    short = retention_ms if retention_ms is not None and 0 <= retention_ms < window.until_ms - window.since_ms else None
    if short is not None:
        warnings.append(
            f"the eval topic {opts.eval_topic} keeps events for {span_words(short)} (retention.ms={short}), less "
            f"than the window asked for ({window.text}): attempts older than that are not counted"
        )
    if problem is not None:
        warnings.append(f"cannot read retention.ms of {opts.eval_topic} ({problem}): the window may "
                        "reach back further than the topic keeps events")
    if undecodable is not None:
        warnings.append(undecodable)
    return warnings, short


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


def _settings_view(admin: Any, props: dict[str, Any], opts: ReportOptions, required: bool) -> DocumentView | None:
    """The settings topic read to its end (None when it cannot be read and is not required)."""
    if not topic_exists(admin, opts.settings_topic):
        if required:
            raise OpsError(
                f"topic {opts.settings_topic!r} (--settings-topic) does not exist: the fleet view lists the "
                "accounts whose settings have an identity type in monitor"
            )
        return None
    quiet_processor_logs()
    try:
        return read_view(props, opts.settings_topic, opts.timeout_s)
    except OpsError:
        if required:
            raise
        return None
