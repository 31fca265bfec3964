"""Reliability under faults (SPEC §7 bad input, §8 delivery), against the real broker.

Every test ends with the same check (fault_harness.check_exactly_once): a read_committed reader
finds exactly one eval event per expected attempt, and exactly one dead letter per invalid attempt
(by source partition/offset). What is expected comes from the contract's model (tests/support/spec_model.py,
no processor code): which attempts get an event, and each event's decision, settings version,
echoed attempt fields and key; so a bug in the evaluation core fails these tests too. Figures go
to stdout and to $ACCESS_EVAL_FAULT_REPORT (docs/guarantees.md quotes them).

Knobs (environment): ACCESS_EVAL_FAULT_ATTEMPTS (crash loop size, default 200000),
ACCESS_EVAL_FAULT_KILLS (default 12), ACCESS_EVAL_FAULT_SEED (random kill timing; printed).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import random
import re
import signal
import time
from collections import Counter
from pathlib import Path

import pytest

from processor.stacks import FOOTER
from tests.support.fault_harness import (
    OwnBroker,
    aborted_records,
    check_exactly_once,
    expect_workload,
    problem_lines,
    produce_tracked,
    record_figures,
    run_to_exit,
    stacks,
)
from tests.support.fault_inputs import (
    FAST_GROUP,
    SASL_USERS,
    SEED,
    pending_work,
    publish_settings,
    workload_inputs,
)
from tests.support.kafka_harness import Topics, free_port, wait_until
from tests.support.processor_harness import (
    RunningProcessor,
    start_processor,
    wait_all_committed,
)

pytestmark = [pytest.mark.kafka, pytest.mark.faults]


# --------------------------------------------------------------------------------------------------
# 1. Crash loop


def _kill_one_life(topics: Topics, tmp_path: Path, rng: random.Random, k: int, kills: int,
                   kill_log: list[str]) -> int | None:
    """Life k + 1 of the crash loop, ended by SIGKILL; returns about how many attempts were left at
    the kill, or None when nothing was left to process."""
    # Each life does a random share of what is left, so every kill lands mid-stream whatever the
    # machine's speed: right after the commit that crossed the share, plus 0-30 ms, i.e. inside
    # the next transaction while it is being filled.
    # Small batches: commits every <= 2000 attempts (or 50 ms), so a life stops close to its share.
    p = start_processor(topics, tmp_path, "--batch-size", "200", env=FAST_GROUP)
    try:
        p.wait_ready(90)  # ready: init_transactions fenced the previous life, its offsets are stable again
        pending = pending_work(topics.bootstrap, topics.group, topics.attempts)
        if not pending:
            kill_log.append(f"life {k + 1}: nothing left to process; no more kills")
            return None
        target = max(1, int(rng.uniform(0.3, 0.9) * pending / (kills - k + 1)))
        try:
            wait_until(lambda p=p, t=target: p.metric("access_eval_attempts_total") >= t
                       or p.proc.poll() is not None, 120, f"{target} attempts committed in life {k + 1}",
                       interval=0.002)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{stacks(p.proc.pid)}\n{p.log()}\n" + "\n".join(kill_log)) from None
        delay = rng.uniform(0, 0.03)
        time.sleep(delay)  # random kill timing, not a synchronisation wait
        done = p.metric("access_eval_attempts_total")
        assert p.proc.poll() is None, f"processor died on its own before kill {k + 1}:\n{p.log()}"
        p.kill()
        left = pending - int(done)
        kill_log.append(f"kill {k + 1}: {done:.0f} attempts committed +{delay * 1000:.0f} ms, ~{left} left")
        return left
    finally:
        p.kill()


def test_crash_loop_sigkill_exactly_once(topics: Topics, tmp_path: Path) -> None:
    """SIGKILL at random moments mid-stream (inside a transaction being filled), restart with the same
    transactional id each time (which fences the zombie): nothing lost, nothing duplicated."""
    n = int(os.environ.get("ACCESS_EVAL_FAULT_ATTEMPTS", "200000"))
    kills = int(os.environ.get("ACCESS_EVAL_FAULT_KILLS", "12"))
    rng = random.Random(SEED)
    started = time.monotonic()
    topics.create(partitions=6)
    _, settings, attempts = workload_inputs(seed=21, n=n)
    spec = expect_workload(publish_settings(topics.bootstrap, topics.settings, settings), attempts)
    expected, invalid = spec.events, spec.invalid

    coords = produce_tracked(topics.bootstrap, topics.attempts, [(key, v) for key, v, _ in attempts])
    kill_log: list[str] = []
    mid_stream = 0
    for k in range(kills):
        left = _kill_one_life(topics, tmp_path, rng, k, kills, kill_log)
        if left is None:
            break
        mid_stream += left > 0
    p = start_processor(topics, tmp_path, env=FAST_GROUP)
    try:
        p.wait_ready(90)
        wait_all_committed(topics.bootstrap, topics.group, topics.attempts, timeout=240)
        assert p.terminate() == 0, p.log()
    finally:
        p.kill()
    result = check_exactly_once(topics.bootstrap, topics.evals, topics.dlq, topics.attempts,
                                expected, {coords[i] for i in invalid})
    aborted = aborted_records(topics.bootstrap, topics.evals, topics.dlq, result)
    figures = dict(seed=SEED, attempts=n, kills=sum(line.startswith("kill") for line in kill_log),
                   kills_with_work_pending=mid_stream,
                   aborted_records_of_killed_transactions=aborted, events_checked=result.events_checked,
                   dead_letters_checked=result.dead_letters_checked, lost=result.lost,
                   duplicated=result.duplicated, mismatched=result.mismatched,
                   seconds=round(time.monotonic() - started, 1))
    record_figures("crash_loop", **figures)
    assert result.ok, result.explain() + "\n" + "\n".join(kill_log)
    assert result.events_checked == len(expected) and result.dead_letters_checked == len(invalid)
    assert mid_stream >= min(kills, 10), f"too few kills mid-stream (seed {SEED}; more attempts needed?):\n" + \
        "\n".join(kill_log)
    # Killed transactions really had records on the broker, which the restart aborted (fencing).
    assert aborted > 0, f"no kill landed inside a transaction with produced records (seed {SEED}):\n" + \
        "\n".join(kill_log)



# --------------------------------------------------------------------------------------------------
# 2. Broker restart


def test_broker_restart_mid_stream_recovers_by_itself(own: tuple[OwnBroker, Topics], tmp_path: Path) -> None:
    """Stop the broker while a stream is processed, restart it (same data dir, same port): readiness
    turns false during the outage and true after without any help, and the output is exactly-once."""
    broker, topics = own
    started = time.monotonic()
    topics.create(partitions=3)
    _, settings, attempts = workload_inputs(seed=31, n=60_000)
    spec = expect_workload(publish_settings(topics.bootstrap, topics.settings, settings), attempts)
    expected, invalid = spec.events, spec.invalid
    first, second = attempts[:40_000], attempts[40_000:]
    p = start_processor(topics, tmp_path, "--batch-size", "500", env=FAST_GROUP)
    try:
        p.wait_ready()
        coords = produce_tracked(topics.bootstrap, topics.attempts, [(k, v) for k, v, _ in first])
        wait_until(lambda: p.metric("access_eval_attempts_total") > 0, 30, "processing to start")
        done_before = p.metric("access_eval_attempts_total")
        outage = time.monotonic()
        broker.stop()
        body = wait_until(lambda: (st := p.get("/readyz"))[0] == 503 and st[1], 60, "/readyz to turn 503")
        reasons = json.loads(body)["reasons"]
        assert p.proc.poll() is None, f"the processor must survive the outage:\n{p.log()}"
        broker.start()
        try:
            wait_until(p.ready, 120, "/readyz to turn 200 again after the broker came back", interval=0.2)
        except AssertionError as exc:  # what it waits on, for the next occurrence (a CI run saw one)
            p.proc.send_signal(signal.SIGUSR1)  # every thread's stack, into its log
            with contextlib.suppress(AssertionError):
                wait_until(lambda: FOOTER in p.log(), 10, "the stacks")
            raise AssertionError(f"{exc}\n/readyz: {p.get('/readyz')}\n{p.log()}") from None
        recovered_s = time.monotonic() - outage
        coords += produce_tracked(topics.bootstrap, topics.attempts, [(k, v) for k, v, _ in second])
        try:
            wait_all_committed(topics.bootstrap, topics.group, topics.attempts, timeout=120)
        except AssertionError:
            raise AssertionError(f"stuck after the outage:\n{stacks(p.proc.pid)}\n{p.log()}") from None
        assert p.proc.poll() is None
        # SPEC §8: counters move only after commit. Whatever the outage aborted or retried, the counters
        # equal the committed output (checked exactly-once below) outcome by outcome.
        want = Counter(spec.outcomes)
        for o in ("same_account", "unrestricted", "permit", "would_be_deny", "enforced_deny", "invalid"):
            wait_until(lambda o=o: p.metric("access_eval_attempts_total", outcome=o) == want[o], 10,
                       f"counter {o} to equal the committed {want[o]}")
        aborted = p.metric("access_eval_transactions_total", result="aborted")
        assert p.terminate() == 0, p.log()
    finally:
        p.kill()
    result = check_exactly_once(topics.bootstrap, topics.evals, topics.dlq, topics.attempts,
                                expected, {coords[i] for i in invalid})
    record_figures("broker_restart", aborted_transactions=aborted, attempts=len(attempts),
                   processed_before_outage=done_before,
                   readyz_reasons=reasons, outage_to_ready_s=round(recovered_s, 1),
                   events_checked=result.events_checked, dead_letters_checked=result.dead_letters_checked,
                   lost=result.lost, duplicated=result.duplicated, seconds=round(time.monotonic() - started, 1))
    # The outage hits the stream mid-way by construction (the second half is published only after the
    # restart), whatever the relative speed of processor and broker: no wall-clock race to assert on.
    assert result.ok, result.explain()
    assert result.events_checked == len(expected) and result.dead_letters_checked == len(invalid)


# --------------------------------------------------------------------------------------------------
# 3. Rebalance storm


def test_rebalance_storm_three_instances_exactly_once(topics: Topics, tmp_path: Path) -> None:
    """Three instances in one group; one after another is stopped (SIGTERM or SIGKILL, mixed) and
    restarted while the stream flows, so rebalances overlap: exactly-once, complete, clean exits."""
    rounds = int(os.environ.get("ACCESS_EVAL_FAULT_STORM_ROUNDS", "10"))
    rng = random.Random(SEED + 3)
    started = time.monotonic()
    topics.create(partitions=6)
    _, settings, attempts = workload_inputs(seed=41, n=60_000)
    spec = expect_workload(publish_settings(topics.bootstrap, topics.settings, settings), attempts)
    expected, invalid = spec.events, spec.invalid
    chunks = [attempts[i * len(attempts) // (rounds + 1):(i + 1) * len(attempts) // (rounds + 1)]
              for i in range(rounds + 1)]

    def launch(name: str) -> RunningProcessor:
        return start_processor(topics, tmp_path, "--batch-size", "500", "--shutdown-timeout-s", "15",
                               instance=name, env=FAST_GROUP)

    procs = {name: launch(name) for name in "abc"}
    coords: list[tuple[int, int]] = []
    actions: list[str] = []
    sigterm_exits: list[int] = []
    try:
        for p in procs.values():
            p.wait_ready(90)
        for k in range(rounds):
            coords += produce_tracked(topics.bootstrap, topics.attempts, [(key, v) for key, v, _ in chunks[k]])
            name = rng.choice("abc")
            victim = procs[name]
            if rng.random() < 0.5:
                victim.kill()
                how = "SIGKILL"
            else:
                sigterm_exits.append(victim.terminate(timeout=30))
                how = "SIGTERM"
            actions.append(f"{how} {name}, right after publishing {len(chunks[k])} attempts")
            procs[name] = launch(name)
            time.sleep(rng.uniform(0.3, 3.0))  # random spacing: the next stop may land mid-rebalance
        coords += produce_tracked(topics.bootstrap, topics.attempts, [(key, v) for key, v, _ in chunks[-1]])
        for p in procs.values():
            p.wait_ready(90)
        wait_all_committed(topics.bootstrap, topics.group, topics.attempts, timeout=180)
        final_exits = [p.terminate(timeout=30) for p in procs.values()]
    finally:
        for p in procs.values():
            p.kill()
    result = check_exactly_once(topics.bootstrap, topics.evals, topics.dlq, topics.attempts,
                                expected, {coords[i] for i in invalid})
    record_figures("rebalance_storm", attempts=len(attempts), instances=3, stops=rounds,
                   sigkills=sum("SIGKILL" in a for a in actions), sigterms=len(sigterm_exits),
                   events_checked=result.events_checked, dead_letters_checked=result.dead_letters_checked,
                   lost=result.lost, duplicated=result.duplicated, seconds=round(time.monotonic() - started, 1))
    assert result.ok, result.explain() + "\n" + "\n".join(actions)
    assert result.events_checked == len(expected) and result.dead_letters_checked == len(invalid)
    assert sigterm_exits + final_exits == [0] * (len(sigterm_exits) + len(final_exits)), \
        f"SIGTERM must exit 0: {sigterm_exits} {final_exits}\n" + "\n".join(actions)


# --------------------------------------------------------------------------------------------------
# 6. Misconfiguration


def test_unreachable_bootstrap_with_startup_timeout_exits_2_naming_the_flag(tmp_path: Path) -> None:
    nowhere = Topics.for_test(f"127.0.0.1:{free_port()}", "unreachable")
    p = start_processor(nowhere, tmp_path, "--startup-timeout-s", "3")
    started = time.monotonic()
    rc, lines = run_to_exit(p, 30)
    took = time.monotonic() - started
    errors = problem_lines(lines)
    assert rc == 2, "\n".join(lines)
    assert len(errors) == 1 and "--bootstrap-servers" in errors[0], errors
    assert not any("Traceback" in line for line in lines)
    assert took < 15, f"exit took {took:.1f} s"


def test_unreachable_bootstrap_without_timeout_stays_up_unready(tmp_path: Path) -> None:
    nowhere = Topics.for_test(f"127.0.0.1:{free_port()}", "unreachable")
    p = start_processor(nowhere, tmp_path, "--shutdown-timeout-s", "5")
    try:
        body = wait_until(lambda: (r := p.get("/readyz"))[0] == 503 and r[1], 30, "/readyz to answer 503")
        assert json.loads(body)["reasons"], body
        # Still retrying (with backoff) a while later, and still saying why it is not ready.
        wait_until(lambda: p.log_path.read_text().count("kafka not reachable yet") >= 3, 30, "repeated retry lines")
        assert p.proc.poll() is None and p.get("/readyz")[0] == 503
        assert p.get("/livez")[0] == 200, "an unreachable broker is no reason to restart the pod"
        started = time.monotonic()
        assert p.terminate(timeout=20) == 0, p.log()
        assert time.monotonic() - started < 10, "SIGTERM must end the wait for the broker promptly"
    finally:
        p.kill()


def test_missing_topics_exit_2_naming_topic_and_create_topics(topics: Topics, tmp_path: Path) -> None:
    topics.create(partitions=1, only=[topics.settings, topics.attempts])  # evals and dlq missing
    p = start_processor(topics, tmp_path)
    rc, lines = run_to_exit(p, 60)
    errors = problem_lines(lines)
    assert rc == 2, "\n".join(lines)
    assert len(errors) == 1, errors
    assert topics.evals in errors[0] and topics.dlq in errors[0] and "--create-topics" in errors[0], errors
    assert not any("Traceback" in line for line in lines)


def test_settings_topic_not_compacted_warns(topics: Topics, tmp_path: Path) -> None:
    topics.create(partitions=1, settings_config={"cleanup.policy": "delete"})
    p = start_processor(topics, tmp_path)
    try:
        p.wait_ready()
        warnings = [line for line in p.log().splitlines() if "not compacted" in line]
        assert len(warnings) == 1 and '"level": "warning"' in warnings[0] and topics.settings in warnings[0], warnings
        assert p.terminate() == 0, p.log()
    finally:
        p.kill()


def test_wrong_sasl_credentials_exit_2_naming_the_setting(own: tuple[OwnBroker, Topics], tmp_path: Path) -> None:
    broker, topics = own
    topics.create(partitions=1)  # through the PLAINTEXT listener; the processor uses the SASL one
    sasl = dataclasses.replace(topics, bootstrap=broker.sasl_bootstrap)
    env = {"ACCESS_EVAL_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "ACCESS_EVAL_KAFKA_SASL_MECHANISM": "PLAIN",
           "ACCESS_EVAL_KAFKA_SASL_USERNAME": "alice"}
    # Control: the right password works, so the failure below is the credentials, not the listener.
    # ssl.key.password: a secret librdkafka accepts (and ignores) on a non-SSL connection.
    key_password = f"key-pw-{SEED}"
    good = start_processor(sasl, tmp_path, "--log-level", "DEBUG", instance="good",
                           env={**env, "ACCESS_EVAL_KAFKA_SASL_PASSWORD": SASL_USERS["alice"],
                                "ACCESS_EVAL_KAFKA_SSL_KEY_PASSWORD": key_password})
    try:
        good.wait_ready()
        assert good.terminate() == 0, good.log()
    finally:
        good.kill()
    good_log = good.log_path.read_text(errors="replace")
    assert '"sasl.password": "***"' in good_log, "the start-up line should show the redacted config"
    for secret in (SASL_USERS["alice"], key_password):
        assert secret not in good_log, f"a successful run logged a secret ({secret[:3]}...)"
    bad = start_processor(sasl, tmp_path, instance="bad", env={**env, "ACCESS_EVAL_KAFKA_SASL_PASSWORD": "wrong"})
    try:
        rc, lines = run_to_exit(bad, 60)
    finally:
        bad.kill()
    errors = problem_lines(lines)
    # docs/contract.md §8: rejected credentials found at start-up are a misconfiguration: exactly 2
    # (3 is for authentication/authorization failures while running).
    assert rc == 2, "\n".join(lines)
    assert len(errors) == 1, errors
    assert "ACCESS_EVAL_KAFKA_SASL_USERNAME" in errors[0] and "sasl.password" in errors[0], errors
    assert "wrong" not in "\n".join(lines).replace("wrong_", ""), "the password must not be logged"
    assert not any("Traceback" in line for line in lines)
    assert len(lines) < 40, "\n".join(lines)
    # librdkafka repeats the failure per broker and retry: within 10 s a line appears once (digits aside)
    rdkafka = [json.loads(line) for line in lines if '"logger": "access_eval.librdkafka"' in line]
    shapes = Counter((e["level"], re.sub(r"\d+", "#", e["msg"])) for e in rdkafka)
    print(f"wrong SASL password: {len(rdkafka)} librdkafka lines, {len(shapes)} distinct")
    assert all(n == 1 for n in shapes.values()), shapes
