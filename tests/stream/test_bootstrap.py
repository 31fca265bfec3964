"""Bootstrap before serving (SPEC §5/§8): the settings topic is read to the end offsets it had at start-up
before /readyz turns 200 and before the first attempt is evaluated; several partitions and a
transactionally written topic (aborted records, trailing markers) included."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from confluent_kafka import Producer

from tests.stream.test_pipeline import T0, attempt, doc
from tests.support.kafka_harness import Topics, wait_until
from tests.support.processor_harness import produce, read_evals, settings_record, start_processor, wait_all_committed

pytestmark = pytest.mark.kafka

BIG = 300_000


def test_big_settings_topic_readyz_503_until_bootstrapped_and_last_record_governs(topics: Topics,
                                                                                   tmp_path: Path) -> None:
    topics.create(partitions=1)
    # Small records, fast: bootstrap takes seconds. The governing record comes last.
    body = b'{"account_id":"f%06d","external_account_identity_interaction":{"identity_types":{}}}'
    filler = ((f"f{i:06d}".encode(), body % i) for i in range(BIG))
    produce(topics.bootstrap, topics.settings, filler, bulk=True)
    produce(topics.bootstrap, topics.settings, [settings_record(doc("acct-a", "limited", []))])
    produce(topics.bootstrap, topics.attempts, [attempt(1, "acct-a", "ext-1", T0)])
    p = start_processor(topics, tmp_path)
    try:
        statuses: list[tuple[int, float]] = []  # (/readyz status, settings records applied) while starting

        def ready() -> bool:
            if p.proc.poll() is not None:
                raise AssertionError(f"processor exited {p.proc.returncode}:\n{p.log()}")
            status = p.get("/readyz")[0]
            if status:
                applied = p.metric("access_eval_settings_records_total")
                statuses.append((status, applied))
            return status == 200

        wait_until(ready, 120, "/readyz 200", interval=0.05)
        saw_503 = [a for s, a in statuses if s == 503]
        first_200 = next(a for s, a in statuses if s == 200)
        assert saw_503, f"/readyz was never seen 503 while bootstrapping {BIG + 1} records: {statuses[:5]}"
        assert first_200 >= BIG + 1, (
            f"/readyz turned 200 after only {first_200:.0f} of {BIG + 1} settings records were applied")
        wait_all_committed(topics.bootstrap, topics.group, topics.attempts)
    finally:
        assert p.terminate() == 0, p.log()
    (_key, event), = read_evals(topics.bootstrap, topics.evals)
    assert event["responseData"]["state"] == "limited" and event["responseData"]["isEnforced"] is True


def test_settings_topic_with_several_partitions_is_read_whole(topics: Topics, tmp_path: Path) -> None:
    topics.create(partitions=2, settings_partitions=4)
    accounts = [f"acct-{i}" for i in range(40)]
    # Per account: monitor first, limited last, in whatever partition the key hashes to.
    produce(topics.bootstrap, topics.settings, [settings_record(doc(a, "monitor", [])) for a in accounts])
    produce(topics.bootstrap, topics.settings, [settings_record(doc(a, "limited", [])) for a in accounts])
    now = int(time.time() * 1000)  # after every settings record's timestamp (their effective time)
    produce(topics.bootstrap, topics.attempts, [attempt(i, a, "ext-1", now) for i, a in enumerate(accounts)])
    p = start_processor(topics, tmp_path)
    try:
        p.wait_ready()
        assert p.metric("access_eval_settings_records_total") == 2 * len(accounts)
        wait_all_committed(topics.bootstrap, topics.group, topics.attempts)
    finally:
        assert p.terminate() == 0, p.log()
    events = read_evals(topics.bootstrap, topics.evals)
    assert sorted(e["target"]["accountId"] for _, e in events) == sorted(accounts)
    assert {e["responseData"]["state"] for _, e in events} == {"limited"}


def test_transactional_settings_topic_with_aborted_records_and_trailing_markers(topics: Topics,
                                                                               tmp_path: Path) -> None:
    topics.create(partitions=1)
    tp = Producer({"bootstrap.servers": topics.bootstrap, "transactional.id": f"{topics.group}-settings"})
    tp.init_transactions(30)

    def txn(records: list[tuple[bytes, bytes]], commit: bool) -> None:
        tp.begin_transaction()
        for k, v in records:
            tp.produce(topics.settings, v, k)
        tp.flush(30)
        if commit:
            tp.commit_transaction(30)
        else:
            tp.abort_transaction(30)

    txn([settings_record(doc("acct-a", "monitor", [])), settings_record(doc("acct-b", "monitor", []))], True)
    txn([settings_record(doc("acct-a", "limited", [])), settings_record(doc("acct-c", "limited", []))], False)
    txn([settings_record(doc("acct-b", "limited", []))], True)
    txn([settings_record(doc("acct-b", "enabled", []))], False)  # the topic ends with an abort marker
    now = int(time.time() * 1000)  # after every settings record's timestamp (their effective time)
    produce(topics.bootstrap, topics.attempts, [attempt(i, a, "ext-1", now) for i, a in
                                                enumerate(["acct-a", "acct-b", "acct-c"])])
    started = time.monotonic()
    p = start_processor(topics, tmp_path)
    try:
        p.wait_ready(30)  # a bootstrap waiting for offsets that only markers occupy would never get here
        assert time.monotonic() - started < 30
        assert p.metric("access_eval_settings_records_total") == 3, "only the 3 committed records are applied"
        wait_all_committed(topics.bootstrap, topics.group, topics.attempts)
    finally:
        assert p.terminate() == 0, p.log()
    events = {e["target"]["accountId"]: e["responseData"] for _, e in read_evals(topics.bootstrap, topics.evals)}
    assert events["acct-a"]["state"] == "monitor", "the aborted 'limited' record for acct-a was applied"
    assert events["acct-b"]["state"] == "limited", "the committed record after an aborted transaction was missed"
    assert "acct-c" not in events, "acct-c only has an aborted record: it has no settings (unrestricted)"
