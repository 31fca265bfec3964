"""`report`'s pass over the eval topic: by one reader, or by several reader processes in parallel.

One consumer's fetch and one core's decoding bound a single reader (~60,000 events/s on the
benchmark's machine). With `--readers N` the topic's partitions are split between N processes; each
reads its share up to the same end offsets (taken once, before they start) and counts it into its
own `WouldBeDenies`. For the fleet view each reader then builds its own accounts' fleet rows and
sends back only those (a few hundred bytes per account, never the counts: the report's process
holds no other reader's counts, and the rows are built in parallel); for one account's report it
sends back the counts (not its id tables), which are merged.

Why this is exact: the processor keys every eval event by its target account, so all of an
account's events, and every copy of one event (its id names its account), sit in one partition
and reach one reader, and a fleet row depends on its own account's counts only. When that does not
hold (partitions added to the topic later, another writer keying differently) some account is
counted by two readers; that is detected and the pass is done again by one reader, so the report is
never approximate. A reader that fails fails the report.
"""

from __future__ import annotations

import gc
import os
import pickle
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

from processor.codec.eval_fields import ReportFields
from processor.core.switch_report import Monitored, fleet_rows
from processor.core.would_be_denies import SeenIds, Window, WouldBeDenies
from processor.errors import OpsError
from processor.kafka.eval_reader import EvalReader, undecodable_summary

#: librdkafka's prefetch queue, capped at 1 MiB and fetched 256 KiB per partition (defaults 64 MiB
#: and 1 MiB, which would dominate a reader's memory: 94 -> 62 MB for a reader of 6 partitions, at
#: the same speed), and refilled 5 ms after the reader drained it, not after the default
#: `fetch.queue.backoff.ms` of 1 s: with that default a reader that decodes slower than the broker
#: delivers waits a second each time the queue fills (one reader: ~60,000 records/s; with 5 ms,
#: 270,000/s). Measured by bench/bench_report.py (bench/README.md, "Report").
READER_FAILED = 1
READER_LIMITS = {"queued.max.messages.kbytes": 1024, "max.partition.fetch.bytes": 262144, "fetch.queue.backoff.ms": 5}


@dataclass(frozen=True)
class FleetSpec:
    """What a reader needs to build its accounts' fleet rows itself."""

    monitored: Monitored
    max_additions: int
    cover_share: float


@dataclass
class FleetPart:
    """A fleet pass's result: the rows of the accounts it counted, and the times its events cover."""

    rows: list[dict[str, Any]]
    first_ms: int | None = None
    last_ms: int | None = None

    @staticmethod
    def of(agg: WouldBeDenies, fleet: FleetSpec) -> FleetPart:
        """The rows built from `agg`'s counts, emptying it as they are built."""
        firsts = [t.first_ms for t in agg.accounts.values() if t.first_ms is not None]
        lasts = [t.last_ms for t in agg.accounts.values() if t.last_ms is not None]
        agg.seen = agg.seen_identities = SeenIds(0)  # not needed for the rows: freed first
        assert agg.window is not None
        rows = fleet_rows(agg.accounts, agg.window, fleet.monitored, max_additions=fleet.max_additions,
                          cover_share=fleet.cover_share)
        return FleetPart(rows, min(firsts, default=None), max(lasts, default=None))

    @staticmethod
    def merged(parts: list[FleetPart]) -> FleetPart:
        firsts = [p.first_ms for p in parts if p.first_ms is not None]
        lasts = [p.last_ms for p in parts if p.last_ms is not None]
        return FleetPart([r for p in parts for r in p.rows], min(firsts, default=None), max(lasts, default=None))


@dataclass(frozen=True)
class PassSpec:
    """What one pass reads and counts (picklable: it is sent to the reader processes)."""

    props: dict[str, Any]
    topic: str
    partitions: list[int]
    start_ms: int
    window: Window
    accounts: frozenset[str] | None = None  # None: every account
    detail: bool = False
    key: str | None = None  # skip records keyed with another account, undecoded
    registry_url: str | None = None
    raw_props: dict[str, str] | None = None
    timeout_s: float = 15.0
    ends: dict[int, int] | None = None  # where every reader stops (None: the ends when it starts)
    fleet: FleetSpec | None = None  # the fleet view: each reader builds its accounts' rows


