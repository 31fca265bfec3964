"""The report objects (`report --format json`, one account or the fleet) from the counts: pure.

`processor.tools.report` reads the topics into a `WouldBeDenies` and renders what this module builds
as text, JSON or HTML. The verdict sentences live here too, so every form says the same.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from typing import Any

from processor.core.allowlist_advice import (
    CLASSES,
    DEFAULT_COVER_SHARE,
    MIN_REPEATED_ATTEMPTS,
    NO_EVIDENCE,
    NOT_PLAIN,
    ONE_OFF,
    READY_AFTER,
    READY_NOW,
    RECOMMENDED,
    Advice,
    Allowlists,
    advise,
)
from processor.core.outcomes import REPORT_ONLY_STATE, UNRESTRICTED_STATE
from processor.core.times import rfc3339_millis
from processor.core.would_be_denies import HOUR_MS, MAX_ACTIONS, AccountTally, Window

SUGGESTION_RULE = (
    f"ranked by would-be-denied attempts; recommended: at least {MIN_REPEATED_ATTEMPTS} attempts in the window "
    "(a repeated caller); one_off: a single attempt (noise limited is meant to stop); not_plain: not a valid "
    "account id, e.g. with whitespace, control, invisible or bidi characters (shown escaped, never suggested)"
)


def n_of(count: int, word: str, plural: str | None = None) -> str:
    return f"{count:,} {word if count == 1 else plural or word + 's'}"


def pct(part: int, whole: int) -> str:
    """A share as a whole percent, never rounded up to 100% (or down to 0%) when it is not."""
    if whole == 0:
        return "0%"
    p = 100 * part / whole
    if 99 < p < 100:
        return ">99%"
    if 0 < p < 1:
        return "<1%"
    return f"{round(p)}%"


# --- one account --------------------------------------------------------------------------------


def series(tally: AccountTally, window: Window) -> dict[str, Any]:
    """Would-be denies per UTC day (per hour for windows up to 48 h), every bucket of the window."""
    size, origin = window.bucket_ms, window.origin_ms
    n = window.buckets(tally.last_ms)
    return {
        "bucket": "hour" if size == HOUR_MS else "day",
        "points": [
            {"start": rfc3339_millis(origin + i * size), "would_be_denies": tally.series.get(i, 0)} for i in range(n)
        ],
    }


def series_counts(tally: AccountTally, window: Window) -> list[int]:
    return [tally.series.get(i, 0) for i in range(window.buckets(tally.last_ms))]


def external_accounts(tally: AccountTally) -> list[dict[str, Any]]:
    """Per external account: would-be-denied attempts, distinct identities, types, times, actions."""
    merged: dict[str, dict[str, Any]] = {}
    for (itype, ext), g in tally.pairs.items():
        m = merged.setdefault(
            ext, {"attempts": 0, "ids": set(), "types": set(), "actions": set(), "first": g.first_ms, "last": g.last_ms}
        )
        m["attempts"] += g.attempts
        m["ids"] |= g.identities
        m["types"].add(itype)
        m["actions"] |= g.actions
        m["first"] = min(m["first"], g.first_ms)
        m["last"] = max(m["last"], g.last_ms)
    ordered = sorted(merged.items(), key=lambda kv: (-kv[1]["attempts"], kv[0]))
    return [
        {
            "account_id": ext,
            "attempts": m["attempts"],
            "identities": len(m["ids"]),
            "identity_types": sorted(m["types"]),
            "first_seen": rfc3339_millis(m["first"]),
            "last_seen": rfc3339_millis(m["last"]),
            "actions": sorted(m["actions"])[:MAX_ACTIONS],
        }
        for ext, m in ordered
    ]


def identity_rows(tally: AccountTally) -> list[dict[str, Any]] | None:
    if tally.by_identity is None:
        return None
    rows = sorted(tally.by_identity.items(), key=lambda kv: (-kv[1].attempts, kv[0]))
    return [
        {
            "iam_id": iam_id,
            "name": g.name,
            "identity_type": itype,
            "external_account_id": ext,
            "attempts": g.attempts,
            "first_seen": rfc3339_millis(g.first_ms),
            "last_seen": rfc3339_millis(g.last_ms),
            "actions": sorted(g.actions),
            "user_agent": g.agent,
        }
        for (ext, itype, iam_id), g in rows
    ]


def by_identity_type(tally: AccountTally) -> dict[str, int]:
    out: dict[str, int] = {}
    for itype, exts in tally.counts.items():
        out[itype] = out.get(itype, 0) + sum(exts.values())
    return dict(sorted(out.items(), key=lambda kv: (-kv[1], kv[0])))


def suggestion(advice: Advice) -> dict[str, Any]:
    """The ranked candidates with their cumulative coverage, and what would still be denied."""
    remaining = advice.remaining
    rec = advice.recommended
    rec_attempts = advice.recommended_attempts
    rest = [c for c in advice.candidates if c.kind != RECOMMENDED]
    return {
        "rule": SUGGESTION_RULE,
        "min_repeated_attempts": MIN_REPEATED_ATTEMPTS,
        "candidates": [
            {
                "rank": i,
                "identity_type": c.identity_type,
                "account_id": c.account_id,
                "attempts": c.attempts,
                "share": c.attempts / remaining,
                "cumulative_share": c.cumulative / remaining,
                "kind": c.kind,
            }
            for i, c in enumerate(advice.candidates, 1)
        ],
        "recommended": {"additions": len(rec), "attempts": rec_attempts,
                        "share": rec_attempts / remaining if remaining else 0.0},
        "still_denied": {
            "attempts": remaining - rec_attempts,
            "candidates": len(rest),
            "one_off": sum(1 for c in rest if c.kind == ONE_OFF),
            "not_plain": sum(1 for c in rest if c.kind == NOT_PLAIN),
        },
    }


def allowlist_additions(advice: Advice) -> dict[str, list[str]]:
    """Per identity type, every candidate external account (the field since the first release)."""
    out: dict[str, list[str]] = {}
    for c in advice.candidates:
        out.setdefault(c.identity_type, []).append(c.account_id)
    return {t: sorted(v) for t, v in sorted(out.items())}


def readiness(advice: Advice, cover_share: float) -> dict[str, Any]:
    return {
        "class": advice.readiness,
        "max_additions": advice.max_additions,
        "recommended_additions": len(advice.recommended),
        "cover_share": cover_share,
        "additions_for_share": advice.additions_for_share(cover_share),
    }


def account_report(
    account_id: str,
    tally: AccountTally,
    window: Window,
    current: dict[str, Any] | None,
    *,
    max_additions: int,
    cover_share: float = DEFAULT_COVER_SHARE,
) -> dict[str, Any]:
    """The `report --format json` object of one account, verdict included; the caller adds what it
    knows of the topic (`undecodable_events`, `eval_topic_retention_ms`, `warnings`)."""
    advice = advise(tally, allowlists_of(current), max_additions)
    report: dict[str, Any] = {
        "account_id": account_id,
        "window": {"since": rfc3339_millis(window.since_ms), "until": rfc3339_millis(window.until_ms),
                   "text": window.text},
        "would_be_denies": tally.would_be_denies,
        "identities": tally.distinct_identities,
        "external_accounts": external_accounts(tally),
        "by_identity": identity_rows(tally),
        "allowlist_additions": allowlist_additions(advice),
        "already_allowlisted": advice.already if current is not None else None,
        "denies_with_current_allowlist": advice.remaining if current is not None else None,
        "report_only_permits": tally.permits,
        "enforced_denies": tally.enforced_denies,
        "current_settings": current,
        "duplicate_events": tally.duplicates,
        "covered_from": rfc3339_millis(tally.first_ms) if tally.first_ms is not None else None,
        "covered_to": rfc3339_millis(tally.last_ms) if tally.last_ms is not None else None,
        "by_identity_type": by_identity_type(tally),
        "suggestion": suggestion(advice),
        "readiness": readiness(advice, cover_share),
        "series": series(tally, window),
    }
    report["verdict"] = verdict(report)
    return report


def allowlist_commands(report: dict[str, Any]) -> list[list[str]]:
    """The `settings put` argv per identity type adding its recommended candidates (plain ids only:
    a not-plain id is never recommended), keeping the type's state (an `enabled` type goes to monitor)."""
    by_type: dict[str, list[str]] = {}
    for c in report["suggestion"]["candidates"]:
        if c["kind"] == RECOMMENDED:
            by_type.setdefault(c["identity_type"], []).append(c["account_id"])
    current = report.get("current_settings")
    out = []
    for itype, exts in sorted(by_type.items()):
        state = current["identity_types"][itype]["state"] if current is not None else REPORT_ONLY_STATE
        state = REPORT_ONLY_STATE if state == UNRESTRICTED_STATE else state
        out.append(["access-eval", "settings", "put", "--account", report["account_id"], "--identity-type", itype,
                    "--state", state, "--add-allow", *exts])
    return out


