"""`report --readers N`: the eval topic's partitions read by N processes, the counts merged.

The merge must give exactly what one reader gives: checked as a property (random events with copies,
keyed by account onto partitions, the partitions split between readers) against the independent
model of tests/test_report_model.py, then end to end on a real broker (the same JSON from 1 and 3
readers), when an account's events are spread over partitions read by different readers (the
report reads again with one reader and stays exact), and when a reader fails (the report fails,
nothing is printed).
"""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
import time
import zlib
from dataclasses import replace
from typing import Any

import pytest
from confluent_kafka import Producer
from hypothesis import given
from hypothesis import strategies as st

from processor.codec.avro import EvalCodec
from processor.core.switch_report import fleet_row, fleet_rows, rank_fleet
from processor.core.would_be_denies import Window, WouldBeDenies
from processor.errors import OpsError
from processor.tools import report_pass
from processor.tools.report_pass import FleetPart, FleetSpec, PassResult, PassSpec
from tests.core.test_report_model import ACCOUNTS, NOW, event_streams, model, model_norm
from tests.support.kafka_harness import Topics
from tests.support.tool_harness import DAY, HOUR, ae, make_event, ok, one_line_error, produce_events, sput

# --- the merge, as a property ---------------------------------------------------------------------


def split(stream: list[dict[str, Any]], partitions: int, readers: int) -> list[list[dict[str, Any]]]:
    """The events each reader gets: partition = a hash of the key (the target account as written),
    reader = partition modulo readers; each partition's order kept."""
    shares: list[list[dict[str, Any]]] = [[] for _ in range(readers)]
    for e in stream:
        p = zlib.crc32(e["target"]["accountId"].encode()) % partitions
        shares[p % readers].append(e)
    return shares


def merged(stream: list[dict[str, Any]], since: int, partitions: int, readers: int) -> WouldBeDenies:
    window = Window(since, NOW, "")
    parts = []
    for share in split(stream, partitions, readers):
        part = WouldBeDenies(window, accounts=set(ACCOUNTS))
        for e in share:
            part.add_event(e)
        parts.append(part.without_id_tables())
    assert WouldBeDenies.shared_accounts(parts) == set()
    out = WouldBeDenies(window, accounts=set(ACCOUNTS))
    out.merge(parts)
    return out


@given(event_streams(), st.integers(1, 6), st.integers(2, 4))
def test_counts_merged_from_readers_equal_the_model_and_one_reader(
        data: tuple[list[dict[str, Any]], int], partitions: int, readers: int) -> None:
    # The model reads accounts normalised; keys are written as the processor writes them (normalised).
    stream = [{**e, "target": {**e["target"], "accountId": model_norm(e["target"]["accountId"])}} for e in data[0]]
    # and events no verdict produces (another writer's): counted by no outcome, only as foreign
    stream += [{**e, "id": f"foreign-{i}", "responseData": {"state": "enabled", "decision": "Deny"}}
               for i, e in enumerate(stream[::4])]
    since = data[1]
    window = Window(since, NOW, "")
    one = WouldBeDenies(window, accounts=set(ACCOUNTS))
    for e in stream:
        one.add_event(e)
    many = merged(stream, since, partitions, readers)
    assert many.outcomes == one.outcomes and many.foreign == one.foreign
    for acct in ACCOUNTS:
        want = model(stream, since, acct, {})
        row = fleet_row(acct, many.tally(acct), window, {}, ["user"], max_additions=2, cover_share=0.8)
        assert row == fleet_row(acct, one.tally(acct), window, {}, ["user"], max_additions=2, cover_share=0.8)
        assert row["would_be_denies"] == want["would_be_denies"]
        assert row["duplicate_events"] == want["duplicates"]
        assert row["identities"] == want["identities"]
        assert row["external_accounts"] == len(want["externals"])
        assert row["readiness"]["class"] == want["class"]


