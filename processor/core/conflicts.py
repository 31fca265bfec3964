"""Attempt ids reused with different content: counted, in bounded memory (contract §7.1, §10).

An attempt id is the producer's, and nothing stops two different attempts from carrying the same
one (a buggy producer, or an attacker hiding an action behind a benign attempt's id). Event ids no
longer collide for them (events.event_id covers the whole identity of the attempt), but an operator
wants to know it happens: `access_eval_attempt_id_conflicts_total`.
"""

from __future__ import annotations

from processor.core.attempts import Attempt

#: Attempt ids remembered per replica (two generations of at most half each). At ~100 bytes an entry
#: (two ints and a dict slot; the ids themselves are not kept, only their hashes) about 10 MB at most.
DEFAULT_CAPACITY = 100_000


class AttemptIdConflicts:
    """Remembers a digest of the content of the last `capacity` distinct attempt ids seen, and says
    when an id comes back with different content. Best effort: an id older than the bound, or seen
    by another replica (another partition), is not compared. A re-delivery of the same content is
    never a conflict; each attempt whose content differs from the first remembered one is.

    Keys and digests are Python hashes (SipHash, keyed per process, so not chosen by an attacker);
    two different ids or contents sharing a 64-bit hash among 100,000 entries is negligible.
    """

    __slots__ = ("_half", "_old", "_young")

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        self._half = max(capacity // 2, 1)
        self._young: dict[int, int] = {}
        self._old: dict[int, int] = {}

    def __len__(self) -> int:
        return len(self._young) + len(self._old)

    def observe(self, attempt: Attempt) -> bool:
        """Remember the attempt; True when its id was seen (within the bound) with other content."""
        a = attempt.data
        ident = a["identity"]
        key = hash(a["id"])
        digest = hash((a["account_id"], ident["type"], ident["iam_id"], ident["account_id"], a["action"],
                       attempt.event_ms))
        young = self._young
        known = young.get(key)
        if known is None:
            known = self._old.get(key)
            if len(young) >= self._half:  # a new generation: the oldest half is forgotten at once
                self._old, self._young = young, {}
                young = self._young
            young[key] = digest if known is None else known
        return known is not None and known != digest
