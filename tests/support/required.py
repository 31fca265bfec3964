"""The one rule for tests that need a tool outside Python (helm, promtool, buildah, kube-apiserver, ...).

A missing required component fails the test, naming how to install it: a green run must never mean
"checked nothing". The only way to skip instead is to say so explicitly with
``ACCESS_EVAL_ALLOW_MISSING_TOOLS=1`` (a developer without, say, Go); ``scripts/test`` clears it.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ALLOW_VARIABLE = "ACCESS_EVAL_ALLOW_MISSING_TOOLS"


def missing(what: str, how: str) -> None:
    """Fail (or, with ACCESS_EVAL_ALLOW_MISSING_TOOLS=1, skip) because `what` is not available."""
    msg = f"{what} not available: {how}"
    if os.environ.get(ALLOW_VARIABLE, "") == "1":
        pytest.skip(f"{msg} (skipped: {ALLOW_VARIABLE}=1)")
    pytest.fail(f"{msg} (set {ALLOW_VARIABLE}=1 to skip instead)", pytrace=False)


def require_binary(name: str, how: str = "run `scripts/bootstrap --all`") -> str:
    """Path of executable `name` on PATH, in .cache/bin or /usr/bin; missing: see `missing`."""
    found = shutil.which(name)
    if found is None:
        extra = [REPO / ".cache" / "bin" / name, Path("/usr/bin") / name, Path("/usr/sbin") / name]
        found = next((str(p) for p in extra if p.is_file() and os.access(p, os.X_OK)), None)
    if found is None:
        missing(f"'{name}'", how)
        raise AssertionError("unreachable")  # pragma: no cover - missing() always raises
    return found
