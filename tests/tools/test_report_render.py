"""The report's three forms rendered from one aggregation, without Kafka: the text reads top-down and
cuts long tables with `--top`; commands to paste are shell-quoted and hold only plain ids; JSON keeps
every field it had; the HTML page is self-contained and shows hostile strings as text."""

from __future__ import annotations

import json
import re
import shlex
from typing import Any

import pytest

from processor.core.switch_report import account_report, fleet_row, rank_fleet
from processor.core.would_be_denies import Window, WouldBeDenies
from processor.tools import report_html, report_text

HOUR = 3_600_000
DAY = 24 * HOUR
NOW = 1_780_272_000_000
ACCT = "a3f1c0d2e4b5968778695a4b3c2d1e0f"
HOSTILE_UA = "<script>document.title='pwned'</script><img src=x onerror=\"document.title='pwned'\">"
HOSTILE_NAME = "</td><b>bold</b>\x1b[31mred\u202eevil"
NOT_PLAIN = "evil\u202eid"
#: The report fields of the first release (contract: fields are only added).
V1_FIELDS = {"account_id", "window", "would_be_denies", "identities", "external_accounts", "by_identity",
             "allowlist_additions", "already_allowlisted", "denies_with_current_allowlist", "report_only_permits",
             "enforced_denies", "current_settings", "duplicate_events", "covered_from", "covered_to", "verdict"}


def ev(n: int, ext: str, t: int, *, itype: str = "user", state: str = "monitor", decision: str = "Deny",
       name: str | None = None, agent: str | None = None) -> dict[str, Any]:
    return {
        "id": f"e-{n}", "eventTime": t,
        "initiator": {"id": f"iam-{ext}-{n % 2}", "typeURI": itype, "name": name, "authnAccountId": ext,
                      "host": {"address": None, "agent": agent}},
        "target": {"accountId": ACCT, "action": "cloud-object-storage.object.read"},
        "responseData": {"state": state, "decision": decision},
    }


def sample_report(current: dict[str, Any] | None = None) -> dict[str, Any]:
    window = Window(NOW - 30 * DAY, NOW, "in the last 30 days")
    agg = WouldBeDenies(window, accounts={ACCT}, detail=True)
    n = 0
    for ext, count in (("partner-a", 40), ("partner-b", 12), ("partner-c", 5), ("x; rm -rf ~", 3), (NOT_PLAIN, 3)):
        for _ in range(count):
            n += 1
            agg.add_event(ev(n, ext, NOW - n * HOUR, name=HOSTILE_NAME, agent=HOSTILE_UA))
    for i in range(30):
        n += 1
        agg.add_event(ev(n, f"tail-{i:02d}", NOW - n * HOUR))
    agg.add_event(ev(n + 1, "friend", NOW - HOUR, decision="Permit"))
    r = account_report(ACCT, agg.tally(ACCT), window, current, max_additions=5)
    r.update({"undecodable_events": 0, "eval_topic_retention_ms": 35 * DAY, "warnings": []})
    return r


def test_text_reads_top_down_verdict_first_then_top_accounts_then_the_ranked_suggestion() -> None:
    out = report_text.render_account(sample_report(), top=20)
    lines = out.splitlines()
    assert lines[0] == f"account {ACCT}: Ready after adding 3 accounts to the allowlist"
    assert lines[1].startswith("verdict: switching to limited now would have denied 93 attempts by ")
    order = [out.index(s) for s in ("would-be denies:", "data covers", "top external accounts",
                                    "suggested allowlist additions", "by identity:")]
    assert order == sorted(order)
    assert ("adding these 3 accounts would have permitted 61% of the would-be denies; the remaining 39% come from "
            "32 accounts") in out
    assert "… and 15 more external accounts (`--top 0` for all)" in out
    assert len(lines) < 120  # 35 external accounts, 70 identities: cut to --top rows each


def test_top_zero_shows_every_row_and_a_small_top_cuts() -> None:
    r = sample_report()
    full = report_text.render_account(r, top=0)
    assert "more external accounts" not in full and "tail-29" in full
    short = report_text.render_account(r, top=2)
    assert "… and 33 more external accounts (`--top 0` for all)" in short


