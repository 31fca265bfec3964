"""`report` as text for a terminal, top-down: verdict and key figures, top external accounts, the
ranked allowlist suggestion, then the detail.

Every string that came from events or settings goes through `display.printable` (directly or in
`format_table`); every command to paste goes through `display.shell_command` and holds only plain
ids (an id that is not plain is shown escaped and marked, never suggested).
"""

from __future__ import annotations

from typing import Any

from processor.core.allowlist_advice import NOT_PLAIN, RECOMMENDED
from processor.core.display import printable, shell_command
from processor.core.switch_report import allowlist_commands, coverage_sentence, headline, n_of, pct
from processor.tools.output import format_table

MAX_ACTIONS_SHOWN = 3


def _more(shown: int, total: int, what: str) -> list[str]:
    if total <= shown:
        return []
    return [f"… and {total - shown:,} more {what} (`--top 0` for all)"]


def _limit(rows: list[Any], top: int) -> list[Any]:
    return rows if top == 0 else rows[:top]


def key_figures(r: dict[str, Any]) -> list[str]:
    """The lines under the headline: figures, the period really covered, duplicates, warnings."""
    w = r["window"]
    out = [
        f"  would-be denies:   {r['would_be_denies']:,} {w['text']} ({w['since']} .. {w['until']})",
        f"  identities:        {r['identities']:,}",
        f"  external accounts: {len(r['external_accounts']):,}",
    ]
    if r.get("denies_with_current_allowlist") is not None:
        out.append(f"  with the allowlists in force now: {r['denies_with_current_allowlist']:,} would be denied")
    out.append(f"  report-only permits: {r['report_only_permits']:,}   enforced denies: {r['enforced_denies']:,}")
    if r["covered_from"] is not None:
        out.append(f"  data covers {r['covered_from']} .. {r['covered_to']} (first and last event read)")
    else:
        out.append("  data covers: no events of this account in the window")
    if r["duplicate_events"]:
        out.append(f"  {n_of(r['duplicate_events'], 'duplicate event')} (same id) counted once")
    out += [f"warning: {printable(w_)}" for w_ in r["warnings"]]
    return out


def _top_externals(r: dict[str, Any], top: int) -> list[str]:
    externals = r["external_accounts"]
    if not externals:
        return []
    total = r["would_be_denies"]
    shown = _limit(externals, top)
    table = format_table(
        ["external account", "attempts", "share", "identities", "types", "first seen", "last seen"],
        [[e["account_id"], f"{e['attempts']:,}", pct(e["attempts"], total), e["identities"],
          ",".join(e["identity_types"]), e["first_seen"], e["last_seen"]] for e in shown],
    )
    return ["top external accounts (would-be denies):", table, *_more(len(shown), len(externals), "external accounts"),
            ""]


def _suggestion(r: dict[str, Any], top: int) -> list[str]:
    s = r["suggestion"]
    cands = s["candidates"]
    if not cands:
        return []
    remaining = r["denies_with_current_allowlist"]
    remaining = r["would_be_denies"] if remaining is None else remaining
    shown = _limit(cands, top)
    marks = {RECOMMENDED: "recommended", NOT_PLAIN: "NOT PLAIN: escaped, never suggested"}
    table = format_table(
        ["#", "identity type", "external account", "attempts", "share", "cumulative", "kind"],
        [[c["rank"], c["identity_type"], c["account_id"], f"{c['attempts']:,}", pct(c["attempts"], remaining),
          f"{c['cumulative_share'] * 100:.1f}%", marks.get(c["kind"], "one-off")] for c in shown],
    )
    out = [
        "suggested allowlist additions, ranked by the would-be denies each removes:",
        table,
        *_more(len(shown), len(cands), "candidates"),
        coverage_sentence(s, remaining),
        f"rule: {s['rule']}",
    ]
    return out + _commands(r) + [""]


def _commands(r: dict[str, Any]) -> list[str]:
    """`settings put` commands for the recommended additions, one per identity type, shell-quoted."""
    commands = allowlist_commands(r)
    if not commands:
        return []
    return ["to add the recommended accounts:", *("  " + shell_command(argv) for argv in commands)]


def _by_identity(r: dict[str, Any], top: int) -> list[str]:
    ids = r.get("by_identity") or []
    if not ids:
        return []
    shown = _limit(ids, top)

    def actions(i: dict[str, Any]) -> str:
        extra = len(i["actions"]) - MAX_ACTIONS_SHOWN
        return ", ".join(i["actions"][:MAX_ACTIONS_SHOWN]) + (f" (+{extra})" if extra > 0 else "")

    table = format_table(
        ["identity", "name", "type", "from account", "attempts", "first seen", "last seen", "actions"],
        [[i["iam_id"], i["name"] or "-", i["identity_type"], i["external_account_id"], i["attempts"],
          i["first_seen"], i["last_seen"], actions(i)] for i in shown],
    )
    return ["by identity:", table, *_more(len(shown), len(ids), "identities"), ""]


def render_account(r: dict[str, Any], top: int) -> str:
    """The human-readable `report --account`."""
    acct = printable(r["account_id"])
    out = [f"account {acct}: {headline(r['readiness'])}", f"verdict: {printable(r['verdict'])}", *key_figures(r), ""]
    current = r.get("current_settings")
    if current is not None:
        states = ", ".join(
            f"{t} {v['state']} ({len(v['external_allowed_accounts'])} allowed)"
            for t, v in current["identity_types"].items()
        )
        out += [f"settings now: {states}", ""]
    out += _top_externals(r, top)
    out += _suggestion(r, top)
    out += _by_identity(r, top)
    for itype, exts in (r.get("already_allowlisted") or {}).items():
        out.append(f"already on the {itype} allowlist now: {', '.join(printable(e) for e in exts)}")
    return "\n".join(out).rstrip("\n") + "\n"


CLASS_WORDS = {"ready_now": "ready now", "ready_after_additions": "ready after additions",
                "not_ready": "not ready", "no_evidence": "no evidence"}


def render_fleet(r: dict[str, Any], top: int) -> str:
    """The human-readable `report --all-accounts`: one row per account in monitor, readiest first."""
    w = r["window"]
    out = [f"fleet: {r['verdict']}",
           f"  window: {w['text']} ({w['since']} .. {w['until']}); ready after additions: at most "
           f"{r['max_additions']} recommended additions (--max-additions)"]
    out.append("  " + "   ".join(f"{CLASS_WORDS[c]}: {n}" for c, n in r["classes"].items()))
    if r["covered_from"] is not None:
        out.append(f"  data covers {r['covered_from']} .. {r['covered_to']} (first and last event read)")
    out += [f"warning: {printable(w_)}" for w_ in r["warnings"]]
    out.append("")
    rows = r["accounts"]
    shown = _limit(rows, top)
    share = f"for {r['cover_share'] * 100:g}%"
    out.append(format_table(
        ["account", "readiness", "additions", share, "would-be denies", "left now", "identities", "external",
         "types in monitor"],
        [[a["account_id"], CLASS_WORDS[a["readiness"]["class"]], a["readiness"]["recommended_additions"],
          a["readiness"]["additions_for_share"], f"{a['would_be_denies']:,}", f"{a['denies_with_current_allowlist']:,}",
          a["identities"], a["external_accounts"], ",".join(a["monitor_types"])] for a in shown],
    ))
    out += _more(len(shown), len(rows), "accounts")
    out.append(f"\nadditions: recommended allowlist additions (repeated callers); {share}: the fewest additions "
               f"covering {r['cover_share'] * 100:g}% of the would-be denies left now")
    return "\n".join(out) + "\n"
