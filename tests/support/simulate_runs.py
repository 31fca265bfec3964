"""Running `simulate` in-process on written input files, for the tests of `access-eval simulate`
(`tests/tools/test_simulate*.py`): `run` returns its events, its stderr lines and its would-be-deny
summary."""

from __future__ import annotations

import io
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, settings

from processor.core.would_be_denies import WouldBeDenies
from processor.tools.simulate import simulate
from tests.support.strategies import (
    HOUR,
    NOW_MS,
    dumps,
)

ROOT = Path(__file__).resolve().parents[2]
AVSC = ROOT / "schemas" / "eval_event.avsc"


#: The properties follow the Hypothesis profile (tests/conftest.py: `ci` runs 500 examples, derandomized);
#: large scenarios are slow to generate, which is not a failure.
PROPS = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])


def write_lines(path: Path, lines: Iterable[bytes | str | dict[str, Any]]) -> Path:
    with path.open("wb") as fh:
        for line in lines:
            if isinstance(line, dict):
                line = dumps(line)
            fh.write((line.encode() if isinstance(line, str) else line) + b"\n")
    return path


def run(
    tmp: Path,
    settings_lines: Iterable[Any],
    attempt_lines: Iterable[Any],
    *,
    summary: bool = False,
    retention_ms: int = 24 * HOUR,
) -> tuple[list[dict[str, Any]], list[str], WouldBeDenies]:
    s = write_lines(tmp / "settings.jsonl", settings_lines)
    a = write_lines(tmp / "attempts.jsonl", attempt_lines)
    out, err = io.StringIO(), io.StringIO()
    agg = simulate(s, a, out, err, summary=summary, now_ms=NOW_MS, retention_ms=retention_ms)
    events = [json.loads(line) for line in out.getvalue().splitlines()]
    return events, err.getvalue().splitlines(), agg


def render(record: dict[str, Any]) -> dict[str, Any]:
    """Test-side JSON rendering of a fastavro-decoded record: timestamp-millis as `...T..:..:..mmmZ`."""

    def conv(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: conv(x) for k, x in v.items()}
        if hasattr(v, "tzinfo") and hasattr(v, "microsecond"):
            return v.strftime("%Y-%m-%dT%H:%M:%S.") + f"{v.microsecond // 1000:03d}Z"
        return v

    return conv(record)  # type: ignore[no-any-return]
