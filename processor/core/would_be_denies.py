"""What switching to limited would deny: eval events counted per account, external account and time.

One pass over the eval events feeds `WouldBeDenies`; `processor.core.allowlist_advice` turns the
counts into the report (ranking, coverage, readiness class) and `processor.tools.report` renders it.
Shared by `report` (one account or the fleet) and `simulate --summary`.

Memory: the counts grow with distinct (account, identity type, external account) groups and, for the
identity figures, distinct (account, identity) pairs (16-32 bytes each in the fleet view); the time
series with accounts x buckets. The one part that grows with events is the de-duplication of event
ids (`SeenIds`): 16-32 bytes per event read in the window.
"""

from __future__ import annotations

from array import array
from collections.abc import Container, Hashable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from processor.core.ids import normalize_account
from processor.core.outcomes import ENFORCED_DENY, OUTCOMES, PERMIT, event_outcome
from processor.core.times import rfc3339_millis, to_millis

MAX_ACTIONS = 20
NORM_CACHE = 1 << 16
HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
#: Windows up to this long get an hourly series; longer ones a daily series.
HOURLY_UP_TO_MS = 48 * HOUR_MS


@dataclass(frozen=True, slots=True)
class Window:
    """The event-time window of a report: `since_ms` <= eventTime; `until_ms` is "now"."""

    since_ms: int
    until_ms: int
    text: str = ""

    @property
    def bucket_ms(self) -> int:
        return HOUR_MS if self.until_ms - self.since_ms <= HOURLY_UP_TO_MS else DAY_MS

    @property
    def origin_ms(self) -> int:
        """Start of the first bucket: `since_ms` rounded down to a UTC hour or day."""
        return self.since_ms - self.since_ms % self.bucket_ms

    def buckets(self, last_ms: int | None = None) -> int:
        """Buckets from the window's start up to now (or a later event, within the max-future bound)."""
        end = max(self.until_ms, last_ms if last_ms is not None else self.until_ms)
        return (end - self.origin_ms) // self.bucket_ms + 1


class SeenIds:
    """Exact membership of event ids in an open-addressing table of 64-bit fingerprints.

    A Python set of the ids would take ~100 bytes per event; this takes 8 bytes per slot at most
    half full. The fingerprint is the id's 64-bit string hash (a collision, ~n²/2⁶⁵, would drop one
    event: about 3e-8 for a million events).
    """

    __slots__ = ("_mask", "_slots", "size")

    def __init__(self, capacity: int = 1024) -> None:
        n = 1 << max(4, (capacity * 2 - 1).bit_length())
        self._slots = array("Q", bytes(8 * n))
        self._mask = n - 1
        self.size = 0

    def add(self, event_id: Hashable) -> bool:
        """True when the id is new (and records it), False for a copy already seen."""
        fp = (hash(event_id) & 0xFFFF_FFFF_FFFF_FFFF) or 1
        slots, mask = self._slots, self._mask
        i = fp & mask
        while True:
            v = slots[i]
            if v == 0:
                break
            if v == fp:
                return False
            i = (i + 1) & mask
        slots[i] = fp
        self.size += 1
        if self.size * 2 > mask:
            self._grow()
        return True

    def _grow(self) -> None:
        old = self._slots
        n = len(old) * 2
        self._slots = slots = array("Q", bytes(8 * n))
        self._mask = mask = n - 1
        for fp in old:
            if fp:
                i = fp & mask
                while slots[i]:
                    i = (i + 1) & mask
                slots[i] = fp

    @property
    def nbytes(self) -> int:
        return len(self._slots) * 8


class PairTally:
    """Would-be denies of one account from one (identity type, external account), with `detail=True`."""

    __slots__ = ("actions", "attempts", "first_ms", "identities", "last_ms")

    def __init__(self, event_ms: int) -> None:
        self.attempts = 0
        self.first_ms = event_ms
        self.last_ms = event_ms
        self.identities: set[str] = set()
        self.actions: set[str] = set()


class IdentityTally:
    """Would-be denies of one identity from one external account (kept with `detail=True`)."""

    __slots__ = ("actions", "agent", "attempts", "first_ms", "last_ms", "name")

    def __init__(self, event_ms: int) -> None:
        self.attempts = 0
        self.agent: str | None = None
        self.actions: set[str] = set()
        self.first_ms = event_ms
        self.last_ms = event_ms
        self.name: str | None = None


