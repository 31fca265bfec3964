"""processor.logs.redact: what the start-up line may show of the client configuration."""

from __future__ import annotations

import pytest

from processor.logs import redact

SECRETS = [
    "sasl.password", "SASL.PASSWORD", "ssl.key.password", "ssl.keystore.password", "ssl.truststore.password",
    "ssl.key.pem", "sasl.oauthbearer.client.secret", "schema.registry.basic.auth.credentials", "private.key",
]
PUBLIC = ["bootstrap.servers", "sasl.username", "security.protocol", "sasl.mechanism", "client.id",
          "ssl.ca.location", "session.timeout.ms"]


@pytest.mark.parametrize("key", SECRETS)
def test_secret_values_are_masked(key: str) -> None:
    assert redact({key: "s3cr3t"}) == {key: "***"}


@pytest.mark.parametrize("key", PUBLIC)
def test_other_values_are_kept(key: str) -> None:
    assert redact({key: "v"}) == {key: "v"}


def test_redact_copies_and_keeps_every_key() -> None:
    conf = {"sasl.password": "pw", "bootstrap.servers": "h:1", "ssl.key.password": "kp"}
    out = redact(conf)
    assert conf == {"sasl.password": "pw", "bootstrap.servers": "h:1", "ssl.key.password": "kp"}, "input mutated"
    assert out == {"sasl.password": "***", "bootstrap.servers": "h:1", "ssl.key.password": "***"}
    assert "pw" not in repr(out) and "kp" not in repr(out)
