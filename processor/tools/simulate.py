"""`access-eval simulate`: the processor's evaluation over two JSONL files, streaming, no Kafka."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from processor.codec.avro import EvalCodec
from processor.core.attempts import InvalidAttempt, parse_attempt
from processor.core.display import printable
from processor.core.evaluator import assess
from processor.core.events import build_event, to_json_obj
from processor.core.outcomes import INVALID, WOULD_BE_DENY
from processor.core.settings import (
    BEGINNING_OF_TIME,
    InvalidSettings,
    SettingsHistory,
    TombstoneLine,
    parse_settings_line,
)
from processor.core.times import to_millis
from processor.core.would_be_denies import WouldBeDenies
from processor.errors import EXIT_OK, EXIT_USAGE, InputError
from processor.tools.output import format_table


def _lines(path: Path) -> Iterator[tuple[int, bytes]]:
    try:
        fh = path.open("rb")
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror}") from None
    with fh:
        for n, line in enumerate(fh, 1):
            if line.strip():
                yield n, line


def load_settings(path: Path, history: SettingsHistory, err: IO[str]) -> int:
    """Apply every settings line; a bad line is reported and the account keeps its previous version."""
    bad = 0
    for n, line in _lines(path):
        try:
            doc = parse_settings_line(line)
        except InvalidSettings as exc:
            bad += 1
            print(f"{path}:{n}: settings rejected: {exc.reason}: {printable(exc.detail)}", file=err)
            continue
        effective = to_millis(doc.updated_at) if doc.updated_at is not None else BEGINNING_OF_TIME
        if isinstance(doc, TombstoneLine):  # SPEC §10: stands for a null record value
            history.apply_tombstone(doc.account_id, effective, offset=n)
        else:
            history.apply_document(doc, effective, offset=n)
    return bad


def simulate(
    settings_path: Path,
    attempts_path: Path,
    out: IO[str],
    err: IO[str],
    *,
    summary: bool = False,
    now_ms: int | None = None,
    retention_ms: int = 24 * 3600 * 1000,
) -> WouldBeDenies:
    """Stream attempts through the shared evaluation; print events (or return the summary)."""
    history = SettingsHistory(retention_ms=retention_ms)
    load_settings(settings_path, history, err)
    clock = now_ms if now_ms is not None else int(time.time() * 1000)
    agg = WouldBeDenies(detail=True)
    codec = EvalCodec()
    for n, line in _lines(attempts_path):
        try:
            attempt = parse_attempt(line.rstrip(b"\r\n"), clock)
        except InvalidAttempt as exc:
            agg.count(INVALID)
            print(f"{attempts_path}:{n}: attempt rejected: {exc.reason}: {printable(exc.detail)}", file=err)
            continue
        verdict, version, exact = assess(history, attempt)
        agg.count(verdict.outcome)
        if summary:
            if verdict.outcome == WOULD_BE_DENY:
                m = attempt.model
                agg.add_deny(
                    m.account_id, m.identity.type, m.identity.account_id, m.identity.iam_id, attempt.event_ms, m.action
                )
        elif verdict.emit:
            event = build_event(attempt, verdict, version, exact, clock)
            # Round-trip through Avro so the JSON is exactly what a downstream reader would decode.
            out.write(json.dumps(to_json_obj(codec.decode(codec.encode(event))), separators=(",", ":")) + "\n")
    return agg


def print_summary(agg: WouldBeDenies, out: IO[str], fmt: str) -> None:
    if fmt == "json":
        json.dump(agg.summary(), out, indent=2)
        out.write("\n")
        return
    out.write(format_table(["outcome", "attempts"], [[k, v] for k, v in agg.outcomes.items()]) + "\n\n")
    rows = agg.rows()
    out.write("Would-be denies (what switching to limited would block):\n")
    if not rows:
        out.write("  none\n")
        return
    headers = ["account", "identity_type", "external_account", "attempts", "identities", "first_seen", "last_seen"]
    table = [[r[k] for k in ("account_id", "identity_type", "external_account_id", "attempts", "identities",
                             "first_seen", "last_seen")] for r in rows]
    out.write(format_table(headers, table) + "\n")


def main(settings: str, attempts: str, summary: bool, fmt: str) -> int:
    try:
        agg = simulate(Path(settings), Path(attempts), sys.stdout, sys.stderr, summary=summary)
    except InputError as exc:
        print(f"access-eval simulate: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if summary:
        print_summary(agg, sys.stdout, fmt)
    return EXIT_OK