class AccountTally:
    """Everything one account's eval events in the window say."""

    __slots__ = ("by_identity", "counts", "duplicates", "enforced_denies", "first_ms", "identities",
                 "identity_count", "last_ms", "pairs", "permits", "series", "would_be_denies")

    def __init__(self, detail: bool) -> None:
        self.permits = 0
        self.would_be_denies = 0
        self.enforced_denies = 0
        self.duplicates = 0
        self.first_ms: int | None = None
        self.last_ms: int | None = None
        #: identity type -> external account -> would-be denies: all the fleet view keeps per pair
        #: (nested, not keyed by tuples: a tuple per pair would be a fifth of the fleet view's memory)
        self.counts: dict[str, dict[str, int]] = {}
        #: the same groups with times, identities and actions (`detail=True` only)
        self.pairs: dict[tuple[str, str], PairTally] = {}
        #: distinct identities: their ids with `detail=True`; else only their number (`identity_count`),
        #: counted through `WouldBeDenies.seen_identities`
        self.identities: set[str] = set()
        self.identity_count = 0
        #: bucket index (from `Window.origin_ms`) -> would-be denies
        self.series: dict[int, int] = {}
        self.by_identity: dict[tuple[str, str, str], IdentityTally] | None = {} if detail else None

    def groups(self) -> Iterator[tuple[str, str, int]]:
        """(identity type, external account, would-be denies) of every group."""
        for itype, exts in self.counts.items():
            for ext, n in exts.items():
                yield itype, ext, n

    @property
    def distinct_identities(self) -> int:
        return len(self.identities) if self.by_identity is not None else self.identity_count

    @property
    def report_only(self) -> int:
        """Report-only (monitor) evaluations: the evidence a readiness claim rests on."""
        return self.permits + self.would_be_denies


def event_millis(value: Any) -> int:
    return to_millis(value) if isinstance(value, datetime) else int(value)


