"""The settings table of `run` for the in-memory fakes (tests/support/fake_kafka.py): bootstrapped at once."""

from __future__ import annotations

from typing import Any


class FakeTable:
    """The settings table, bootstrapped at once: every account of `ACCOUNTS` monitors every identity type
    with an empty allowlist, so every cross-account attempt is a would-be deny and emits one eval event."""

    ACCOUNTS = ("acct-a", "acct-b")

    def __init__(self, props: Any, topic: str, history: Any, metrics: Any = None, group_id: str = "") -> None:
        self.history = history
        self.topic = topic

    def start(self, timeout_s: float = 30.0) -> None:
        import json

        doc = {"user": {"state": "monitor"}, "service_id": {"state": "monitor"}, "service": {"state": "monitor"}}
        for i, acct in enumerate(self.ACCOUNTS):
            value = json.dumps(
                {"account_id": acct, "external_account_identity_interaction": {"identity_types": doc}}
            ).encode()
            self.history.apply_record(acct.encode(), value, 1_000, self.topic, 0, i)

    def refresh_targets(self, timeout_s: float = 10.0) -> None:
        pass

    def caught_up(self) -> bool:
        return True

    def poll(self, timeout_s: float = 0.0, max_records: int = 10_000) -> int:
        return 0

    def ensure_fresh(self, staleness_s: float, stop: Any = None, on_wait: Any = None) -> bool:
        return True

    def settle(self) -> None:
        """The real table gives freed heap back after its bootstrap; nothing to give back here."""

    def close(self) -> None:
        pass
