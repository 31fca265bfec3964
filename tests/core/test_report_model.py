"""The report's aggregation (core/would_be_denies, core/allowlist_advice, core/switch_report) against an
independent model written here from contract §11.7: counts, de-duplication by event id, the window,
the ranking, cumulative coverage, the fewest additions for a share (by brute force over subsets and by
dynamic programming, not by the greedy argument the code relies on), readiness classes and the time series.

The model uses no processor code: it reads the event fields the contract names and applies the rules
as the contract states them.
"""

from __future__ import annotations

import itertools
import random
from collections import Counter, defaultdict
from datetime import UTC, datetime
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from processor.core.allowlist_advice import additions_for_share, classify
from processor.core.switch_report import account_report, coverage_sentence, fleet_row, rank_fleet
from processor.core.would_be_denies import SeenIds, Window, WouldBeDenies

HOUR = 3_600_000
DAY = 24 * HOUR
NOW = 1_780_272_000_000 + 7 * HOUR + 123  # not on a bucket boundary
TYPES = ("user", "service_id", "service")
ACCOUNTS = ("acct-a", "acct-b", "acct-c")
EXTERNALS = ("ext-1", "ext-2", "ext-3", "ext-4", "ext-5", "Ext-6 ", "bad\u202eid", "ext,7")
STATE_DECISIONS = (("monitor", "Deny"), ("monitor", "Deny"), ("monitor", "Permit"), ("limited", "Deny"))


def event(eid: str, account: str, state: str, decision: str, itype: str, ext: str, iam: str, t: int) -> dict[str, Any]:
    return {
        "id": eid,
        "eventTime": t,
        "initiator": {"id": iam, "typeURI": itype, "name": None, "authnAccountId": ext},
        "target": {"accountId": account, "action": "svc.read"},
        "responseData": {"state": state, "decision": decision},
    }


@st.composite
def event_streams(draw: st.DrawFn) -> tuple[list[dict[str, Any]], int]:
    """Events (some copied, so the same id appears more than once) in any order, and a window start."""
    n = draw(st.integers(0, 60))
    events = []
    for i in range(n):
        state, decision = draw(st.sampled_from(STATE_DECISIONS))
        events.append(event(
            f"id-{i}", draw(st.sampled_from(ACCOUNTS)), state, decision, draw(st.sampled_from(TYPES)),
            draw(st.sampled_from(EXTERNALS)), f"iam-{draw(st.integers(0, 4))}",
            NOW - draw(st.integers(0, 10 * DAY)),
        ))
    copies = [dict(e) for e in events if draw(st.booleans()) and draw(st.booleans())]
    stream = events + copies
    draw(st.randoms(use_true_random=False)).shuffle(stream)
    since = NOW - draw(st.sampled_from((HOUR * 30, 2 * DAY, 3 * DAY, 20 * DAY)))
    return stream, since


# --- the model ------------------------------------------------------------------------------------


def model_norm(account: str) -> str:
    return account.strip().lower()


