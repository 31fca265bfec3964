"""Event ids (docs/contract.md §7.1): two attempts that differ in anything that identifies them never
share an event id; a re-delivered identical attempt keeps its id; attempt ids reused with different
content are counted (`access_eval_attempt_id_conflicts_total`).

Expected ids come from tests/support/spec_model.py (`expected_event_id`, written from the contract), never
from the processor's own `event_id`.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

from processor.codec.avro import EvalCodec
from processor.core.attempts import parse_attempt
from processor.core.evaluator import assess
from processor.core.events import build_event
from processor.core.settings import SettingsHistory
from processor.health import Health
from processor.metrics import Metrics
from processor.stream.attempt_stage import AttemptStage
from processor.stream.context import RunContext
from processor.stream.transaction import Transaction
from tests.support.spec_model import expected_event_id
from tests.support.strategies import ACCOUNTS, BASE_MS, NOW_MS, attempt_obj, dumps, settings_obj

A, B, X, Y, Z = ACCOUNTS[:5]
SHARED_ID = "att-shared"


def _five_attempts() -> list[dict[str, Any]]:
    """One attempt id, five identities (the issue's reproduction): a benign read, an API-key
    creation, a secrets read, and two attempts on another target account."""
    return [
        attempt_obj(A, X, "user", BASE_MS + 1, attempt_id=SHARED_ID, iam_id="IBMid-1", action="cos.object.read"),
        attempt_obj(A, Y, "service_id", BASE_MS + 1, attempt_id=SHARED_ID, iam_id="ServiceId-2",
                    action="iam-identity.apikey.create"),
        attempt_obj(A, Z, "service", BASE_MS + 1, attempt_id=SHARED_ID, iam_id="crn-svc-3", action="kms.secrets.read"),
        attempt_obj(B, X, "user", BASE_MS + 1, attempt_id=SHARED_ID, iam_id="IBMid-1", action="cos.object.read"),
        attempt_obj(B, X, "user", BASE_MS + 2, attempt_id=SHARED_ID, iam_id="IBMid-1", action="cos.object.read"),
    ]


def _history() -> SettingsHistory:
    """A monitored, a limited account: every cross-account attempt of the five is emitted."""
    h = SettingsHistory()
    h.apply_record(A.encode(), dumps(settings_obj(A, {t: {"state": "monitor", "external_allowed_accounts": []}
                                                       for t in ("user", "service_id", "service")})), BASE_MS - 10)
    h.apply_record(B.encode(), dumps(settings_obj(B, {"user": {"state": "limited", "external_allowed_accounts": []}})),
                   BASE_MS - 10)
    return h


def _spec_attempt(obj: dict[str, Any]) -> dict[str, Any]:
    """What spec_model.expected_event_id reads: the attempt with normalised ids and its event ms."""
    from tests.support.spec_model import parse_attempt as spec_parse

    return spec_parse(dumps(obj), NOW_MS)


def test_five_attempts_sharing_an_id_get_five_event_ids_on_both_encoders() -> None:
    history, codec = _history(), EvalCodec()
    built, encoded = [], []
    for obj in _five_attempts():
        attempt = parse_attempt(dumps(obj), NOW_MS)
        verdict, version, exact = assess(history, attempt)
        assert verdict.emit
        built.append(build_event(attempt, verdict, version, exact, NOW_MS)["id"])
        encoded.append(codec.decode(codec.encode_evaluation(attempt, verdict, version, exact, NOW_MS))["id"])
    assert built == encoded
    assert len(set(built)) == 5
    assert built == [expected_event_id(_spec_attempt(o)) for o in _five_attempts()]
    assert all(uuid.UUID(i).version == 5 for i in built)


def test_a_redelivered_identical_attempt_keeps_its_id_whatever_its_spelling_or_display_fields() -> None:
    obj = attempt_obj(A, X, "user", BASE_MS + 1, attempt_id=SHARED_ID, iam_id="IBMid-1", action="cos.object.read")
    again = json.loads(json.dumps(obj))
    again["account_id"] = f"  {A.upper()} "  # the same account, as the contract normalises it (§3.2)
    again["user_agent"] = "another-agent/1.0"  # a display field, not part of the identity (§7.1)
    history = _history()
    ids = []
    for o in (obj, again, obj):
        attempt = parse_attempt(dumps(o), NOW_MS)
        ids.append(build_event(attempt, *assess(history, attempt), NOW_MS)["id"])
    assert ids[0] == ids[1] == ids[2] == expected_event_id(_spec_attempt(obj))


def test_identifying_values_cannot_be_shifted_between_fields() -> None:
    """iam id `p` from account `qr` and iam id `pq` from account `r` are different attempts (the
    id's name is length-prefixed, not a plain concatenation)."""
    one = attempt_obj(A, "qr", "user", BASE_MS, attempt_id=SHARED_ID, iam_id="p")
    two = attempt_obj(A, "r", "user", BASE_MS, attempt_id=SHARED_ID, iam_id="pq")
    history = _history()
    attempts = [parse_attempt(dumps(o), NOW_MS) for o in (one, two)]
    ids = {build_event(a, *assess(history, a), NOW_MS)["id"] for a in attempts}
    assert len(ids) == 2


# --- the conflict counter -----------------------------------------------------------------------


class _Msg:
    def __init__(self, value: bytes, offset: int) -> None:
        self._value, self._offset = value, offset

    def error(self) -> None:
        return None

    def value(self) -> bytes:
        return self._value

    def key(self) -> None:
        return None

    def headers(self) -> None:
        return None

    def topic(self) -> str:
        return "attempts"

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return self._offset


class _Producer:
    def __init__(self) -> None:
        self.produced: list[tuple[str, bytes | None]] = []
        self.failed_deliveries = 0

    def produce(self, topic: str, value: bytes | None, key: bytes | None, *_: Any, **__: Any) -> None:
        self.produced.append((topic, value))

    def poll(self, timeout: float = 0) -> int:
        return 0


def _conflicts(metrics: Metrics) -> float:
    value = metrics.registry.get_sample_value("access_eval_attempt_id_conflicts_total")
    assert value is not None
    return value


def test_the_conflict_counter_moves_only_for_differing_content() -> None:
    metrics, producer, codec = Metrics(), _Producer(), EvalCodec()
    txn = Transaction(producer, None, metrics, RunContext(Health()), exactly_once=False)  # type: ignore[arg-type]
    stage = AttemptStage(_history(), codec, metrics, txn, eval_topic="evals", dlq_topic="dlq",
                         max_future_ms=3_600_000, max_attempt_bytes=256 * 1024)
    five = [dumps(o) for o in _five_attempts()]
    stage.process([_Msg(five[0], 0), _Msg(five[0], 1)])  # an identical re-delivery
    assert _conflicts(metrics) == 0
    stage.process([_Msg(v, i + 2) for i, v in enumerate(five[1:])])
    assert _conflicts(metrics) == 4
    stage.process([_Msg(five[0], 9)])  # the first content again: not a conflict
    assert _conflicts(metrics) == 4
    ids = [codec.decode(v)["id"] for t, v in producer.produced if v is not None]
    assert len(ids) == 7 and len(set(ids)) == 5


def test_the_conflict_memory_is_bounded_and_forgets_oldest_first() -> None:
    from processor.core.conflicts import AttemptIdConflicts

    seen = AttemptIdConflicts(capacity=100)
    attempts = [parse_attempt(dumps(attempt_obj(A, X, "user", BASE_MS, attempt_id=f"a{i}")), NOW_MS)
                for i in range(1000)]
    assert not any(seen.observe(a) for a in attempts)
    assert len(seen) <= 100
    other = parse_attempt(dumps(attempt_obj(A, Y, "user", BASE_MS, attempt_id="a999")), NOW_MS)
    assert seen.observe(other)  # a recent id: remembered
    forgotten = parse_attempt(dumps(attempt_obj(A, Y, "user", BASE_MS, attempt_id="a0")), NOW_MS)
    assert not seen.observe(forgotten)  # beyond the bound: best effort, not counted


def test_simulate_gives_a_report_only_event_and_an_enforced_deny_sharing_an_attempt_id_two_ids(
    tmp_path: Path,
) -> None:
    """The issue's `simulate` case: the same attempt id on monitored account A and limited account B."""
    from tests.tools.test_simulate import run

    since = "2026-01-01T00:00:00Z"
    settings = [settings_obj(A, {"user": {"state": "monitor", "external_allowed_accounts": []}}, since),
                settings_obj(B, {"user": {"state": "limited", "external_allowed_accounts": []}}, since)]
    five = _five_attempts()
    events, err, _ = run(tmp_path, settings, [five[0], five[3]])
    assert err == []
    got = {(e["target"]["accountId"], e["responseData"]["isEnforced"]): e["id"] for e in events}
    assert set(got) == {(A, False), (B, True)}
    assert got[A, False] != got[B, True]
    assert got[B, True] == expected_event_id(_spec_attempt(five[3]))
