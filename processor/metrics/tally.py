"""`Tally`: what one Kafka transaction did, held back until the transaction commits (counters move only
for committed work: an aborted transaction is replayed later, and counting it now would count its
attempts twice)."""

from __future__ import annotations

from collections import defaultdict
from typing import Final

from processor.core.outcomes import INVALID, OUTCOMES

#: Outcomes that :meth:`Tally.add` accepts (``invalid`` goes through :meth:`Tally.add_invalid`).
DECISION_OUTCOMES: Final[frozenset[str]] = frozenset(OUTCOMES) - {INVALID}

_Key = tuple[str, str, str, str]


class Tally:
    """What one Kafka transaction did, held back until the transaction commits.

    The processor counts a batch in a local dict and calls ``add`` once per distinct key with the
    count; label mapping and validation of the rarer fields happen once per distinct key in
    :meth:`Metrics.commit`.
    """

    __slots__ = ("_ages", "_counts", "_invalid", "_n")

    def __init__(self) -> None:
        self._counts: defaultdict[_Key, int] = defaultdict(int)
        self._invalid: defaultdict[str, int] = defaultdict(int)
        self._ages: list[float] = []
        self._n = 0

    def add(self, outcome: str, identity_type: str, state: str, account_id: str, n: int = 1) -> None:
        """Count `n` evaluated attempts alike.

        ``state`` is the identity type's state (``""`` when the outcome does not depend on it,
        ``enabled``, ``monitor`` or ``limited``); ``account_id`` is the target account, used only
        for opted-in per-account labels. An unknown outcome raises ValueError here, at the call
        site, rather than after the transaction committed.
        """
        if outcome not in DECISION_OUTCOMES:
            raise ValueError(f"unknown outcome {outcome!r}; expected one of {sorted(DECISION_OUTCOMES)}")
        self._counts[(outcome, identity_type, state, account_id)] += n
        self._n += n

    def add_invalid(self, reason: str) -> None:
        """Count one attempt sent to the DLQ (outcome ``invalid``) with its reason."""
        self._invalid[reason] += 1
        self._n += 1

    def observe_age(self, seconds: float) -> None:
        """Record one event-age sample (now - event_time); the caller decides how often to sample."""
        self._ages.append(seconds)

    def clear(self) -> None:
        """Forget everything (after commit, or when the transaction aborted)."""
        self._counts.clear()
        self._invalid.clear()
        self._ages.clear()
        self._n = 0

    def merge(self, other: Tally) -> None:
        """Add ``other``'s counts and samples to this tally (``other`` is left unchanged)."""
        for key, n in other._counts.items():
            self._counts[key] += n
        for reason, n in other._invalid.items():
            self._invalid[reason] += n
        self._ages.extend(other._ages)
        self._n += other._n

    def __len__(self) -> int:
        """Number of attempts tallied (valid and invalid)."""
        return self._n

    def __repr__(self) -> str:
        return f"Tally(attempts={self._n}, keys={len(self._counts)}, invalid={dict(self._invalid)})"
