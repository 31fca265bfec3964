"""`report --format html`: placeholder replaced below."""

from __future__ import annotations

from typing import Any


def render(report: dict[str, Any], regenerate: list[str]) -> str:
    raise NotImplementedError