def allowlists_of(current: dict[str, Any] | None) -> Allowlists | None:
    """identity type -> allowlist, from a `settings get --format json` object (None: unknown)."""
    if current is None:
        return None
    return {t: frozenset(v.get("external_allowed_accounts", [])) for t, v in current.get("identity_types", {}).items()}


def verdict(report: dict[str, Any]) -> str:
    """One or two plain sentences answering "what breaks if I switch to limited now?"."""
    n, window = report["would_be_denies"], report["window"]["text"]
    if n == 0:
        permits = report["report_only_permits"]
        if permits == 0:
            return (
                f"no report-only (monitor) evaluations of {report['account_id']} {window}: there is no evidence "
                "of what limited would deny; put the identity types in monitor first"
            )
        return (
            f"switching to limited now would have denied no attempts {window}: all "
            f"{n_of(permits, 'report-only evaluation')} were permits"
        )
    k = len(report["external_accounts"])
    text = (
        f"switching to limited now would have denied {n_of(n, 'attempt')} by "
        f"{n_of(report['identities'], 'identity', 'identities')} from {n_of(k, 'external account')} {window}"
    )
    remaining = report.get("denies_with_current_allowlist")
    if remaining is not None and remaining != n:
        text += (
            f"; {n - remaining:,} of those attempts come from accounts on the allowlist now, so with the current "
            f"allowlist it would deny {n_of(remaining, 'attempt')}"
        )
    return text