@dataclass
class PassResult:
    """The counts of a pass (or, for the fleet view, its rows) and what its readers could not decode."""

    agg: WouldBeDenies | None  # None for the fleet view: `fleet` instead
    decoded: int = 0
    undecodable: int = 0
    needs_registry: int = 0
    readers: int = 1
    notes: list[str] = field(default_factory=list)
    fleet: FleetPart | None = None

    @property
    def nothing_decodable(self) -> bool:
        return self.undecodable > 0 and self.decoded == 0

    def summary(self) -> str | None:
        return undecodable_summary(self.decoded, self.undecodable, self.needs_registry)


def default_readers(partitions: int) -> int:
    """One reader per core, at most one per partition."""
    return max(1, min(partitions, os.cpu_count() or 1))


def run_pass(spec: PassSpec, readers: int) -> PassResult:
    """The pass by `readers` processes (1: in this process), merged; exact (see the module doc)."""
    n = min(readers, len(spec.partitions))
    if n <= 1:
        return read_partitions(spec)
    if spec.ends is None:
        reader = EvalReader({**READER_LIMITS, **spec.props}, spec.topic, spec.partitions,
                            registry_url=None, raw_props=spec.raw_props)
        try:
            spec = replace(spec, ends=reader.end_offsets(spec.timeout_s))
        finally:
            reader.close()
    # The smallest share first: it is read by the report's own process, which also gets the others'.
    shares = [spec.partitions[i::n] for i in reversed(range(n))]
    parts = in_processes([replace(spec, partitions=share) for share in shares])
    shared = shared_accounts(parts)
    if shared:
        note = (f"{len(shared)} accounts have events in partitions read by different readers (partitions "
                f"added to {spec.topic} later?): read again by one reader, so the counts stay exact")
        print(f"access-eval: {note}", file=sys.stderr)
        result = read_partitions(spec)
        result.notes.append(note)
        return result
    merged = PassResult(None, sum(p.decoded for p in parts), sum(p.undecodable for p in parts),
                        sum(p.needs_registry for p in parts), readers=n)
    if spec.fleet is not None:
        merged.fleet = FleetPart.merged([p.fleet for p in parts if p.fleet is not None])
    else:
        merged.agg = WouldBeDenies(spec.window, accounts=spec.accounts, detail=spec.detail)
        merged.agg.merge([p.agg for p in parts if p.agg is not None])
    return merged


def shared_accounts(parts: list[PassResult]) -> set[str]:
    """Accounts counted by more than one reader (their rows, or their counts)."""
    seen: set[str] = set()
    shared: set[str] = set()
    for part in parts:
        if part.fleet is not None:
            mine: set[str] = {r["account_id"] for r in part.fleet.rows}
        else:
            assert part.agg is not None
            mine = set(part.agg.accounts)
        shared |= seen & mine
        seen |= mine
    return shared


def in_processes(specs: list[PassSpec], argv: list[str] | None = None) -> list[PassResult]:
    """The first spec read here, each other one by a reader process started with `argv` (default:
    `reader_main`): the spec pickled on its stdin, its result pickled on its stdout.

    Plain processes rather than `multiprocessing`: its spawn method starts a resource-tracker
    process too, and the report's own process would sit idle while holding its memory."""
    cmd = argv or [sys.executable, "-c", "from processor.tools.report_pass import reader_main; exit(reader_main())"]
    procs = [subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE) for _ in specs[1:]]
    outputs: list[object] = [None] * len(procs)
    threads = [threading.Thread(target=_collect, args=(p, s, outputs, i), daemon=True)
               for i, (p, s) in enumerate(zip(procs, specs[1:], strict=True))]
    with no_cyclic_gc():  # the readers' rows or counts are unpickled here: many objects, no cycles
        for t in threads:
            t.start()
        try:
            mine = read_partitions(specs[0])
        except BaseException:
            for proc in procs:
                proc.kill()
            raise
        finally:
            for t in threads:
                t.join()
    return [mine] + [_result(p, out, s) for p, out, s in zip(procs, outputs, specs[1:], strict=True)]


