"""From one account's would-be denies to advice: the ranked allowlist suggestion, its cumulative
coverage, the noise rule and the readiness class (contract §11.7).

Pure functions over `AccountTally`; no I/O. The rules, stated once:

- A **candidate** is one (identity type, external account) whose attempts limited would deny and
  that is not on that type's allowlist now. Allowlists are per identity type, so the same external
  account calling as a user and as a service ID is two candidates.
- Candidates are **ranked** by would-be-denied attempts (most first; ties by identity type, then
  account id). Their attempts are disjoint, so the first n of the ranking cover the most denies any
  n additions could: `cumulative_share` of the n-th is the best coverage of n additions.
- A candidate is **recommended** when it made at least `MIN_REPEATED_ATTEMPTS` (2) attempts in the
  window: a caller that came back. A single attempt is a **one-off**, the long tail limited is meant
  to stop, listed but not recommended. An id that is not a valid account id (contract §3.2:
  `ids.is_valid_account`; only an event written to the eval topic by something other than the
  processor can carry one) is **not_plain**: shown escaped, never recommended, never put into a
  command to paste.
- **Readiness class**, with K = `max_additions`:
  `ready_now` (report-only evaluations in the window, and none would be denied with the allowlists in
  force now), `ready_after_additions` (at most K recommended candidates: once added, only one-offs and
  not-plain ids would still be denied), `not_ready` (more than K), `no_evidence` (no report-only
  evaluation in the window: nothing shows what limited would deny).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from processor.core.ids import is_valid_account
from processor.core.would_be_denies import AccountTally

MIN_REPEATED_ATTEMPTS = 2
RECOMMENDED = "recommended"
ONE_OFF = "one_off"
NOT_PLAIN = "not_plain"

READY_NOW = "ready_now"
READY_AFTER = "ready_after_additions"
NOT_READY = "not_ready"
NO_EVIDENCE = "no_evidence"
#: Fleet order: the accounts that can switch first.
CLASSES: tuple[str, ...] = (READY_NOW, READY_AFTER, NOT_READY, NO_EVIDENCE)
DEFAULT_MAX_ADDITIONS = 5
DEFAULT_COVER_SHARE = 0.95

#: identity type -> external accounts on its allowlist now
Allowlists = Mapping[str, frozenset[str] | set[str]]


@dataclass(frozen=True, slots=True)
class Candidate:
    identity_type: str
    account_id: str
    attempts: int
    kind: str
    cumulative: int  # attempts of this and every higher-ranked candidate


@dataclass(frozen=True, slots=True)
class Advice:
    """One account's advice: candidates ranked, what the allowlists in force already cover, the class."""

    candidates: tuple[Candidate, ...]
    #: would-be denies of the window (all) and those the allowlists in force now would still deny
    total: int
    remaining: int
    #: identity type -> external accounts already on its allowlist now that had would-be denies
    already: dict[str, list[str]]
    evidence: int
    max_additions: int

    @property
    def recommended(self) -> tuple[Candidate, ...]:
        return tuple(c for c in self.candidates if c.kind == RECOMMENDED)

    @property
    def recommended_attempts(self) -> int:
        return sum(c.attempts for c in self.recommended)

    @property
    def readiness(self) -> str:
        return classify(self.evidence, self.remaining, len(self.recommended), self.max_additions)

    def additions_for_share(self, share: float) -> int:
        """The fewest additions that would have permitted at least `share` of the remaining denies."""
        return additions_for_share([c.attempts for c in self.candidates], share)


def suggestable(account_id: str) -> bool:
    """True when the id can go into a command to paste: exactly the ids `settings put` accepts (§3.2)."""
    return is_valid_account(account_id)


def candidate_kind(external_account: str, attempts: int) -> str:
    if not suggestable(external_account):
        return NOT_PLAIN
    return RECOMMENDED if attempts >= MIN_REPEATED_ATTEMPTS else ONE_OFF


def classify(evidence: int, remaining: int, recommended: int, max_additions: int) -> str:
    """The readiness class (module docstring) from report-only evaluations, denies left with the
    allowlists in force, and the number of recommended additions."""
    if evidence == 0:
        return NO_EVIDENCE
    if remaining == 0:
        return READY_NOW
    return READY_AFTER if recommended <= max_additions else NOT_READY


def additions_for_share(ranked_attempts: list[int], share: float) -> int:
    """Smallest n such that the first n counts (ranked, most first) reach `share` of their sum."""
    total = sum(ranked_attempts)
    if total == 0:
        return 0
    need = share * total
    covered = 0
    for n, a in enumerate(ranked_attempts, 1):
        covered += a
        if covered >= need - 1e-9 * total:
            return n
    return len(ranked_attempts)


def advise(tally: AccountTally, allowlists: Allowlists | None, max_additions: int = DEFAULT_MAX_ADDITIONS) -> Advice:
    """Rank the account's candidates, taking the allowlists in force now (None: unknown) into account."""
    already: dict[str, list[str]] = {}
    open_pairs: list[tuple[str, str, int]] = []
    for itype, ext, attempts in tally.groups():
        if allowlists is not None and ext in allowlists.get(itype, ()):
            already.setdefault(itype, []).append(ext)
        else:
            open_pairs.append((itype, ext, attempts))
    open_pairs.sort(key=lambda p: (-p[2], p[0], p[1]))
    cands: list[Candidate] = []
    cumulative = 0
    for itype, ext, attempts in open_pairs:
        cumulative += attempts
        cands.append(Candidate(itype, ext, attempts, candidate_kind(ext, attempts), cumulative))
    return Advice(
        candidates=tuple(cands),
        total=tally.would_be_denies,
        remaining=cumulative,
        already={t: sorted(v) for t, v in sorted(already.items())},
        evidence=tally.report_only,
        max_additions=max_additions,
    )
