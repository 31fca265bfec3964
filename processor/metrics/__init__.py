"""Prometheus metrics of the stream processor (SPEC §9: the names are an interface).

Every metric is declared here, next to the bounded label sets, so the interface can be read in one
place. What feeds them lives beside it: `tally` (work held back until its transaction commits), `lag`
(librdkafka's statistics read as consumer lag) and `cgroup` (the container's memory limit).

Two rules shape this module:

* **Counters move only for committed work** (SPEC §8). The processing loop tallies a batch in a
  :class:`~processor.metrics.tally.Tally` and hands it to :meth:`Metrics.commit` only after the Kafka transaction that
  carries the batch committed. An aborted transaction is replayed later; counting it now would
  count its attempts twice.
* **Label values are bounded.** Every label value comes from a closed set (identity types,
  outcomes, DLQ and settings-rejection reasons) or from configuration (per-account labels, capped).
  Anything unexpected is folded into ``other`` / ``invalid_field`` instead of creating a series,
  so a malicious or buggy producer can never blow up Prometheus' memory.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any, Final

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.gc_collector import GCCollector

from processor import __version__
from processor.core.attempts import INVALID_REASONS
from processor.core.ids import IDENTITY_TYPES, normalize_account
from processor.core.outcomes import (
    ENFORCED_DENY,
    ENFORCING_STATE,
    INVALID,
    OUTCOMES,
    PERMIT,
    REPORT_ONLY_STATE,
    WOULD_BE_DENY,
)
from processor.core.settings import REJECT_REASONS
from processor.metrics.cgroup import memory_limit_bytes
from processor.metrics.lag import assigned_lags, consumer_stats
from processor.metrics.tally import Tally
from processor.native import core_build

log = logging.getLogger(__name__)

#: Label value for an identity type outside the closed set (should not happen: such attempts are invalid).
OTHER: Final = "other"
PERMIT_STATES: Final[tuple[str, ...]] = (REPORT_ONLY_STATE, ENFORCING_STATE)
FALLBACK_INVALID_REASON: Final = "invalid_field"
#: Settings rejection reasons (SPEC §3); anything else is reported as ``other``.
SETTINGS_REJECT_REASONS: Final[tuple[str, ...]] = (*REJECT_REASONS, "other")
TRANSACTION_RESULTS: Final[tuple[str, ...]] = ("committed", "aborted")
#: The setting that configures per-account labels; named in errors so operators know what to fix.
ACCOUNT_LABELS_SETTING: Final = "ACCESS_EVAL_ACCOUNT_LABELS"
DEFAULT_MAX_ACCOUNT_LABELS: Final = 100

#: Event age: from sub-second (live) to a day (replaying a backlog, SPEC §5 retention window).
EVENT_AGE_BUCKETS: Final[tuple[float, ...]] = (
    0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0,
    1800.0, 3600.0, 7200.0, 21600.0, 43200.0, 86400.0,
)  # fmt: skip
#: Batch processing time: 1 ms .. 10 s.
BATCH_SECONDS_BUCKETS: Final[tuple[float, ...]] = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
#: Transaction commit time: 1 ms .. 10 s (with the commit interval, what an eval event waits to be visible).
COMMIT_SECONDS_BUCKETS: Final[tuple[float, ...]] = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
BATCH_SIZE_BUCKETS: Final[tuple[float, ...]] = (
    1, 10, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 25000, 50000,
)  # fmt: skip


class Metrics:
    """All metrics of one processor instance, on their own registry.

    A private registry (rather than prometheus_client's global one) lets tests build many
    instances, and keeps /metrics exactly what this class declares plus process metrics.
    """

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        account_labels: Iterable[str] = (),
        max_account_labels: int = DEFAULT_MAX_ACCOUNT_LABELS,
    ) -> None:
        accounts = sorted({n for n in map(normalize_account, account_labels) if n})
        if len(accounts) > max_account_labels:
            raise ValueError(
                f"{ACCOUNT_LABELS_SETTING} lists {len(accounts)} accounts; at most {max_account_labels} "
                "may carry per-account metric labels (each adds series to Prometheus): shorten the list"
            )
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        self.account_labels: frozenset[str] = frozenset(accounts)
        r = self.registry

        self._declare_decisions(r, accounts)
        self._declare_batches(r)
        self._declare_settings(r)
        self._declare_client(r)

        # Standard process_* / python_* metrics on this registry (the global one already has them).
        if r is not REGISTRY:
            ProcessCollector(registry=r)
            PlatformCollector(registry=r)
            GCCollector(registry=r)

        self._identity_label: dict[str, str] = {t: t for t in IDENTITY_TYPES}
        self._invalid_label: dict[str, str] = {x: x for x in INVALID_REASONS}

    # --- the declarations, one group of the interface each ------------------------------------

    def _declare_decisions(self, r: CollectorRegistry, accounts: list[str]) -> None:
        """Decisions (SPEC §9), every bounded series created at 0 so rate() sees the first increment."""
        self.permits = Counter(
            "access_eval_permits_total",
            "Cross-account attempts allowed by the allowlist, by identity type and state (committed work).",
            ["identity_type", "state"],
            registry=r,
        )
        self.would_be_denies = Counter(
            "access_eval_would_be_denies_total",
            "Cross-account attempts that limited would deny, from identity types in monitor (report-only).",
            ["identity_type"],
            registry=r,
        )
        self.enforced_denies = Counter(
            "access_eval_enforced_denies_total",
            "Cross-account attempts denied by identity types in limited.",
            ["identity_type"],
            registry=r,
        )
        self.attempts = Counter(
            "access_eval_attempts_total",
            "Attempts processed, by outcome (SPEC §5); every attempt lands in exactly one outcome.",
            ["outcome"],
            registry=r,
        )
        self.invalid = Counter(
            "access_eval_invalid_total",
            "Attempts sent to the dead-letter topic, by reason.",
            ["reason"],
            registry=r,
        )
        self.account_decisions: Counter | None = None
        if self.account_labels:
            self.account_decisions = Counter(
                "access_eval_account_decisions_total",
                f"Attempts by target account and outcome, only for accounts listed in {ACCOUNT_LABELS_SETTING}.",
                ["account_id", "outcome"],
                registry=r,
            )
        # Pre-initialise every bounded series to 0 so rate()/increase() see the first increment.
        for outcome in OUTCOMES:
            self.attempts.labels(outcome=outcome)
        for reason in INVALID_REASONS:
            self.invalid.labels(reason=reason)
        for it in IDENTITY_TYPES:
            for st in PERMIT_STATES:
                self.permits.labels(identity_type=it, state=st)
            self.would_be_denies.labels(identity_type=it)
            self.enforced_denies.labels(identity_type=it)
        if self.account_decisions is not None:
            for account in accounts:
                for outcome in OUTCOMES:
                    if outcome != INVALID:
                        self.account_decisions.labels(account_id=account, outcome=outcome)

    def _declare_batches(self, r: CollectorRegistry) -> None:
        """Latency, event age, batches and transactions."""
        self.event_age = Histogram(
            "access_eval_event_age_seconds",
            "Age of attempts when evaluated (evaluation wall clock - event_time), sampled, committed work.",
            buckets=EVENT_AGE_BUCKETS,
            registry=r,
        )
        self.batch_seconds = Histogram(
            "access_eval_batch_processing_seconds",
            "Time to process one batch: validate, evaluate, produce its events (commit: access_eval_commit_seconds).",
            buckets=BATCH_SECONDS_BUCKETS,
            registry=r,
        )
        self.commit_seconds = Histogram(
            "access_eval_commit_seconds",
            "Time to commit one transaction (exactly-once: offsets + commit; at-least-once: flush + offset commit).",
            buckets=COMMIT_SECONDS_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "access_eval_batch_size",
            "Attempts per batch (one batch = one Kafka transaction).",
            buckets=BATCH_SIZE_BUCKETS,
            registry=r,
        )
        self.attempt_id_conflicts = Counter(
            "access_eval_attempt_id_conflicts_total",
            "Emitted attempts whose id was seen lately with other content (best effort; docs/contract.md §7.1).",
            registry=r,
        )
        self.transactions = Counter(
            "access_eval_transactions_total",
            "Kafka transactions by result (committed|aborted).",
            ["result"],
            registry=r,
        )
        for result in TRANSACTION_RESULTS:
            self.transactions.labels(result=result)
        self.last_commit = Gauge(
            "access_eval_last_commit_timestamp_seconds",
            "Unix time of the last committed transaction (0 = none yet).",
            registry=r,
        )

    def _declare_settings(self, r: CollectorRegistry) -> None:
        """The settings view (SPEC §3)."""
        self.settings_accounts = Gauge(
            "access_eval_settings_accounts", "Accounts with settings held in memory.", registry=r
        )
        self.settings_versions = Gauge(
            "access_eval_settings_versions",
            "Settings versions held in memory (all accounts, within the retention window).",
            registry=r,
        )
        self.settings_invalid_latest = Gauge(
            "access_eval_settings_accounts_invalid_latest",
            "Accounts whose latest settings record was rejected (the previous valid version stays in force "
            "until compaction removes it).",
            registry=r,
        )
        self.settings_without_valid = Gauge(
            "access_eval_settings_accounts_without_valid_version",
            "Accounts whose latest settings record was rejected and that have no valid version held at all.",
            registry=r,
        )
        self.settings_bootstrap = Gauge(
            "access_eval_settings_bootstrap_complete",
            "1 once the settings view caught up to the settings topic's end offsets at start-up.",
            registry=r,
        )
        self.settings_records = Counter(
            "access_eval_settings_records_total",
            "Settings records applied to the settings view (including tombstones).",
            registry=r,
        )
        self.settings_rejects = Counter(
            "access_eval_settings_rejected_total",
            "Settings records rejected; the previous version stays in force.",
            ["reason"],
            registry=r,
        )
        for reason in SETTINGS_REJECT_REASONS:
            self.settings_rejects.labels(reason=reason)
        self.settings_unknown_types = Counter(
            "access_eval_settings_unknown_identity_types_total",
            "Unknown identity-type keys seen in settings records (ignored for forward compatibility).",
            registry=r,
        )
        self.settings_downgrades = Counter(
            "access_eval_settings_downgrades_total",
            "Settings records that turned an identity type of an account from monitor/limited to enabled.",
            ["identity_type"],
            registry=r,
        )
        for itype in IDENTITY_TYPES:
            self.settings_downgrades.labels(identity_type=itype)

    def _declare_client(self, r: CollectorRegistry) -> None:
        """The Kafka client, health, the build and the memory limit."""
        self.consumer_lag = Gauge(
            "access_eval_consumer_lag",
            "Messages between the partition's end (LSO for read_committed) and this consumer's position.",
            ["topic", "partition"],
            registry=r,
        )
        #: Lag series each librdkafka client reported last time, keyed by the client's handle name,
        #: so that one client's stats never delete another client's series.
        self._lag_series: dict[str, set[tuple[str, str]]] = {}
        self.ready = Gauge("access_eval_ready", "1 when the instance is ready (serving /readyz 200).", registry=r)
        self.assigned_partitions = Gauge(
            "access_eval_assigned_partitions", "Attempt partitions assigned to this instance.", registry=r
        )
        self.build_info = Gauge(
            "access_eval_build_info",
            "Build information; the value is always 1. core: compiled, interpreted or mixed (processor/native.py).",
            ["version", "core"],
            registry=r,
        )
        self.build_info.labels(version=__version__, core=core_build()).set(1)
        self.memory_limit = Gauge(
            "access_eval_memory_limit_bytes", "The container's memory limit (cgroup), 0 when there is none.",
            registry=r,
        )
        self.memory_limit.set(memory_limit_bytes())


    # --- committed work -----------------------------------------------------------------------

    def tally(self) -> Tally:
        """A fresh Tally (convenience; ``Tally()`` is equivalent)."""
        return Tally()

    def commit(self, tally: Tally) -> None:
        """Apply a tally whose Kafka transaction committed. The caller clears the tally afterwards.

        Aggregates per label set first, so each Prometheus child is incremented once per commit.
        """
        attempts: dict[str, int] = defaultdict(int)
        permits: dict[tuple[str, str], int] = defaultdict(int)
        wbd: dict[str, int] = defaultdict(int)
        enforced: dict[str, int] = defaultdict(int)
        per_account: dict[tuple[str, str], int] = defaultdict(int)
        track_accounts = self.account_decisions is not None
        for (outcome, identity_type, state, account_id), n in tally._counts.items():
            attempts[outcome] += n
            it = self._identity_label.get(identity_type, OTHER)
            if outcome == PERMIT:
                permits[(it, state if state in PERMIT_STATES else OTHER)] += n
            elif outcome == WOULD_BE_DENY:
                wbd[it] += n
            elif outcome == ENFORCED_DENY:
                enforced[it] += n
            if track_accounts:
                account = normalize_account(account_id)
                if account in self.account_labels:
                    per_account[(account, outcome)] += n
        invalid: dict[str, int] = defaultdict(int)
        for reason, n in tally._invalid.items():
            invalid[self._invalid_label.get(reason, FALLBACK_INVALID_REASON)] += n
            attempts[INVALID] += n

        for outcome, n in attempts.items():
            self.attempts.labels(outcome=outcome).inc(n)
        for (it, st), n in permits.items():
            self.permits.labels(identity_type=it, state=st).inc(n)
        for it, n in wbd.items():
            self.would_be_denies.labels(identity_type=it).inc(n)
        for it, n in enforced.items():
            self.enforced_denies.labels(identity_type=it).inc(n)
        for reason, n in invalid.items():
            self.invalid.labels(reason=reason).inc(n)
        if self.account_decisions is not None:
            for (account, outcome), n in per_account.items():
                self.account_decisions.labels(account_id=account, outcome=outcome).inc(n)
        observe = self.event_age.observe
        for age in tally._ages:
            observe(age if age > 0.0 else 0.0)  # future-dated attempts (within --max-future-ms) are 0 s old

    def observe_batch(self, seconds: float, size: int) -> None:
        """Record one batch's processing time and size."""
        self.batch_seconds.observe(seconds)
        self.batch_size.observe(size)

    def observe_commit(self, seconds: float) -> None:
        """Record one successful commit's duration."""
        self.commit_seconds.observe(seconds)

    def attempt_id_conflict(self) -> None:
        self.attempt_id_conflicts.inc()

    def transaction(self, result: str) -> None:
        """Count a transaction ``committed`` or ``aborted``; a commit also stamps the last-commit time."""
        if result not in TRANSACTION_RESULTS:
            raise ValueError(f"transaction result must be one of {TRANSACTION_RESULTS}, not {result!r}")
        self.transactions.labels(result=result).inc()
        if result == "committed":
            self.last_commit.set(time.time())

    # --- settings view ------------------------------------------------------------------------

    def bind_settings(self, history: Any) -> None:
        """Read the settings gauges from `history` (a SettingsHistory) at every scrape, so they follow
        every change, pruning included, without the code that changes it reporting back."""
        self.settings_accounts.set_function(lambda: len(history))
        self.settings_versions.set_function(lambda: history.versions)
        self.settings_invalid_latest.set_function(history.invalid_latest_count)
        self.settings_without_valid.set_function(history.without_valid_version_count)

    def set_settings_size(self, accounts: int, versions: int) -> None:
        """Accounts and versions currently held by the settings view (superseded by `bind_settings`)."""
        self.settings_accounts.set(accounts)
        self.settings_versions.set(versions)

    def settings_applied(self, records: int = 1) -> None:
        """Settings records (values or tombstones) were applied (the bootstrap counts a batch at once)."""
        self.settings_records.inc(records)

    def settings_rejected(self, reason: str) -> None:
        """One settings record was rejected; unknown reasons are reported as ``other``."""
        label = reason if reason in SETTINGS_REJECT_REASONS else "other"
        self.settings_rejects.labels(reason=label).inc()

    def settings_unknown_identity_types(self, n: int) -> None:
        """``n`` unknown identity-type keys were ignored in a settings record."""
        if n > 0:
            self.settings_unknown_types.inc(n)

    def settings_downgraded(self, identity_types: list[str]) -> None:
        """One record made these identity types of an account unrestricted (a downgrade)."""
        for itype in identity_types:
            self.settings_downgrades.labels(identity_type=itype).inc()

    def set_bootstrap_complete(self, done: bool) -> None:
        """Whether the settings view has caught up to the end offsets seen at start-up."""
        self.settings_bootstrap.set(1 if done else 0)

    # --- health, Kafka client -----------------------------------------------------------------

    def bind_health(self, ready: Callable[[], bool], assigned: Callable[[], int]) -> None:
        """Compute the ready and assigned-partitions gauges at scrape time from these callables."""
        self.ready.set_function(lambda: 1.0 if ready() else 0.0)
        self.assigned_partitions.set_function(lambda: float(assigned()))

    def update_from_stats(self, stats_json: str) -> None:
        """Update consumer-lag gauges from a librdkafka statistics JSON (the ``stats_cb`` payload).

        Only consumer handles and partitions assigned to them count (`lag.assigned_lags`); an unknown
        lag keeps the previous value.
        Series for partitions that the same client no longer reports are removed, so the series
        count stays bounded by the partitions actually assigned. Malformed stats are logged and
        ignored: metrics must never break processing.
        """
        try:
            stats = consumer_stats(stats_json)
            if stats is None:
                return
            client = str(stats.get("name", ""))
            seen: set[tuple[str, str]] = set()
            for key, lag in assigned_lags(stats):
                seen.add(key)
                if lag is not None:
                    self.consumer_lag.labels(topic=key[0], partition=key[1]).set(lag)
            previous = self._lag_series.get(client, set())
            others = set().union(*(s for c, s in self._lag_series.items() if c != client))
            for topic_name, partition in previous - seen - others:
                with contextlib.suppress(KeyError):
                    self.consumer_lag.remove(topic_name, partition)
            self._lag_series[client] = seen
        except (ValueError, TypeError, AttributeError) as exc:
            log.warning("ignoring malformed librdkafka statistics: %s", exc)

    def reset_consumer_lag(self) -> None:
        """Drop every lag series (call when a consumer is closed: its partitions are no longer ours)."""
        self.consumer_lag.clear()
        self._lag_series.clear()
