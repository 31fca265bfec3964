"""End to end against the independent SPEC model of tests/support/spec_rules.py, not against `simulate`.

`simulate` and `run` share the evaluation core, so comparing them cannot see a bug in that core. Here
the expected event of every attempt comes from `spec_decide` with the settings version in force at the
attempt's event time (`Scenario.expected`, written without processor imports): settings histories of
several versions per account, messy ids, all identity types and states, invalid lines.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from datetime import datetime
from pathlib import Path

import pytest

from tests.support.kafka_harness import Topics, wait_until
from tests.support.processor_harness import produce, read_evals, read_topic, start_processor, wait_all_committed
from tests.support.spec_rules import IDENTITY_TYPES, OUTCOMES, STATES, norm
from tests.support.strategies import (
    _INVALID_LINES,
    ACCOUNTS,
    BASE_MS,
    MINUTE,
    Scenario,
    attempt_obj,
    dumps,
    iso,
    settings_obj,
)

pytestmark = pytest.mark.kafka


def messy(rng: random.Random, account: str) -> str:
    chars = "".join(c.upper() if c.isalpha() and rng.random() < 0.3 else c for c in account)
    return rng.choice(["", " ", "\t"]) + chars + rng.choice(["", " "])


def build(seed: int, n_accounts: int = 12, n_attempts: int = 3000) -> Scenario:
    rng = random.Random(seed)
    pool = ACCOUNTS[:n_accounts]
    externals = pool + ACCOUNTS[n_accounts:n_accounts + 4]
    sc = Scenario()
    for account in pool:
        for m in rng.sample(range(6 * 60), rng.randint(0, 4)):  # 0-4 versions, any publication order
            eff = BASE_MS + m * MINUTE + rng.randint(0, 999)
            types = {} if rng.random() < 0.1 else {  # {}: every type back to enabled
                t: {"state": rng.choice(STATES),
                    "external_allowed_accounts": [messy(rng, a) for a in rng.sample(externals, rng.randint(0, 4))]}
                for t in IDENTITY_TYPES if rng.random() < 0.8
            }
            sc.versions.append((account, eff, settings_obj(messy(rng, account), types,
                                                           iso(eff, rng.choice([0, 0, 120, -330])))))
    for i in range(n_attempts):
        if rng.random() < 0.03:
            sc.attempts.append(rng.choice(_INVALID_LINES))
            sc.attempt_objs.append(None)
            continue
        t = BASE_MS + rng.randint(-60, 7 * 60) * MINUTE + rng.randint(0, 999)
        obj = attempt_obj(messy(rng, rng.choice(pool)), messy(rng, rng.choice(externals)),
                          rng.choice(IDENTITY_TYPES), t, attempt_id=f"att-{i}")
        sc.attempts.append(dumps(obj))
        sc.attempt_objs.append(obj)
    return sc


def epoch_ms(value: object) -> int:
    if isinstance(value, datetime):
        return int(value.timestamp() * 1000)
    return int(value)  # type: ignore[call-overload]


def test_run_matches_the_independent_spec_model(topics: Topics, tmp_path: Path) -> None:
    seed = random.randrange(1_000_000)
    print(f"spec-model seed {seed}")
    sc = build(seed)
    expected = sc.expected()
    topics.create(partitions=3)
    produce(topics.bootstrap, topics.settings, [(norm(acct).encode(), dumps(d)) for acct, _, d in sc.versions])
    keys = [norm(o["account_id"]).encode() if o else b"bad" for o in sc.attempt_objs]
    produce(topics.bootstrap, topics.attempts, list(zip(keys, sc.attempts, strict=True)))
    p = start_processor(topics, tmp_path)
    try:
        p.wait_ready()
        wait_all_committed(topics.bootstrap, topics.group, topics.attempts)
        outcomes = Counter(d.outcome for d, _, _ in expected)
        for o in OUTCOMES:
            wait_until(lambda o=o: p.metric("access_eval_attempts_total", outcome=o) == outcomes[o], 10,
                       f"counter {o} = {outcomes[o]} (seed {seed})")
    finally:
        assert p.terminate() == 0, p.log()
    got = {e["attemptId"]: (k, e) for k, e in read_evals(topics.bootstrap, topics.evals)}
    want = {sc.attempt_objs[i]["id"]: (d, idx, exact) for i, (d, idx, exact) in enumerate(expected)  # type: ignore[index]
            if d.emitted}
    assert set(got) == set(want), (f"seed {seed}: missing {sorted(set(want) - set(got))[:5]}, "
                                   f"unexpected {sorted(set(got) - set(want))[:5]}")
    wrong = []
    for aid, (d, idx, exact) in want.items():
        key, e = got[aid]
        rd = e["responseData"]
        sv = rd["settingsVersion"]
        seen = (rd["decision"], rd["isEnforced"], rd["state"], rd["allowlisted"], sv["exact"],
                epoch_ms(sv["effectiveTime"]), key)
        target = norm(next(o for o in sc.attempt_objs if o and o["id"] == aid)["account_id"])
        spec = (d.decision, d.is_enforced, d.state, d.allowlisted, exact, sc.versions[idx][1] if idx is not None
                else None, target.encode())
        if seen != spec:
            wrong.append((aid, seen, spec))
    assert not wrong, f"seed {seed}: {len(wrong)} events differ from the SPEC model, e.g. " + json.dumps(
        wrong[:3], default=str)
    assert len(read_topic(topics.bootstrap, topics.dlq)) == outcomes["invalid"]