def test_commands_to_paste_are_quoted_and_hold_only_plain_ids() -> None:
    r = sample_report({"identity_types": {t: {"state": "monitor", "external_allowed_accounts": []}
                                          for t in ("user", "service_id", "service")}})
    out = report_text.render_account(r, top=0)
    commands = [line.strip() for line in out.splitlines() if line.strip().startswith("access-eval settings put")]
    assert len(commands) == 1
    argv = shlex.split(commands[0])
    assert argv[argv.index("--add-allow") + 1:] == ["partner-a", "partner-b", "partner-c"]
    kinds = {c["account_id"]: c["kind"] for c in r["suggestion"]["candidates"]}
    assert kinds["x; rm -rf ~"] == "not_plain" and kinds[NOT_PLAIN] == "not_plain"
    # the bidi id is shown escaped and marked, never raw
    assert "\u202e" not in out and "evil\\u202eid" in out and "NOT PLAIN" in out
    assert "\x1b" not in out


def test_json_keeps_every_first_release_field_and_adds_the_suggestion_and_series() -> None:
    r = json.loads(json.dumps(sample_report()))
    assert set(r) >= V1_FIELDS
    assert {"suggestion", "readiness", "series", "by_identity_type"} <= set(r)
    cands = r["suggestion"]["candidates"]
    assert [c["cumulative_share"] for c in cands] == sorted(c["cumulative_share"] for c in cands)
    assert cands[-1]["cumulative_share"] == pytest.approx(1.0)
    assert r["series"]["bucket"] == "day" and len(r["series"]["points"]) == 31
    assert sum(p["would_be_denies"] for p in r["series"]["points"]) == r["would_be_denies"]


def test_html_is_self_contained_and_shows_hostile_strings_as_text() -> None:
    page = report_html.render(sample_report(), regenerate=["access-eval", "report", "--account", ACCT])
    assert "<script" not in page.lower() and "<img" not in page.lower()
    assert not re.search(r"<[^>]*\son\w+\s*=", page), "an event handler attribute in a tag"
    assert "&lt;script&gt;document.title=&#x27;pwned&#x27;&lt;/script&gt;" in page
    assert "&lt;/td&gt;&lt;b&gt;bold&lt;/b&gt;\\x1b[31mred\\u202eevil" in page
    assert "default-src 'none'" in page
    assert not re.search(r"<[^>]*\s(?:src|href)\s*=", page), "a tag that would load something"
    for chart in ("trend", "externals", "types", "coverage"):
        assert f'data-chart="{chart}"' in page


def test_fleet_text_and_html_rank_accounts_readiest_first() -> None:
    window = Window(NOW - DAY, NOW, "in the last day")
    agg = WouldBeDenies(window)
    agg.add_event({**ev(1, "p", NOW - HOUR), "target": {"accountId": "busy", "action": "a"}})
    agg.add_event({**ev(2, "p", NOW - HOUR, decision="Permit"), "target": {"accountId": "calm", "action": "a"}})
    rows = rank_fleet([fleet_row(a, agg.tally(a), window, {}, ["user"], max_additions=5, cover_share=0.95)
                       for a in ("busy", "calm", "silent")])
    assert [(r["account_id"], r["readiness"]["class"]) for r in rows] == [
        ("calm", "ready_now"), ("busy", "ready_after_additions"), ("silent", "no_evidence")]
    report = {"fleet": True, "window": {"since": "s", "until": "u", "text": "in the last day"}, "series_bucket": "hour",
              "series_start": "2026-06-01T00:00:00.000Z", "max_additions": 5, "cover_share": 0.95,
              "classes": {"ready_now": 1, "ready_after_additions": 1, "not_ready": 0, "no_evidence": 1},
              "accounts": rows, "would_be_denies": 1, "duplicate_events": 0, "covered_from": None,
              "covered_to": None, "verdict": "v", "warnings": [], "undecodable_events": 0,
              "eval_topic_retention_ms": None}
    text = report_text.render_fleet(report, top=20)
    assert text.index("calm") < text.index("busy") < text.index("silent")
    page = report_html.render(report, regenerate=["access-eval", "report", "--all-accounts"])
    assert page.count('data-chart="sparkline"') == 3


@pytest.mark.parametrize(
    ("args", "needle"),
    [(["--format", "html"], "--output"), (["--top", "-1"], "--top"), (["--max-additions", "-2"], "--max-additions"),
     (["--cover", "0"], "--cover")],
    ids=["html-without-output", "negative-top", "negative-k", "zero-cover"],
)
def test_bad_report_flags_are_one_line_usage_errors_before_kafka(args: list[str], needle: str) -> None:
    import subprocess
    import sys
    from pathlib import Path

    proc = subprocess.run(
        [sys.executable, "-m", "processor", "report", "--bootstrap-servers", "127.0.0.1:9", "--account", "a", *args],
        cwd=Path(__file__).resolve().parents[2], capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and needle in proc.stderr, proc.stderr