@given(event_streams(), st.integers(1, 6), st.integers(2, 4))
def test_fleet_rows_built_by_each_reader_equal_the_rows_of_one_reader_and_the_model(
        data: tuple[list[dict[str, Any]], int], partitions: int, readers: int) -> None:
    """What `--all-accounts` does with N readers: each builds the rows of the accounts it counted
    (`FleetPart.of`), the report adds a row of no counts for each monitored account none counted."""
    stream = [{**e, "target": {**e["target"], "accountId": model_norm(e["target"]["accountId"])}} for e in data[0]]
    since = data[1]
    window = Window(since, NOW, "")
    monitored: dict[str, tuple[list[str], Any]] = {a: (["user"], {}) for a in (*ACCOUNTS, "acct-quiet")}
    spec = FleetSpec(monitored, 2, 0.8)
    parts = []
    for share in split(stream, partitions, readers):
        part = WouldBeDenies(window, accounts=set(monitored))
        for e in share:
            part.add_event(e)
        parts.append(FleetPart.of(part, spec))
        assert part.accounts == {}  # every tally turned into its row, then dropped
    got = FleetPart.merged(parts)
    counted = {r["account_id"] for r in got.rows}
    assert len(counted) == len(got.rows)  # no account counted by two readers
    rows = got.rows + fleet_rows({}, window, {a: v for a, v in monitored.items() if a not in counted},
                                 max_additions=2, cover_share=0.8, empty=True)
    one = WouldBeDenies(window, accounts=set(monitored))
    for e in stream:
        one.add_event(e)
    want_rows = [fleet_row(a, one.tally(a), window, {}, ["user"], max_additions=2, cover_share=0.8)
                 for a in monitored]
    assert rank_fleet(rows) == rank_fleet(want_rows)
    kept = [e for e in {e["id"]: e for e in stream}.values() if e["eventTime"] >= since]
    times = [e["eventTime"] for e in kept if e["responseData"]["state"] in ("monitor", "limited")]
    assert (got.first_ms, got.last_ms) == ((min(times), max(times)) if times else (None, None))
    by_acct = {r["account_id"]: r for r in rows}
    for acct in monitored:
        want = model(stream, since, acct, {})
        assert by_acct[acct]["would_be_denies"] == want["would_be_denies"]
        assert by_acct[acct]["readiness"]["class"] == want["class"]


def test_an_account_counted_by_two_readers_is_detected_and_never_merged() -> None:
    window = Window(NOW - DAY, NOW, "")
    a, b = WouldBeDenies(window), WouldBeDenies(window)
    e = {"id": "x", "eventTime": NOW - HOUR, "target": {"accountId": "acct-a", "action": "r"},
         "initiator": {"id": "i", "typeURI": "user", "authnAccountId": "ext"},
         "responseData": {"state": "monitor", "decision": "Deny"}}
    a.add_event(e)
    b.add_event(e)  # the same event, read by a second reader: one reader would count it once
    assert WouldBeDenies.shared_accounts([a, b]) == {"acct-a"}
    with pytest.raises(ValueError, match="two readers"):
        WouldBeDenies(window).merge([a, b])


# --- reader processes -----------------------------------------------------------------------------


def two_shares(topics: Topics, **child_props: str) -> list[PassSpec]:
    """Partition 0 read by the report's process, partition 1 by a reader process."""
    topics.create(partitions=2, only=[topics.evals])
    p = Producer({"bootstrap.servers": topics.bootstrap})
    for partition in (0, 1):  # one event each: both partitions have a leader that answers
        p.produce(topics.evals, EvalCodec().encode(make_event(partition, "a", "x", "user", "i", "monitor", "Deny",
                                                              NOW)), b"a", partition=partition)
    assert p.flush(30) == 0
    window = Window(NOW - DAY, NOW, "")
    props = {"bootstrap.servers": topics.bootstrap}
    return [PassSpec(props, topics.evals, [0], 0, window, ends={0: 1, 1: 1}),
            PassSpec({**props, **child_props}, topics.evals, [1], 0, window, ends={0: 1, 1: 1})]


def test_a_reader_process_that_dies_fails_the_pass_with_a_clear_error(topics: Topics) -> None:
    with pytest.raises(OpsError, match=r"reader process \(partitions \[1\] of .*\) died .*exit status 9.*no report"):
        report_pass.in_processes(two_shares(topics), argv=[sys.executable, "-c", "import os; os._exit(9)"])


def test_a_reader_process_that_fails_names_its_partitions_and_the_error(topics: Topics) -> None:
    with pytest.raises(OpsError, match=r"report reader of partitions \[1\] failed: .*no.such.property"):
        report_pass.in_processes(two_shares(topics, **{"no.such.property": "x"}))


class RecordingUnpickler(pickle.Unpickler):
    """Unpickles, noting every class the data names."""

    def __init__(self, data: bytes) -> None:
        import io

        super().__init__(io.BytesIO(data))
        self.names: set[str] = set()

    def find_class(self, module: str, name: str) -> Any:
        self.names.add(f"{module}.{name}")
        return super().find_class(module, name)


