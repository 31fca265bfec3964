"""The report pages in a real browser: Debian's chromium driven by Playwright (never a downloaded
browser), opening the account page and the fleet page that `report --format html` wrote from a real
run (settings through `settings put`, attempts through `access-eval run` on the real broker).

It asserts what a person relies on when they open the file from a change ticket: nothing is fetched
and nothing errs, the headline figures are the `--format json` figures, the charts have marks, a
hostile user agent or name shows as text and runs nothing, and the picture is not blank.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from processor.core.times import rfc3339_millis
from processor.local.broker import BrokerInfo
from tests.support.kafka_harness import Topics
from tests.support.processor_harness import REPO, produce, start_processor, wait_all_committed
from tests.support.required import missing

pytestmark = [pytest.mark.kafka, pytest.mark.browser]

HOUR = 3_600_000
DAY = 24 * HOUR
READY = "acct-ready-now"
AFTER = "acct-after-additions"
#: Run in the page, these set document.title; rendered as text they do nothing.
HOSTILE_UA = "<script>document.title='pwned-script'</script><img src=x onerror=\"document.title='pwned-img'\">"
HOSTILE_NAME = "<img src=y onerror=\"document.title='pwned-name'\">Mallory"
#: Where `make test` leaves the screenshot the README shows (docs/readiness-*.png is a checked-in copy).
SCREENSHOT_ENV = "ACCESS_EVAL_SCREENSHOT_DIR"


def chromium() -> str:
    """Debian's chromium; missing: fail (tests/support/required.py), naming `scripts/bootstrap --all`."""
    found = shutil.which("chromium") or ("/usr/bin/chromium" if os.access("/usr/bin/chromium", os.X_OK) else None)
    if found is None:
        missing("'chromium' (Debian package chromium)", "run `scripts/bootstrap --all`")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing("Playwright for Python", "run `scripts/bootstrap` (the dev extra installs it)")
    assert found is not None
    return found