def headline(readiness_: dict[str, Any]) -> str:
    """The readiness class as a short headline: "Ready now", "Ready after adding 3 accounts", ..."""
    cls = readiness_["class"]
    k = readiness_["recommended_additions"]
    if cls == READY_NOW:
        return "Ready now: limited would deny nothing the current allowlists do not already permit"
    if cls == NO_EVIDENCE:
        return "No evidence: no report-only (monitor) evaluations in the window"
    words = f"after adding {n_of(k, 'account')} to the allowlist"
    if cls == READY_AFTER:
        return f"Ready {words}" if k else "Ready: only one-off callers would be denied"
    return f"Not ready: {n_of(k, 'repeated caller')} would need adding (more than {readiness_['max_additions']})"


def coverage_sentence(suggestion_: dict[str, Any], remaining: int) -> str:
    """ "adding these 3 accounts would have permitted 94% of the would-be denies; the remaining 6% ..." """
    rec, rest = suggestion_["recommended"], suggestion_["still_denied"]
    if remaining == 0:
        return "nothing to add: no would-be deny is left with the current allowlists"
    head = (
        f"adding these {n_of(rec['additions'], 'account')} would have permitted {pct(rec['attempts'], remaining)} "
        "of the would-be denies"
        if rec["additions"] else "no external account called more than once: nothing is recommended"
    )
    if rest["attempts"] == 0:
        return head
    tail = f"the remaining {pct(rest['attempts'], remaining)} come from {n_of(rest['candidates'], 'account')}"
    if rest["one_off"] == rest["candidates"]:
        tail += " with one attempt each"
    elif rest["not_plain"]:
        tail += f" ({rest['not_plain']} with ids that are not plain text)"
    return f"{head}; {tail}"


# --- the fleet ----------------------------------------------------------------------------------


def fleet_row(
    account_id: str, tally: AccountTally, window: Window, allowlists: Allowlists | None, monitor_types: list[str],
    *, max_additions: int, cover_share: float,
) -> dict[str, Any]:
    advice = advise(tally, allowlists, max_additions)
    return {
        "account_id": account_id,
        "monitor_types": monitor_types,
        "readiness": readiness(advice, cover_share),
        "would_be_denies": tally.would_be_denies,
        "denies_with_current_allowlist": advice.remaining,
        "identities": tally.distinct_identities,
        "external_accounts": len({ext for _t, ext, _n in tally.groups()}),
        "report_only_permits": tally.permits,
        "enforced_denies": tally.enforced_denies,
        "duplicate_events": tally.duplicates,
        "series": series_counts(tally, window),
    }


#: account -> (its identity types in monitor, its allowlists in force): the fleet view's accounts
Monitored = Mapping[str, tuple[list[str], Allowlists]]


def fleet_rows(
    accounts: MutableMapping[str, AccountTally], window: Window, monitored: Monitored, *, max_additions: int,
    cover_share: float, empty: bool = False,
) -> list[dict[str, Any]]:
    """The rows of the monitored accounts counted in `accounts`, each tally removed once its row is
    built (a reader's counts shrink as its rows grow); with `empty`, also the monitored accounts
    with nothing counted. Every row depends on its own account's tally only, so rows built by
    several readers from disjoint accounts are the rows one reader builds."""
    rows = []
    for acct, (types, allow) in monitored.items():
        tally = accounts.pop(acct, None)
        if tally is None and not empty:
            continue
        rows.append(fleet_row(acct, tally or AccountTally(detail=False), window, allow, types,
                              max_additions=max_additions, cover_share=cover_share))
    return rows


def rank_fleet(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Ready now first, then ready after the fewest additions, then not ready, then no evidence."""
    order = {c: i for i, c in enumerate(CLASSES)}
    return sorted(
        rows,
        key=lambda r: (order[r["readiness"]["class"]], r["readiness"]["recommended_additions"],
                       r["denies_with_current_allowlist"], r["account_id"]),
    )


def fleet_counts(rows: list[dict[str, Any]]) -> dict[str, int]:
    return {c: sum(1 for r in rows if r["readiness"]["class"] == c) for c in CLASSES}


def fleet_verdict(counts: dict[str, int], max_additions: int) -> str:
    total = sum(counts.values())
    return (
        f"{counts[READY_NOW]} of {n_of(total, 'account')} with an identity type in monitor could switch to limited "
        f"now; {counts[READY_AFTER]} after adding at most {max_additions} accounts each"
    )