def test_a_fleet_reader_sends_back_its_accounts_rows_never_their_counts(topics: Topics) -> None:
    specs = two_shares(topics)
    fleet = FleetSpec({"a": (["user"], {}), "b": (["user"], {})}, 2, 0.8)
    spec = replace(specs[1], accounts=frozenset(fleet.monitored), fleet=fleet)
    proc = subprocess.run([sys.executable, "-c", "from processor.tools.report_pass import reader_main; "
                           "exit(reader_main())"], input=pickle.dumps(spec), capture_output=True, timeout=120,
                          check=False)
    assert proc.returncode == 0, proc.stderr.decode()
    reading = RecordingUnpickler(proc.stdout)
    got = reading.load()
    # What crosses to the report's process: the result and its rows (plain dicts, lists, numbers and
    # strings); no WouldBeDenies, AccountTally or id table.
    assert reading.names == {"processor.tools.report_pass.PassResult", "processor.tools.report_pass.FleetPart"}
    assert isinstance(got, PassResult) and got.agg is None and got.fleet is not None
    assert [(r["account_id"], r["would_be_denies"], r["identities"]) for r in got.fleet.rows] == [("a", 1, 1)]
    assert got.fleet.first_ms == got.fleet.last_ms == NOW
    # Both shares through the report's own path: account "a" is in both partitions, so it is read
    # again by one reader (both its events, counted once each), and the result is still rows.
    both = report_pass.run_pass(replace(specs[0], partitions=[0, 1], accounts=frozenset(fleet.monitored),
                                        fleet=fleet), readers=2)
    assert both.agg is None and both.fleet is not None and any("read again" in n for n in both.notes)
    assert [(r["account_id"], r["would_be_denies"]) for r in both.fleet.rows] == [("a", 2)]


# --- end to end, on a real broker -----------------------------------------------------------------


def fleet_events(now: int) -> list[dict[str, Any]]:
    """Six monitor accounts, partners with repeated attempts, one-off callers, permits and copies."""
    events, n = [], 0
    for a in range(6):
        for x in range(a * 3):  # account 0: no would-be deny (ready now)
            for k in range(1 + (x % 3)):
                n += 1
                decision = "Permit" if n % 7 == 0 else "Deny"
                events.append(make_event(n, f"acct-{a}", f"ext-{a}-{x}", ("user", "service_id")[k % 2],
                                         f"iam-{x}-{k % 2}", "monitor", decision, now - (n % 40) * HOUR))
        n += 1
        events.append(make_event(n, f"acct-{a}", "partner", "user", "p", "monitor", "Permit", now - HOUR))
    return events


def report_json(topics: Topics, *args: str) -> dict[str, Any]:
    got = json.loads(ok(ae("report", "--bootstrap-servers", topics.bootstrap, "--eval-topic", topics.evals,
                           "--settings-topic", topics.settings, "--format", "json", *args)))
    for moving in ("window", "series_start", "series"):  # "now" differs between two runs
        got.pop(moving, None)
    return got


def test_parallel_readers_give_the_same_report_as_one_reader(topics: Topics) -> None:
    topics.create(partitions=4, only=[topics.evals, topics.settings])
    for a in range(7):  # acct-6: in monitor, no event at all (its row is built by the report's process)
        ok(sput(topics, f"acct-{a}", "--identity-type", "user", "--state", "monitor"))
    now = int(time.time() * 1000)
    events = fleet_events(now)
    produce_events(topics.bootstrap, topics.evals, events)
    produce_events(topics.bootstrap, topics.evals, events[::5])  # copies: each counted once
    one = report_json(topics, "--all-accounts", "--readers", "1")
    assert one["would_be_denies"] > 0 and one["duplicate_events"] == len(events[::5])
    assert [r["readiness"]["class"] for r in one["accounts"] if r["account_id"] == "acct-6"] == ["no_evidence"]
    assert report_json(topics, "--all-accounts", "--readers", "3") == one
    assert report_json(topics, "--all-accounts", "--readers", "2") == one
    assert report_json(topics, "--all-accounts") == one  # default: one per core
    for acct in ("acct-0", "acct-4"):
        assert report_json(topics, "--account", acct, "--readers", "3") == report_json(topics, "--account", acct,
                                                                                       "--readers", "1")


def test_an_account_spread_over_partitions_is_read_again_by_one_reader(topics: Topics) -> None:
    topics.create(partitions=2, only=[topics.evals, topics.settings])
    ok(sput(topics, "acct-s", "--identity-type", "user", "--state", "monitor"))
    now = int(time.time() * 1000)
    codec = EvalCodec()
    p = Producer({"bootstrap.servers": topics.bootstrap})
    # As after partitions were added: the same account (and a copy of one event) in both partitions.
    events = [make_event(i, "acct-s", f"ext-{i % 2}", "user", f"iam-{i}", "monitor", "Deny", now - HOUR)
              for i in range(6)]
    for i, e in enumerate([*events, events[1]]):  # the copy lands in the other partition
        p.produce(topics.evals, codec.encode(e), b"acct-s", partition=i % 2)
    assert p.flush(30) == 0
    one = report_json(topics, "--all-accounts", "--readers", "1")
    two = report_json(topics, "--all-accounts", "--readers", "2")
    assert one["would_be_denies"] == 6 and one["duplicate_events"] == 1
    assert [w for w in two.pop("warnings") if "read again by one reader" in w]
    one.pop("warnings")
    assert two == one


def test_readers_flag_is_checked_before_kafka() -> None:
    one_line_error(ae("report", "--bootstrap-servers", "127.0.0.1:1", "--all-accounts", "--readers", "-1"), 2,
                   "--readers")


_ = DAY, pytest  # fixtures come from conftest.py