def _collect(proc: subprocess.Popen[bytes], spec: PassSpec, outputs: list[object], i: int) -> None:
    """In a thread: the spec sent, then the reader's answer unpickled as it streams in (no copy of
    it as bytes), so the reader exits as soon as it has written it."""
    assert proc.stdin is not None and proc.stdout is not None
    try:
        with proc.stdin:
            pickle.dump(spec, proc.stdin)
        outputs[i] = pickle.load(proc.stdout)  # our own reader's output
    except (OSError, EOFError, pickle.UnpicklingError):
        outputs[i] = None  # it died: `_result` says so with its exit status
    finally:
        proc.stdout.close()
        proc.wait()


def _result(proc: subprocess.Popen[bytes], out: object, spec: PassSpec) -> PassResult:
    if proc.returncode == 0 and isinstance(out, PassResult):
        return out
    if proc.returncode == READER_FAILED and isinstance(out, str):
        raise OpsError(out)
    raise OpsError(
        f"a report reader process (partitions {spec.partitions} of {spec.topic}) died before it finished "
        f"(exit status {proc.returncode}): no report was written"
    )


def reader_main() -> int:
    """A reader process: a `PassSpec` on stdin; its counts (or its error, exit 1) on stdout."""
    spec: PassSpec = pickle.load(sys.stdin.buffer)  # from the report that started it
    try:
        result = read_partitions(spec)
    except Exception as exc:  # the report says it; one line, naming the reader
        pickle.dump(f"report reader of partitions {spec.partitions} failed: {exc}", sys.stdout.buffer)
        return READER_FAILED
    pickle.dump(result, sys.stdout.buffer, protocol=pickle.HIGHEST_PROTOCOL)  # streamed: no copy as bytes
    sys.stdout.buffer.flush()
    return 0


def read_partitions(spec: PassSpec) -> PassResult:
    """One reader over `spec.partitions`, in this process: its counts without their id tables (what
    a merge needs), or for the fleet view its accounts' rows."""
    reader = EvalReader({**READER_LIMITS, **spec.props}, spec.topic, spec.partitions,
                        registry_url=spec.registry_url, raw_props=spec.raw_props)
    agg = WouldBeDenies(spec.window, accounts=spec.accounts, detail=spec.detail)
    with no_cyclic_gc():
        try:
            reader.start(spec.start_ms, timeout_s=spec.timeout_s, ends=spec.ends)
            count(reader, agg, spec.key)
        finally:
            reader.close()
        result = PassResult(None, reader.decoded, reader.undecodable, reader.needs_registry)
        if spec.fleet is not None:
            result.fleet = FleetPart.of(agg, spec.fleet)
        else:
            result.agg = agg.without_id_tables()
    return result


@contextmanager
def no_cyclic_gc() -> Iterator[None]:
    """The cyclic GC off (and restored after): a pass allocates millions of short-lived objects and
    no cycles, so the collector would only rescan the growing counts again and again."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def count(reader: EvalReader, agg: WouldBeDenies, key: str | None) -> None:
    """Every record to its end offset into `agg`: the report's fields straight from the bytes
    (`ReportFields.flat`), the full decode (and its error accounting) for anything else."""
    flat = ReportFields(reader.codec).flat
    add = agg.add_fields
    for m in reader.records(stop_at_end=True, key=key):
        value = m.value()
        fields = flat(value) if value is not None else None
        if fields is not None:
            reader.decoded += 1
            add(*fields)
            continue
        event = reader.decode(m)
        if event is not None:
            agg.add_event(event)
