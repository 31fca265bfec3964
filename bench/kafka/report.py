"""The printed table and the JSON file of the figures."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.kafka.common import num, say


def table(results: dict[str, Any]) -> str:
    lines = []
    m = results["machine"]
    lines.append(f"machine: {m['nproc']} CPUs ({m['cpu']}), {m['ram_gb']} GB RAM, Python {m['python']}, "
                 f"Kafka {m['kafka']}, librdkafka {m['librdkafka']}")
    c = results["config"]
    lines.append(f"mix: {c['attempts']:,} attempts, {c['accounts']:,} accounts, {c['partitions']} partitions; "
                 f"{results['expected']['events']:,} eval events expected; median of {c['runs']} run(s)")
    pre = results["preload"]
    lines.append(f"preload: settings {pre['settings_s']} s, attempts {pre['attempts_s']} s "
                 f"({pre['attempts_mb']} MB)")
    lines.append("")
    lines += _throughput_lines(results)
    if "latency" in results:
        lines += _latency_lines(results["latency"])
    if "settings" in results:
        s = results["settings"]
        b = s.get("bootstrap")
        if b:
            lines.append(f"settings bootstrap: {b['records']:,} records ({b['megabytes']} MB, allowlists "
                         f"{b['allowlist_ids']} ids): ready in {b['ready_s']} s (bootstrap {b['bootstrap_s']} s), "
                         f"peak RSS {b['peak_rss_mb']} MB")
        p = s.get("propagation")
        if p:
            lines.append(f"settings change propagation: p50 {p['p50_ms']} ms, p99 {p['p99_ms']} ms, "
                         f"max {p['max_ms']} ms ({p['changes']} changes)")
    if "stages" in results:
        lines += _stage_lines(results["stages"])
    lines.append(f"\nall counts correct: {results['correct']}")
    return "\n".join(lines)


def _throughput_lines(results: dict[str, Any]) -> list[str]:
    lines = [f"{'throughput (attempts/s)':<40}{'median':>12}  {'runs':<30} correct"]
    tp = results["throughput"]
    for key, label in (("exactly_once_1", "exactly-once, 1 process"), ("exactly_once_2", "exactly-once, 2 processes"),
                       ("at_least_once_1", "at-least-once, 1 process"),
                       ("at_least_once_2", "at-least-once, 2 processes"),
                       ("ceiling_consume", "ceiling: plain consumer"),
                       ("ceiling_passthrough", "ceiling: transactional pass-through"),
                       ("peer_kstreams", "peer: Kafka Streams, exactly-once")):
        if key in tp:
            r = tp[key]
            runs = ", ".join(num(x["attempts_per_s"]) for x in r["runs"])
            lines.append(f"{label:<40}{num(r['attempts_per_s']):>12}  {runs:<30} {r['correct']}")
    ratios = results.get("ratios", {})
    if ratios:
        lines.append(f"exactly-once x1 / plain consumer: {ratios.get('eos_vs_consume')}; "
                     f"/ pass-through: {ratios.get('eos_vs_passthrough')}; "
                     f"/ best peer: {ratios.get('eos_vs_best_peer')}")
    return lines


def _latency_lines(lat: dict[str, Any]) -> list[str]:
    wu = lat["warmup"]
    return [
        "",
        f"latency at {lat['offered_per_s']:,}/s offered ({lat['achieved_per_s']:,}/s achieved, "
        f"{lat['seconds']} s, {lat['events']:,} events): p50 {lat['p50_ms']} ms, p99 {lat['p99_ms']} ms, "
        f"max {lat['max_ms']} ms",
        "  runs (p50 / p99 / max ms; the median p99 is the line above): " + "; ".join(
            f"{r['p50_ms']} / {r['p99_ms']} / {r['max_ms']}" for r in lat["runs"]),
        f"  {lat['warmup_seconds']} s warm-up before it: p50 {wu['p50_ms']} ms, p99 {wu['p99_ms']} ms, "
        f"max {wu['max_ms']} ms; transaction commit mean {lat['commits']['mean_ms']} ms",
    ]


def _stage_lines(st: dict[str, Any]) -> list[str]:
    lines = ["", "stage costs, µs per attempt: " + ", ".join(f"{k} {v}" for k, v in st["us_per_attempt"].items())]
    if st.get("us_per_event"):
        lines.append("  per emitted event: " + ", ".join(f"{k} {v}" for k, v in st["us_per_event"].items()))
    lines.append(f"  AttemptStage.process in process: {st['process_us_per_attempt']} µs/attempt "
                 f"({st['process_and_commit_us_per_attempt']} with commits); settings apply "
                 f"{st['settings_apply_us_per_record']} µs/record; evaluate by allowlist size "
                 f"{st['evaluate_us_by_allowlist']}")
    return lines


def report(results: dict[str, Any], json_path: Path | None) -> None:
    """The table on stdout; the same figures as JSON at `json_path` (`--json`)."""
    print(table(results))
    if json_path:
        json_path.write_text(json.dumps(results, indent=2) + "\n")
        say(f"wrote {json_path}")
