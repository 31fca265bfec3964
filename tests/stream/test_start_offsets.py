"""Issue 24 (the 60-minute soak of seed 20261208) on a real broker: where a newly assigned partition starts.

In that soak, instance p1 was SIGKILLed with a transaction open whose offsets for input partition 5
(29,177) were still pending; p2 was assigned partition 5 four seconds later, started it from offset 0
and committed 3,500 (read from the dump of `__consumer_offsets`), so 29,176 attempts were evaluated a
second time (6,023 duplicated eval events). The loop now reads the committed offsets itself at
assignment and assigns them explicitly (`Transaction.start_offsets`); the fails-before-the-fix test of
that rule is the explorer's item `8-assignment-read-resets` (tests/stream/test_eos_explorer.py). This
test runs the same situation on the real client and broker: a group member dies inside a transaction
that holds offsets for the partition; the next processor must start at the committed offset, waiting
for the pending transaction to end, and evaluate nothing twice."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from tests.stream.test_pipeline import attempt, doc
from tests.support.kafka_harness import Topics
from tests.support.processor_harness import process_all, produce, read_evals, settings_record

#: A group member that opens a transaction holding offsets for partition 0, then dies (SIGKILL) in it.
ZOMBIE = r"""
import os, signal, sys, time
from confluent_kafka import Consumer, Producer, TopicPartition
bootstrap, group, attempts, evals, offset = sys.argv[1:6]
c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "session.timeout.ms": 6000,
              "enable.auto.commit": False, "isolation.level": "read_committed",
              "partition.assignment.strategy": "cooperative-sticky"})
c.subscribe([attempts])
deadline = time.monotonic() + 60
while not c.assignment() and time.monotonic() < deadline:
    c.poll(0.2)
assert c.assignment(), "the zombie got no partition"
p = Producer({"bootstrap.servers": bootstrap, "transactional.id": group + "-zombie", "transaction.timeout.ms": 30000})
p.init_transactions(30)
p.begin_transaction()
p.produce(evals, b"never committed")
p.send_offsets_to_transaction([TopicPartition(attempts, 0, int(offset))], c.consumer_group_metadata(), 30)
p.flush(10)
print("pending", flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_partition_whose_owner_died_in_a_transaction_starts_at_its_committed_offset(
        topics: Topics, tmp_path: Path) -> None:
    topics.create(partitions=1)
    produce(topics.bootstrap, topics.settings, [settings_record(doc("a", "monitor", []))])
    now = int(time.time() * 1000)
    process_all(topics, tmp_path, records=[attempt(i, "a", "b", now) for i in range(40)])
    zombie = subprocess.run([sys.executable, "-c", ZOMBIE, topics.bootstrap, topics.group, topics.attempts,
                             topics.evals, "40"], capture_output=True, text=True, timeout=120)
    assert "pending" in zombie.stdout and zombie.returncode == -9, zombie.stderr[-2000:]
    second = process_all(topics, tmp_path, records=[attempt(i, "a", "b", now) for i in range(40, 50)])

    ids = Counter(event["attemptId"] for _, event in read_evals(topics.bootstrap, topics.evals))
    assert ids == Counter(f"att-{i}" for i in range(50)), f"duplicated: {[i for i, n in ids.items() if n > 1]}"
    lines = [json.loads(line) for line in second.log_path.read_text().splitlines() if line.startswith("{")]
    starts = [line["starts"] for line in lines if line.get("msg") == "partitions assigned" and line.get("starts")]
    assert starts and starts[0] == {"0": 40}, f"assignments logged: {starts}\n{second.log()}"
    waits = [line for line in lines if line.get("msg") == "cannot read committed offsets; retrying"]
    assert waits, "the pending transaction's offsets were read at once: the test did not test the wait"


def test_sigusr1_writes_every_threads_stack_and_the_processor_goes_on(topics: Topics, tmp_path: Path) -> None:
    """The diagnosis of a frozen life (the third 60-minute soak of seed 20261208): SIGUSR1 makes `run`
    write each thread's stack, and the processor keeps serving and stops with 0. Ten times: the first
    dump, from a C signal handler, killed a CI run's processor with SIGSEGV on the first signal."""
    import signal

    from processor import stacks
    from tests.support.kafka_harness import wait_until
    from tests.support.processor_harness import start_processor

    topics.create(partitions=1)
    produce(topics.bootstrap, topics.settings, [settings_record(doc("a", "monitor", []))])
    proc = start_processor(topics, tmp_path)
    try:
        proc.wait_ready()
        for sent in range(1, 11):
            proc.proc.send_signal(signal.SIGUSR1)
            wait_until(lambda n=sent: proc.log_path.read_text(errors="replace").count(stacks.FOOTER) >= n
                       or proc.proc.poll() is not None, 20, "the stacks in the processor's output")
            assert proc.proc.poll() is None, proc.log()
        dump = proc.log_path.read_text(errors="replace").split(stacks.HEADER)[-1]
        assert "in _watch_blocked" in dump and ("in step" in dump or "in turn" in dump), dump
        assert "in _serve" in dump.split("Current thread", 1)[1], dump  # the answerer, with the GIL
        assert proc.ready()
    finally:
        assert proc.terminate() == 0, proc.log()
