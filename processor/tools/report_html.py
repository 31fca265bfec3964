"""`report --format html`: one self-contained page, for one account or the fleet.

No network when opened (no script, no font, no stylesheet or image fetched: a Content-Security-Policy
of `default-src 'none'` says so to the browser too), so the file can be mailed or attached to a change
ticket. Charts are inline SVG (`report_svg`). Every string from events or settings is
attacker-controlled (contract §4): it passes through `display.printable` (escapes shown) and then
`html.escape`, so a hostile name or user agent shows as text and never becomes markup.
"""

from __future__ import annotations

import html
from typing import Any

from processor.core.allowlist_advice import NOT_PLAIN, RECOMMENDED
from processor.core.display import printable, shell_command
from processor.core.switch_report import allowlist_commands, coverage_sentence, headline
from processor.tools.report_svg import bar_chart, column_chart, coverage_curve, sparkline
from processor.tools.report_text import CLASS_WORDS

TABLE_ROWS = 20
#: The fleet page lists this many accounts (readiest first), so a fleet of 10,000 stays a page to open.
FLEET_ROWS = 2000
CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"
STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1d2433;margin:0;background:#f5f7fb}
main{max-width:1040px;margin:0 auto;padding:24px}
h1{font-size:20px;margin:0 0 4px} h2{font-size:16px;margin:28px 0 8px}
.headline{font-size:26px;font-weight:700;margin:12px 0 4px;padding:12px 16px;border-radius:8px}
.ready_now{background:#dff3e4;color:#145c2c} .ready_after_additions{background:#e6eefc;color:#1f4aa0}
.not_ready{background:#fde7e4;color:#8a2314} .no_evidence{background:#eceef2;color:#4a5263}
.verdict{margin:4px 0 16px;color:#4a5263}
.figures{display:grid;grid-template-columns:repeat(auto-fill,minmax(180px,1fr));gap:10px;margin:0}
.figures div{background:#fff;border:1px solid #dde3ee;border-radius:8px;padding:10px 12px}
.figures dt{font-size:12px;color:#4a5263} .figures dd{font-size:22px;font-weight:700;margin:2px 0 0}
section{background:#fff;border:1px solid #dde3ee;border-radius:8px;padding:12px 16px;margin-top:16px}
table{border-collapse:collapse;width:100%;font-size:13px} th,td{text-align:left;padding:4px 8px;
border-bottom:1px solid #eef1f6;vertical-align:middle} th{color:#4a5263;font-weight:600}
td.n{text-align:right;font-variant-numeric:tabular-nums} code,pre{font-family:ui-monospace,monospace;font-size:12px}
pre{background:#f0f3f8;padding:8px;border-radius:6px;white-space:pre-wrap;word-break:break-all}
.badge{display:inline-block;padding:1px 8px;border-radius:10px;font-size:12px}
.warn{color:#8a2314} .muted{color:#4a5263;font-size:12px} .mark{color:#8a2314;font-weight:600}
"""


def e(value: object) -> str:
    """Input-controlled text as HTML text: escapes shown for invisible characters, markup escaped."""
    return html.escape(printable(str(value)), quote=True)


def _page(title: str, body: list[str]) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{e(title)}</title><style>{STYLE}</style></head><body><main>"
        + "\n".join(body) + "</main></body></html>\n"
    )


def _figures(items: list[tuple[str, str, int | None]]) -> str:
    cells = [f'<div><dt>{html.escape(name)}</dt><dd data-figure="{key}">{value:,}</dd></div>'
             for name, key, value in items if value is not None]
    return '<dl class="figures">' + "".join(cells) + "</dl>"


def _table(
    headers: list[str], rows: list[list[str]], numeric: frozenset[int] | set[int] = frozenset(), cls: str = ""
) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f'<td class="n">{c}</td>' if i in numeric else f"<td>{c}</td>" for i, c in enumerate(r))
        + "</tr>" for r in rows
    )
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _id_cell(value: str) -> str:
    """An id as code; one that is not plain text is shown escaped and marked."""
    cell = f"<code>{e(value)}</code>"
    return cell if printable(value) == value else cell + ' <span class="mark">not plain: never suggested</span>'


def _coverage(r: dict[str, Any]) -> str:
    w = r["window"]
    items = [f"window asked: {e(w['text'])} ({e(w['since'])} .. {e(w['until'])})"]
    if r["covered_from"] is not None:
        items.append(f"data covers {e(r['covered_from'])} .. {e(r['covered_to'])} (first and last event read)")
    else:
        items.append("data covers: no events in the window")
    items.append(f"duplicate events (same id) counted once: {r['duplicate_events']:,}; undecodable events skipped: "
                 f"{r.get('undecodable_events', 0):,}")
    retention = r.get("eval_topic_retention_ms")
    items.append(f"eval topic retention.ms: {e(retention if retention is not None else 'unknown')}")
    items += [f'<span class="warn">warning: {e(x)}</span>' for x in r.get("warnings", [])]
    lis = "".join(f"<li>{i}</li>" for i in items)
    return f"<section><h2>Data coverage and warnings</h2><ul>{lis}</ul></section>"


def _footer(regenerate: list[str]) -> str:
    return f'<p class="muted">regenerate this page: <code>{e(shell_command(regenerate))}</code></p>'


def _trend(points: list[int], start: str, last: str, bucket: str) -> str:
    return (f"<section><h2>Would-be denies per {bucket}</h2>"
            + column_chart(points, start, last, f"would-be denies per {bucket}") + "</section>")


# --- one account ----------------------------------------------------------------------------------


def render(report: dict[str, Any], regenerate: list[str]) -> str:
    return render_fleet(report, regenerate) if report.get("fleet") else render_account(report, regenerate)


def render_account(r: dict[str, Any], regenerate: list[str]) -> str:
    rd = r["readiness"]
    acct = r["account_id"]
    body = [
        f"<h1>Can account <code>{e(acct)}</code> switch to limited?</h1>",
        f'<p class="headline {rd["class"]}" data-class="{rd["class"]}">{e(headline(rd))}</p>',
        f'<p class="verdict">{e(r["verdict"])}</p>',
        _figures([
            ("would-be denies", "would_be_denies", r["would_be_denies"]),
            ("with the allowlists in force now", "denies_with_current_allowlist", r["denies_with_current_allowlist"]),
            ("identities", "identities", r["identities"]),
            ("external accounts", "external_accounts", len(r["external_accounts"])),
            ("recommended additions", "recommended_additions", rd["recommended_additions"]),
            (f"additions for {rd['cover_share'] * 100:g}%", "additions_for_share", rd["additions_for_share"]),
        ]),
    ]
    s = r["series"]
    cut = 13 if s["bucket"] == "hour" else 10
    starts = [p["start"][:cut] for p in s["points"]] or [""]
    body.append(_trend([p["would_be_denies"] for p in s["points"]], starts[0], starts[-1], s["bucket"]))
    body += [_top_externals(r), _by_type(r), _suggestion(r, regenerate), _still_denied(r), _identities(r),
             _coverage(r), _footer(regenerate)]
    return _page(f"access-eval readiness: {printable(acct)}", body)


def _top_externals(r: dict[str, Any]) -> str:
    rec = {c["account_id"] for c in r["suggestion"]["candidates"] if c["kind"] == RECOMMENDED}
    top = r["external_accounts"][:15]
    rows = [(x["account_id"], x["attempts"], x["account_id"] in rec) for x in top]
    more = len(r["external_accounts"]) - len(top)
    note = f'<p class="muted">… and {more:,} more external accounts</p>' if more > 0 else ""
    chart = bar_chart(rows, "top external accounts by would-be denies", "externals") if rows else "<p>none</p>"
    return ("<section><h2>Top external accounts</h2>" + chart
            + '<p class="muted">dark: recommended for the allowlist; light: one-off or not plain</p>' + note
            + "</section>")


def _by_type(r: dict[str, Any]) -> str:
    rows = [(t, n, True) for t, n in r["by_identity_type"].items()]
    chart = bar_chart(rows, "would-be denies by identity type", "types") if rows else "<p>none</p>"
    return "<section><h2>By identity type</h2>" + chart + "</section>"


def _suggestion(r: dict[str, Any], regenerate: list[str]) -> str:
    s = r["suggestion"]
    remaining = r["denies_with_current_allowlist"]
    remaining = r["would_be_denies"] if remaining is None else remaining
    cands = s["candidates"]
    rec = [c for c in cands if c["kind"] == RECOMMENDED]
    curve = coverage_curve([c["cumulative_share"] for c in cands], len(rec), r["readiness"]["cover_share"],
                           "cumulative share of would-be denies permitted by the first n additions")
    rows = [[str(c["rank"]), e(c["identity_type"]), _id_cell(c["account_id"]), f"{c['attempts']:,}",
             f"{c['share'] * 100:.1f}%", f"{c['cumulative_share'] * 100:.1f}%"] for c in rec[:TABLE_ROWS]]
    table = _table(["#", "identity type", "external account", "attempts", "share", "cumulative"], rows, {0, 3, 4, 5},
                   "suggestion") if rows else "<p>nothing to recommend</p>"
    commands = _commands(r)
    return (
        "<section><h2>Suggested allowlist additions</h2>"
        f"<p><strong>{e(coverage_sentence(s, remaining))}</strong></p>{curve}{table}"
        + (f"<p>to add them:</p><pre>{commands}</pre>" if commands else "")
        + f'<p class="muted">rule: {e(s["rule"])}</p></section>'
    )


def _commands(r: dict[str, Any]) -> str:
    return "\n".join(e(shell_command(argv)) for argv in allowlist_commands(r))


def _still_denied(r: dict[str, Any]) -> str:
    rest = [c for c in r["suggestion"]["candidates"] if c["kind"] != RECOMMENDED]
    sd = r["suggestion"]["still_denied"]
    kinds = {NOT_PLAIN: '<span class="mark">not plain</span>'}
    rows = [[_id_cell(c["account_id"]), e(c["identity_type"]), f"{c['attempts']:,}", kinds.get(c["kind"], "one-off")]
            for c in rest[:TABLE_ROWS]]
    more = len(rest) - len(rows)
    return (
        "<section><h2>What would still be denied</h2>"
        f'<p data-figure="still_denied">{sd["attempts"]:,}</p>'
        f"<p>attempts from {sd['candidates']:,} candidates ({sd['one_off']:,} one-off callers, "
        f"{sd['not_plain']:,} with ids that are not plain text) after the recommended additions.</p>"
        + (_table(["external account", "identity type", "attempts", "kind"], rows, {2}, "still") if rows else "")
        + (f'<p class="muted">… and {more:,} more</p>' if more > 0 else "") + "</section>"
    )


def _identities(r: dict[str, Any]) -> str:
    ids = r.get("by_identity") or []
    rows = [[f"<code>{e(i['iam_id'])}</code>", e(i["name"] or "-"), e(i["identity_type"]),
             f"<code>{e(i['external_account_id'])}</code>", f"{i['attempts']:,}", e(i.get("user_agent") or "-"),
             e(", ".join(i["actions"][:3]))] for i in ids[:TABLE_ROWS]]
    if not rows:
        return ""
    more = len(ids) - len(rows)
    return ("<section><h2>By identity</h2>"
            + _table(["identity", "name", "type", "from account", "attempts", "user agent", "actions"], rows, {4},
                     "identities")
            + (f'<p class="muted">… and {more:,} more</p>' if more > 0 else "") + "</section>")


# --- the fleet ------------------------------------------------------------------------------------


def render_fleet(r: dict[str, Any], regenerate: list[str]) -> str:
    c = r["classes"]
    accounts = r["accounts"]
    body = [
        "<h1>Which accounts can switch to limited?</h1>",
        f'<p class="headline ready_after_additions" data-class="fleet">{e(r["verdict"])}</p>',
        f'<p class="verdict">{len(accounts):,} accounts with an identity type in monitor, {e(r["window"]["text"])}; '
        f"ready after additions: at most {r['max_additions']} recommended allowlist additions</p>",
        _figures([("accounts in monitor", "accounts", len(accounts)), ("ready now", "ready_now", c["ready_now"]),
                  ("ready after additions", "ready_after_additions", c["ready_after_additions"]),
                  ("not ready", "not_ready", c["not_ready"]), ("no evidence", "no_evidence", c["no_evidence"]),
                  ("would-be denies", "would_be_denies", r["would_be_denies"])]),
    ]
    total = [sum(col) for col in zip(*(a["series"] for a in accounts), strict=False)] if accounts else []
    body.append(_trend(total, r["series_start"][:10], f"{len(total)} {r['series_bucket']}s", r["series_bucket"]))
    share = f"{r['cover_share'] * 100:g}%"
    rows = [[str(i), _id_cell(a["account_id"]),
             f'<span class="badge {a["readiness"]["class"]}">{CLASS_WORDS[a["readiness"]["class"]]}</span>',
             str(a["readiness"]["recommended_additions"]), str(a["readiness"]["additions_for_share"]),
             f"{a['would_be_denies']:,}", f"{a['denies_with_current_allowlist']:,}", f"{a['identities']:,}",
             f"{a['external_accounts']:,}", e(", ".join(a["monitor_types"])),
             sparkline(a["series"], f"would-be denies per {r['series_bucket']}")]
            for i, a in enumerate(accounts[:FLEET_ROWS], 1)]
    more = len(accounts) - len(rows)
    body.append("<section><h2>Accounts, readiest first</h2>" + _table(
        ["#", "account", "readiness", "additions", f"for {share}", "would-be denies", "left now", "identities",
         "external accounts", "types in monitor", "trend"], rows, {0, 3, 4, 5, 6, 7, 8}, "fleet")
        + (f'<p class="muted">… and {more:,} more accounts (all are in <code>--format json</code>)</p>' if more > 0
           else "")
        + f'<p class="muted">additions: recommended allowlist additions (repeated callers); for {share}: the fewest '
        f"additions covering {share} of the would-be denies left now</p></section>")
    body += [_coverage(r), _footer(regenerate)]
    return _page("access-eval readiness: fleet", body)