def cli(*args: str) -> str:
    proc = subprocess.run([sys.executable, "-m", "processor", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=120, env={k: v for k, v in os.environ.items() if not k.startswith("ACCESS_EVAL_")})
    assert proc.returncode == 0, f"{args}: exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def attempts(now: int) -> list[tuple[bytes, bytes]]:
    """acct-ready-now: only its allowlisted partner calls. acct-after-additions: two partners call
    again and again, four external accounts once each, one partner with a hostile user agent/name."""
    plan: list[tuple[str, str, str, str | None, str | None]] = [(READY, "partner-ok", "user", None, None)] * 5
    plan += [(AFTER, "partner-one", "user", HOSTILE_NAME, HOSTILE_UA)] * 9
    plan += [(AFTER, "partner-two", "service_id", None, None)] * 4
    plan += [(AFTER, f"stranger-{i}", "user", None, None) for i in range(4)]
    out = []
    for i, (target, ext, itype, name, agent) in enumerate(plan):
        body: dict[str, Any] = {
            "id": f"browser-{i}", "event_time": rfc3339_millis(now - (i * 37 % 480) * HOUR), "account_id": target,
            "identity": {"iam_id": f"iam-{ext}-{i % 2}", "type": itype, "account_id": ext}, "action": "svc.read",
        }
        if name is not None:
            body["identity"]["name"] = name
        if agent is not None:
            body["user_agent"] = agent
        out.append((target.encode(), json.dumps(body).encode()))
    return out


@pytest.fixture(scope="module")
def pages(kafka: BrokerInfo, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Settings, attempts through the real processor, then the JSON and HTML of both pages."""
    exe = chromium()
    tmp = tmp_path_factory.mktemp("report-pages")
    topics = Topics.for_test(kafka.bootstrap, "report_browser")
    topics.create(partitions=2, config={"retention.ms": str(35 * DAY)})
    try:
        base = ("--bootstrap-servers", topics.bootstrap, "--settings-topic", topics.settings)
        now = int(time.time() * 1000)
        # In force before every attempt (which go back 20 days): effective 25 days ago.
        cli("settings", "put", *base, "--account", READY, "--identity-type", "user", "--state", "monitor",
            "--allow", "partner-ok", "--updated-at", rfc3339_millis(now - 25 * DAY))
        for i, itype in enumerate(("user", "service_id")):
            cli("settings", "put", *base, "--account", AFTER, "--identity-type", itype, "--state", "monitor",
                "--updated-at", rfc3339_millis(now - 25 * DAY + i * 60_000))
        proc = start_processor(topics, tmp)
        try:
            proc.wait_ready()
            produce(topics.bootstrap, topics.attempts, attempts(now))
            wait_all_committed(topics.bootstrap, topics.group, topics.attempts)
        finally:
            assert proc.terminate() == 0, proc.log()
        report = ("report", *base, "--eval-topic", topics.evals)
        out: dict[str, Any] = {"exe": exe, "tmp": tmp}
        for name, which in (("account", ("--account", AFTER)), ("fleet", ("--all-accounts",))):
            out[f"{name}_json"] = json.loads(cli(*report, *which, "--format", "json"))
            cli(*report, *which, "--format", "html", "--output", str(tmp / f"{name}.html"))
            out[f"{name}_html"] = tmp / f"{name}.html"
        yield out
    finally:
        topics.delete()


def open_page(exe: str, path: Path, shot: Path) -> dict[str, Any]:
    """Open the file in chromium; what it requested and logged, its figures, charts, text and a screenshot."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            errors: list[str] = []
            requests: list[str] = []
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.on("request", lambda r: requests.append(r.url))
            page.goto(path.as_uri(), wait_until="load")
            page.wait_for_load_state("networkidle")
            figures = {el.get_attribute("data-figure"): int(el.inner_text().replace(",", ""))
                       for el in page.query_selector_all("[data-figure]")}
            charts = page.evaluate("""() => [...document.querySelectorAll('svg[data-chart]')].map(s => ({
                kind: s.dataset.chart, width: s.getBoundingClientRect().width,
                height: s.getBoundingClientRect().height,
                marks: s.querySelectorAll('rect.bar').length
                       + [...s.querySelectorAll('polyline.curve')].filter(l => l.points.numberOfItems > 1).length}))""")
            result = {
                "errors": errors, "requests": requests, "figures": figures, "charts": charts,
                "title": page.title(), "text": page.inner_text("body"),
                "images": page.evaluate("document.images.length"),
                "headline": page.inner_text(".headline"),
            }
            page.screenshot(path=str(shot), full_page=True)
            result["distinct_colors"] = distinct_colors(browser, shot)
            return result
        finally:
            browser.close()


def distinct_colors(browser: Any, png: Path) -> int:
    """Distinct colours in a sample of the screenshot's pixels, decoded by the browser itself."""
    page = browser.new_page()
    data = base64.b64encode(png.read_bytes()).decode()
    page.set_content(f'<img id="s" src="data:image/png;base64,{data}">')
    page.wait_for_function("document.getElementById('s').complete")
    return int(page.evaluate("""() => {
        const img = document.getElementById('s'), c = document.createElement('canvas');
        c.width = img.naturalWidth; c.height = img.naturalHeight;
        const ctx = c.getContext('2d'); ctx.drawImage(img, 0, 0);
        const d = ctx.getImageData(0, 0, c.width, c.height).data, seen = new Set();
        for (let i = 0; i < d.length; i += 4 * 97) seen.add((d[i] << 16) | (d[i + 1] << 8) | d[i + 2]);
        return seen.size; }"""))


def shot_dir(tmp: Path) -> Path:
    target = Path(os.environ.get(SCREENSHOT_ENV) or tmp)
    target.mkdir(parents=True, exist_ok=True)
    return target


def check_common(seen: dict[str, Any], path: Path) -> None:
    assert seen["errors"] == [], seen["errors"]
    assert seen["requests"] == [path.as_uri()], "the page fetched something besides itself"
    assert not seen["title"].startswith("pwned"), "script from an event ran in the page"
    assert seen["images"] == 0
    assert seen["distinct_colors"] >= 8, "the screenshot looks blank"


def test_account_page_in_a_real_browser(pages: dict[str, Any]) -> None:
    r = pages["account_json"]
    seen = open_page(pages["exe"], pages["account_html"], shot_dir(pages["tmp"]) / "readiness-account.png")
    check_common(seen, pages["account_html"])
    assert r["readiness"]["class"] == "ready_after_additions" and r["readiness"]["recommended_additions"] == 2
    assert seen["figures"] == {
        "would_be_denies": r["would_be_denies"], "identities": r["identities"],
        "denies_with_current_allowlist": r["denies_with_current_allowlist"],
        "external_accounts": len(r["external_accounts"]),
        "recommended_additions": r["readiness"]["recommended_additions"],
        "additions_for_share": r["readiness"]["additions_for_share"],
        "still_denied": r["suggestion"]["still_denied"]["attempts"],
    }
    assert r["would_be_denies"] == 17
    assert "Ready after adding 2 accounts" in seen["headline"]
    kinds = {c["kind"]: c for c in seen["charts"]}
    assert set(kinds) == {"trend", "externals", "types", "coverage"}
    assert all(c["width"] > 100 and c["height"] > 20 and c["marks"] > 0 for c in seen["charts"]), seen["charts"]
    # the hostile strings are on the page, as text
    assert HOSTILE_UA in seen["text"] and HOSTILE_NAME in seen["text"]


def test_fleet_page_in_a_real_browser(pages: dict[str, Any]) -> None:
    r = pages["fleet_json"]
    seen = open_page(pages["exe"], pages["fleet_html"], shot_dir(pages["tmp"]) / "readiness-fleet.png")
    check_common(seen, pages["fleet_html"])
    assert [(a["account_id"], a["readiness"]["class"]) for a in r["accounts"]] == [
        (READY, "ready_now"), (AFTER, "ready_after_additions")]
    assert seen["figures"] == {"accounts": 2, "would_be_denies": r["would_be_denies"], **r["classes"]}
    sparks = [c for c in seen["charts"] if c["kind"] == "sparkline"]
    assert len(sparks) == 2 and sum(c["marks"] for c in sparks) == 2
    trend = [c for c in seen["charts"] if c["kind"] == "trend"]
    assert len(trend) == 1 and trend[0]["marks"] > 0
    assert seen["text"].index(READY) < seen["text"].index(AFTER)
