"""Account ids given on the command line: one rule with the processor, one usage error naming the flag."""

from __future__ import annotations

from processor.core.display import fit, printable
from processor.core.ids import account_problem, normalize_account
from processor.errors import usage_error


def account_id(raw: str, flag: str = "--account") -> str:
    """A normalised account id, or a usage error naming the flag and what is wrong (contract §3.2).

    The rule is the processor's own (`ids.account_problem`): what a flag accepts, a settings record and
    an attempt may hold, and the other way round. The input is echoed only escaped (`printable`)."""
    if not normalize_account(raw):
        usage_error(f"{flag}: account id is empty")
    problem = account_problem(raw)
    if problem is not None:
        usage_error(f"{flag}: invalid account id {fit(printable(raw.strip()), 80)}: {problem}")
    return normalize_account(raw)


def account_list(values: list[str] | None, flag: str) -> list[str]:
    """Ids from repeated flags, each possibly a comma-separated list; normalised, de-duplicated, in order."""
    out: dict[str, None] = {}
    for value in values or []:
        for part in value.split(","):
            if part.strip():
                out[account_id(part, flag)] = None
    return list(out)