def model(stream: list[dict[str, Any]], since: int, account: str, allow: dict[str, set[str]]) -> dict[str, Any]:
    """Contract §11.7 for one account, straight from the event list."""
    firsts: dict[str, dict[str, Any]] = {}
    for e in stream:
        if model_norm(e["target"]["accountId"]) == account and e["eventTime"] >= since:
            firsts.setdefault(e["id"], e)
    kept = list(firsts.values())
    copies = sum(1 for e in stream if model_norm(e["target"]["accountId"]) == account
                 and e["eventTime"] >= since) - len(kept)
    denies = [e for e in kept if e["responseData"]["state"] == "monitor" and e["responseData"]["decision"] == "Deny"]
    permits = [e for e in kept if e["responseData"]["decision"] == "Permit"]
    per_candidate: Counter[tuple[str, str]] = Counter()
    for e in denies:
        key = (e["initiator"]["typeURI"], model_norm(e["initiator"]["authnAccountId"]))
        if key[1] not in allow.get(key[0], set()):
            per_candidate[key] += 1
    ranking = sorted(per_candidate.items(), key=lambda kv: (-kv[1], kv[0][0], kv[0][1]))
    # Plain: printable, and none of the characters `settings put` refuses in an id (contract §11.7).
    plain = {k: k[1].isprintable() and not set(k[1]) & set(" ,\"'\\") for k, _ in ranking}
    kinds = {k: ("not_plain" if not plain[k] else "recommended" if n >= 2 else "one_off") for k, n in ranking}
    remaining = sum(per_candidate.values())
    recommended = sum(1 for k in kinds.values() if k == "recommended")
    if not [e for e in kept if e["responseData"]["state"] == "monitor"]:
        cls = "no_evidence"
    elif remaining == 0:
        cls = "ready_now"
    else:
        cls = "ready_after_additions" if recommended <= 2 else "not_ready"
    bucket = HOUR if NOW - since <= 2 * DAY else DAY
    series: Counter[int] = Counter()
    for e in denies:
        start = datetime.fromtimestamp(e["eventTime"] // bucket * bucket / 1000, UTC)
        series[int(start.timestamp() * 1000)] += 1
    return {
        "would_be_denies": len(denies), "permits": len(permits), "duplicates": copies,
        "identities": len({e["initiator"]["id"] for e in denies}),
        "externals": {model_norm(e["initiator"]["authnAccountId"]) for e in denies},
        "ranking": ranking, "kinds": kinds, "remaining": remaining, "class": cls, "series": series,
        "first": min((e["eventTime"] for e in kept), default=None),
    }


def brute_force_fewest(counts: list[int], share: float) -> int:
    """The fewest of `counts` (in any combination) whose sum reaches `share` of the total (small lists)."""
    total = sum(counts)
    if total == 0:
        return 0
    for n in range(len(counts) + 1):
        if any(sum(c) >= share * total - 1e-9 for c in itertools.combinations(counts, n)):
            return n
    raise AssertionError("unreachable")


def fewest_by_dynamic_programming(counts: list[int], share: float) -> int:
    """The same minimum for any length: best[k] = the largest sum of any k of the counts."""
    total = sum(counts)
    if total == 0:
        return 0
    best = [0] + [-1] * len(counts)
    for c in counts:
        for k in range(len(counts), 0, -1):
            if best[k - 1] >= 0:
                best[k] = max(best[k], best[k - 1] + c)
    return next(k for k, b in enumerate(best) if b >= share * total - 1e-9)


# --- the properties -------------------------------------------------------------------------------


@given(event_streams(), st.sampled_from(ACCOUNTS), st.booleans())
def test_account_report_agrees_with_the_model(data: tuple[list[dict[str, Any]], int], account: str,
                                              with_settings: bool) -> None:
    stream, since = data
    allow = {"user": {"ext-1"}, "service": {"ext-2", "ext-3"}} if with_settings else {}
    current = ({"identity_types": {t: {"state": "monitor", "external_allowed_accounts": sorted(allow.get(t, ()))}
                                   for t in TYPES}} if with_settings else None)
    window = Window(since, NOW, "in the window")
    agg = WouldBeDenies(window, accounts={account}, detail=True)
    for e in stream:
        agg.add_event(e)
    got = account_report(account, agg.tally(account), window, current, max_additions=2, cover_share=0.8)
    want = model(stream, since, account, allow)

    assert got["would_be_denies"] == want["would_be_denies"]
    assert got["report_only_permits"] == want["permits"]
    assert got["duplicate_events"] == want["duplicates"]
    assert got["identities"] == want["identities"]
    assert {x["account_id"] for x in got["external_accounts"]} == want["externals"]
    cands = got["suggestion"]["candidates"]
    assert [((c["identity_type"], c["account_id"]), c["attempts"]) for c in cands] == want["ranking"]
    assert [c["kind"] for c in cands] == [want["kinds"][k] for k, _ in want["ranking"]]
    running = 0
    for c, (_k, n) in zip(cands, want["ranking"], strict=True):
        running += n
        assert abs(c["cumulative_share"] - running / want["remaining"]) < 1e-12
    if with_settings:
        assert got["denies_with_current_allowlist"] == want["remaining"]
    assert got["readiness"]["class"] == want["class"]
    assert got["readiness"]["additions_for_share"] == fewest_by_dynamic_programming(
        [n for _k, n in want["ranking"]], 0.8)
    points = {datetime.fromisoformat(p["start"].replace("Z", "+00:00")).timestamp() * 1000: p["would_be_denies"]
              for p in got["series"]["points"]}
    assert {int(k): v for k, v in points.items() if v} == dict(want["series"])
    assert sum(points.values()) == want["would_be_denies"]
    assert got["covered_from"] is None if want["first"] is None else got["covered_from"] is not None


@given(st.lists(st.integers(1, 50), max_size=8), st.floats(0.01, 1.0))
def test_fewest_additions_for_a_share_is_the_true_minimum(counts: list[int], share: float) -> None:
    ranked = sorted(counts, reverse=True)
    assert additions_for_share(ranked, share) == brute_force_fewest(counts, share)
    assert fewest_by_dynamic_programming(counts, share) == brute_force_fewest(counts, share)


@given(event_streams())
def test_fleet_rows_agree_with_one_pass_per_account_and_rank_readiest_first(
        data: tuple[list[dict[str, Any]], int]) -> None:
    stream, since = data
    window = Window(since, NOW, "")
    fleet = WouldBeDenies(window, accounts=set(ACCOUNTS))
    for e in stream:
        fleet.add_event(e)
    rows = rank_fleet([fleet_row(a, fleet.tally(a), window, {}, ["user"], max_additions=2, cover_share=0.8)
                       for a in ACCOUNTS])
    order = ("ready_now", "ready_after_additions", "not_ready", "no_evidence")
    for r in rows:
        want = model(stream, since, r["account_id"], {})
        assert r["readiness"]["class"] == want["class"]
        assert r["would_be_denies"] == want["would_be_denies"]
        assert r["identities"] == want["identities"]
        assert r["external_accounts"] == len(want["externals"])
        assert sum(r["series"]) == want["would_be_denies"]
    keys = [(order.index(r["readiness"]["class"]), r["readiness"]["recommended_additions"]) for r in rows]
    assert keys == sorted(keys)


def test_readiness_classes_at_their_boundaries() -> None:
    assert classify(evidence=0, remaining=0, recommended=0, max_additions=5) == "no_evidence"
    assert classify(evidence=3, remaining=0, recommended=0, max_additions=5) == "ready_now"
    assert classify(evidence=3, remaining=4, recommended=0, max_additions=5) == "ready_after_additions"
    assert classify(evidence=9, remaining=9, recommended=5, max_additions=5) == "ready_after_additions"
    assert classify(evidence=9, remaining=9, recommended=6, max_additions=5) == "not_ready"


def test_coverage_sentence_states_the_share_of_the_recommended_and_the_one_off_tail() -> None:
    window = Window(NOW - 30 * DAY, NOW, "in the last 30 days")
    agg = WouldBeDenies(window, accounts={"t"}, detail=True)
    n = 0
    for ext, attempts in (("p1", 50), ("p2", 30), ("p3", 14)):
        for _ in range(attempts):
            n += 1
            agg.add_event(event(f"e{n}", "t", "monitor", "Deny", "user", ext, "iam", NOW - n * HOUR))
    for i in range(6):
        n += 1
        agg.add_event(event(f"e{n}", "t", "monitor", "Deny", "user", f"tail-{i}", "iam", NOW - n * HOUR))
    r = account_report("t", agg.tally("t"), window, None, max_additions=5)
    assert coverage_sentence(r["suggestion"], r["would_be_denies"]) == (
        "adding these 3 accounts would have permitted 94% of the would-be denies; the remaining 6% come from "
        "6 accounts with one attempt each")
    assert r["readiness"]["class"] == "ready_after_additions"
    assert r["readiness"]["recommended_additions"] == 3


def test_seen_ids_is_exact_over_growth() -> None:
    seen = SeenIds(capacity=4)
    rng = random.Random(5)
    ids = [f"{rng.getrandbits(128):032x}" for _ in range(20_000)]
    assert all(seen.add(i) for i in ids)
    assert not any(seen.add(i) for i in ids[::7])
    assert seen.size == len(ids) and seen.nbytes <= 4 * 8 * len(ids)


def test_events_before_the_window_and_foreign_outcomes_are_not_counted() -> None:
    window = Window(NOW - DAY, NOW, "")
    agg = WouldBeDenies(window)
    agg.add_event(event("old", "a", "monitor", "Deny", "user", "x", "i", NOW - DAY - 1))
    agg.add_event(event("odd", "a", "enabled", "Deny", "user", "x", "i", NOW))
    agg.add_event(event("new", "A ", "monitor", "Deny", "user", "X", "i", NOW - DAY))
    assert agg.foreign == 1
    assert agg.tally("a").would_be_denies == 1 and agg.tally("a").counts == {"user": {"x": 1}}
    assert defaultdict(int, agg.outcomes)["would_be_deny"] == 1
