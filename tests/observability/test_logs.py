"""processor.logs.redact: what the start-up line may show of the client configuration."""

from __future__ import annotations

import pytest

from processor.logs import redact, redact_text

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


# --- redaction by rule (issue 27): names with password/secret/token/jaas/oauthbearer.config/key ---------

RULE_SECRETS = [
    "sasl.oauthbearer.config", "sasl.jaas.config", "sasl.oauthbearer.client.secret", "bearer.auth.token",
    "schema.registry.bearer.auth.token", "ssl.key.location", "ssl.keystore.location", "sasl.kerberos.keytab",
    "some.future.api.key", "basic.auth.user.info", "schema.registry.basic.auth.user.info", "X_TOKEN",
]


@pytest.mark.parametrize("key", RULE_SECRETS)
def test_every_name_the_rule_covers_is_masked(key: str) -> None:
    assert redact({key: "s3cr3t"}) == {key: "***"}


@pytest.mark.parametrize(("url", "shown"), [
    ("http://user:pass@registry:8081", "http://***@registry:8081"),
    ("https://user@registry/path?x=1", "https://***@registry/path?x=1"),
    ("HTTPS://u:p%40ss@h", "HTTPS://***@h"),
    ("http://registry:8081", "http://registry:8081"),
    ("a, http://a:b@h1 and mock://c:d@h2/x", "a, http://***@h1 and mock://***@h2/x"),
])
def test_url_user_info_is_masked_in_any_value(url: str, shown: str) -> None:
    assert redact({"schema.registry.url": url}) == {"schema.registry.url": shown}
    assert redact_text(url) == shown


def test_the_json_log_line_masks_user_info_and_secret_fields_wherever_they_are() -> None:
    import json
    import logging

    from processor.logs import JsonFormatter, kv

    record = logging.LogRecord("t", logging.WARNING, __file__, 1, "cannot reach http://u:hunter2@h:1/subjects",
                               None, None)
    record.fields = kv(url="http://u:hunter2@h:1", error="GET http://u:hunter2@h:1 failed",
                       config={"sasl.oauthbearer.config": "clientSecret=hunter2"})["fields"]
    line = JsonFormatter().format(record)
    assert "hunter2" not in line
    entry = json.loads(line)
    assert entry["url"] == "http://***@h:1" and entry["config"] == {"sasl.oauthbearer.config": "***"}


def test_the_registry_retry_warning_and_error_never_show_the_urls_password(caplog: pytest.LogCaptureFixture) -> None:
    import logging

    from processor.kafka.registry import RegistryUnavailable, register, register_when_available
    from processor.logs import JsonFormatter

    url = "http://alice:hunter2@127.0.0.1:9"  # nothing listens on port 9 (discard)
    no_retries = {"schema.registry.max.retries": "0"}
    def retry_warnings() -> list[logging.LogRecord]:
        return [r for r in caplog.records if "retrying" in r.getMessage()]

    with caplog.at_level("WARNING", logger="access_eval"):
        assert register_when_available(url, "evals", no_retries, stop=lambda: bool(retry_warnings())) is None
    lines = [JsonFormatter().format(r) for r in retry_warnings()]
    assert lines, f"no retry warning in {[r.getMessage() for r in caplog.records]}"
    assert all("hunter2" not in line for line in lines), lines
    with pytest.raises(RegistryUnavailable) as raised:
        register(url, "evals", no_retries)
    assert "hunter2" not in str(raised.value) and "***@127.0.0.1:9" in str(raised.value)


# --- librdkafka log floods (issue 27: ~97 identical lines within 1 ms for a wrong SASL password) -------


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _sasl_line(i: int) -> tuple[str, tuple[str, ...]]:
    detail = f"sasl_plaintext://127.0.0.1:{40000 + i % 3}/bootstrap: SASL authentication error: Authentication " \
             f"failed: Invalid username or password (after {i} ms in state AUTH_REQ)"
    return "%s [%s] %s", ("FAIL", "rdkafka#consumer-1", detail)


def test_repeated_librdkafka_lines_are_collapsed_with_a_count(caplog: pytest.LogCaptureFixture) -> None:
    import logging

    from processor.kafka.clients import LIBRDKAFKA_LOGGER
    from processor.logs import RepeatFilter

    log = logging.getLogger(LIBRDKAFKA_LOGGER + ".test")
    clock = _Clock()
    log.addFilter(RepeatFilter(window_s=10.0, clock=clock))
    with caplog.at_level("INFO", logger=log.name):
        for i in range(97):
            log.error(*_sasl_line(i)[:1], *_sasl_line(i)[1])
        log.warning("%s [%s] %s", "BROKERFAIL", "rdkafka#consumer-1", "another message")
        assert len(caplog.records) == 2
        clock.now += 10.5
        log.error(*_sasl_line(98)[:1], *_sasl_line(98)[1])
    first, other, after = caplog.records
    assert "Invalid username or password" in first.getMessage() and "another" in other.getMessage()
    assert after.fields["repeated"] == 96  # type: ignore[attr-defined]


def test_every_librdkafka_client_logger_collapses_repeats() -> None:
    import logging

    from processor.kafka.clients import LIBRDKAFKA_LOGGER, admin_conf
    from processor.logs import RepeatFilter

    logger = admin_conf({"bootstrap.servers": "h:1"})["logger"]
    assert logger is logging.getLogger(LIBRDKAFKA_LOGGER)
    assert any(isinstance(f, RepeatFilter) for f in logger.filters)