class WouldBeDenies:
    """Counts eval events per account: outcomes, would-be denies per (identity type, external account),
    distinct identities, a time series; each event id once.

    `accounts`: only these accounts (None: every account). `detail`: also identities and actions per
    group and the per-identity breakdown (one account's report; the fleet view does without).
    """

    def __init__(
        self, window: Window | None = None, *, accounts: Container[str] | None = None, detail: bool = False
    ) -> None:
        self.window = window
        self.only = accounts
        self.detail = detail
        self.outcomes: dict[str, int] = dict.fromkeys(OUTCOMES, 0)
        self.accounts: dict[str, AccountTally] = {}
        self.seen = SeenIds()
        #: (account, identity) pairs seen, for the identity counts without keeping the ids (fleet view)
        self.seen_identities = SeenIds()
        self.foreign = 0
        #: target account ids as written -> normalised, for the accounts counted (10,000s at most in
        #: the fleet view): an account's events repeat its id, normalised once
        self._norm: dict[str, str] = {}
        #: the window's first bucket and bucket size, computed once (not per would-be deny)
        self._buckets = (window.origin_ms, window.bucket_ms) if window is not None else None

    def count(self, outcome: str) -> None:
        """An outcome without an event to count (`simulate`: attempts that emit none)."""
        self.outcomes[outcome] += 1

    def tally(self, account: str) -> AccountTally:
        t = self.accounts.get(account)
        if t is None:
            t = self.accounts[account] = AccountTally(self.detail)
        return t

    def add_event(self, event: Mapping[str, Any]) -> None:
        """One decoded eval event (schemas/eval_event.avsc shape; eventTime as ms or datetime)."""
        target, ini, rd = event["target"], event["initiator"], event["responseData"]
        host = ini.get("host") or {}
        self.add_fields(event["id"], event_millis(event["eventTime"]), target["accountId"], rd["state"],
                        rd["decision"], ini["typeURI"], ini["authnAccountId"], ini["id"], target["action"],
                        ini.get("name"), host.get("agent"))

    def add_fields(
        self, event_id: str, event_ms: int, account_id: str, state: str, decision: str, identity_type: str,
        external_account: str, iam_id: str, action: str, name: str | None, agent: str | None,
    ) -> None:
        """One eval event as its fields (`codec.eval_fields.ReportFields.flat` gives them in this order):
        the report's per-event path, without building the event's nested dicts."""
        account = self._norm.get(account_id)
        if account is None:
            account = normalize_account(account_id)
            if self.only is not None and account not in self.only:
                return
            if len(self._norm) < NORM_CACHE:
                self._norm[account_id] = account
        if self.window is not None and event_ms < self.window.since_ms:
            return
        outcome = event_outcome(state, decision)
        if outcome is None:
            self.foreign += 1
            return
        t = self.accounts.get(account)
        if t is None:
            t = self.accounts[account] = AccountTally(self.detail)
        if not self.seen.add(event_id):
            t.duplicates += 1
            return
        t.first_ms = event_ms if t.first_ms is None or event_ms < t.first_ms else t.first_ms
        t.last_ms = event_ms if t.last_ms is None or event_ms > t.last_ms else t.last_ms
        self.outcomes[outcome] += 1
        if outcome == PERMIT:
            t.permits += 1
        elif outcome == ENFORCED_DENY:
            t.enforced_denies += 1
        else:
            self._deny(account, t, identity_type, normalize_account(external_account), iam_id, event_ms, action,
                       name, agent)

    def add_deny(
        self,
        account_id: str,
        identity_type: str,
        external_account: str,
        iam_id: str,
        event_ms: int,
        action: str,
        name: str | None = None,
    ) -> None:
        """A would-be deny known without an event (`simulate --summary`; its outcome is counted with
        `count`): no id, so no de-duplication."""
        self._deny(account_id, self.tally(account_id), identity_type, external_account, iam_id, event_ms, action, name)

    def _deny(
        self, account: str, t: AccountTally, itype: str, ext: str, iam_id: str, event_ms: int, action: str,
        name: str | None, agent: str | None = None,
    ) -> None:
        t.would_be_denies += 1
        per_ext = t.counts.get(itype)
        if per_ext is None:
            per_ext = t.counts[itype] = {}
        per_ext[ext] = per_ext.get(ext, 0) + 1
        if self._buckets is not None:
            b = (event_ms - self._buckets[0]) // self._buckets[1]
            t.series[b] = t.series.get(b, 0) + 1
        if t.by_identity is None:
            if self.seen_identities.add((account, iam_id)):
                t.identity_count += 1
            return
        t.identities.add(iam_id)
        g = t.pairs.get((itype, ext))
        if g is None:
            g = t.pairs[(itype, ext)] = PairTally(event_ms)
        g.attempts += 1
        g.first_ms = min(g.first_ms, event_ms)
        g.last_ms = max(g.last_ms, event_ms)
        g.identities.add(iam_id)
        if len(g.actions) < MAX_ACTIONS:
            g.actions.add(action)
        ig = t.by_identity.get((ext, itype, iam_id))
        if ig is None:
            ig = t.by_identity[(ext, itype, iam_id)] = IdentityTally(event_ms)
        ig.attempts += 1
        if len(ig.actions) < MAX_ACTIONS:
            ig.actions.add(action)
        ig.first_ms = min(ig.first_ms, event_ms)
        ig.last_ms = max(ig.last_ms, event_ms)
        if name:
            ig.name = name
        if agent and event_ms >= ig.last_ms:
            ig.agent = agent

    # -- parallel readers ----------------------------------------------------------------------

    @staticmethod
    def shared_accounts(parts: list[WouldBeDenies]) -> set[str]:
        """Accounts counted by more than one part: for them `merge` would not be exact."""
        seen: set[str] = set()
        shared: set[str] = set()
        for part in parts:
            shared |= seen & part.accounts.keys()
            seen |= part.accounts.keys()
        return shared

    def merge(self, parts: list[WouldBeDenies]) -> None:
        """Add the counts of `parts` (each fed a disjoint share of the events) to this one.

        Exact when no account was counted by two parts (`shared_accounts` is empty): every figure of
        an account then comes from one part, whose de-duplication saw all of that account's events
        (an event id names its account: copies of an event are never split between accounts).
        Counted per account only, so the parts' id tables are not needed and are not merged.
        """
        for part in parts:
            clash = self.accounts.keys() & part.accounts.keys()
            if clash:
                raise ValueError(f"{len(clash)} accounts counted by two readers: the merge would not be exact")
            self.accounts.update(part.accounts)
            for outcome, n in part.outcomes.items():
                self.outcomes[outcome] += n
            self.foreign += part.foreign

    def without_id_tables(self) -> WouldBeDenies:
        """This aggregate without its de-duplication tables (what a reader process sends back)."""
        out = WouldBeDenies(self.window, accounts=None, detail=self.detail)
        out.accounts, out.outcomes, out.foreign = self.accounts, self.outcomes, self.foreign
        out.seen = out.seen_identities = SeenIds(0)
        return out

    # -- `simulate --summary` -------------------------------------------------------------------

    def rows(self) -> list[dict[str, Any]]:
        """Every (account, identity type, external account) group, most attempts first."""
        flat = [((acct, itype, ext), g) for acct, t in self.accounts.items() for (itype, ext), g in t.pairs.items()]
        flat.sort(key=lambda kv: (-kv[1].attempts, kv[0]))
        return [
            {
                "account_id": acct,
                "identity_type": itype,
                "external_account_id": ext,
                "attempts": g.attempts,
                "identities": len(g.identities),
                "first_seen": rfc3339_millis(g.first_ms),
                "last_seen": rfc3339_millis(g.last_ms),
                "actions": sorted(g.actions),
            }
            for (acct, itype, ext), g in flat
        ]

    def summary(self) -> dict[str, Any]:
        return {"outcomes": dict(self.outcomes), "would_be_denies": self.rows()}
