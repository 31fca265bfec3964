"""Schema registry unit tests (SPEC §6 Confluent wire format): configuration pass-through, registration
under `<topic>-value` and id resolution with confluent-kafka's in-process mock registry (`mock://`),
and basic auth over HTTP against a minimal stub of the two REST endpoints the client uses.

Interop with a real registry (Apicurio Registry through its Confluent-compatible API: the processor,
`tail`, `report`, evolution, outages, concurrency) is tests/kafka/test_registry_apicurio*.py. The stub stays
only for what the local registry does not cover: basic-auth credentials reaching the server, and 401.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import pytest

from processor.cli.main import main as cli_main
from processor.codec.avro import CONFLUENT_MAGIC, EvalCodec, load_schema_json
from processor.config import ConfigError, kafka_only, load
from processor.kafka import registry
from processor.stream.app import build_codec
from tests.support.kafka_harness import Topics, free_port
from tests.support.processor_harness import produce

REPO = Path(__file__).resolve().parents[2]
USER, PASSWORD = "svc-user", "s3cret:with:colons"


# --- a stub of the Confluent schema registry REST API ------------------------------------------------


class StubHandler(BaseHTTPRequestHandler):
    """The REST endpoints of one `StubRegistry` (`stub`, set by a subclass per registry)."""

    stub: StubRegistry

    def log_message(self, *args: Any) -> None:
        pass

    def _authorized(self) -> bool:
        header = self.headers.get("Authorization")
        self.stub.requests.append((self.command, self.path, header))
        if self.stub.userinfo is None:
            return True
        expected = "Basic " + base64.b64encode(self.stub.userinfo.encode()).decode()
        if header == expected:
            return True
        self._reply(401, {"error_code": 40101, "message": "Unauthorized"})
        return False

    def _reply(self, code: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/vnd.schemaregistry.v1+json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:
        if not self._authorized():
            return
        parts = urlparse(self.path).path.strip("/").split("/")
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
        if len(parts) != 3 or parts[0] != "subjects" or parts[2] != "versions":
            self._reply(404, {"error_code": 404, "message": "not found"})
            return
        canonical = json.dumps(json.loads(body["schema"]), sort_keys=True)
        if canonical not in self.stub.schemas:
            self.stub.schemas.append(canonical)
        sid = self.stub.schemas.index(canonical) + 1
        versions = self.stub.subjects.setdefault(unquote(parts[1]), [])
        if sid not in versions:
            versions.append(sid)
        self._reply(200, {"id": sid})

    def do_GET(self) -> None:
        if not self._authorized():
            return
        parts = urlparse(self.path).path.strip("/").split("/")
        if len(parts) == 3 and parts[:2] == ["schemas", "ids"] and parts[2].isdigit():
            sid = int(parts[2])
            if 1 <= sid <= len(self.stub.schemas):
                self._reply(200, {"schema": self.stub.schemas[sid - 1]})
                return
            self._reply(404, {"error_code": 40403, "message": "Schema not found"})
            return
        self._reply(404, {"error_code": 404, "message": "not found"})


class StubRegistry:
    """Just the endpoints the client uses for register and lookup, with optional basic auth."""

    def __init__(self, userinfo: str | None = None) -> None:
        self.userinfo = userinfo
        self.schemas: list[str] = []  # id = index + 1
        self.subjects: dict[str, list[int]] = {}
        self.requests: list[tuple[str, str, str | None]] = []
        handler = type("Handler", (StubHandler,), {"stub": self})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def stub() -> Iterator[StubRegistry]:
    s = StubRegistry(userinfo=f"{USER}:{PASSWORD}")
    yield s
    s.close()


@pytest.fixture
def auth_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ACCESS_EVAL_SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO", f"{USER}:{PASSWORD}")


def sample_event(n: int, target: str = "acct-1", decision: str = "Deny") -> dict[str, Any]:
    now = int(time.time() * 1000)
    return {
        "id": f"00000000-0000-5000-8000-{n:012d}",
        "action": "iam-access-management.account-settings.eval",
        "eventTime": now,
        "attemptId": f"att-{n}",
        "initiator": {"id": f"iam-{n}", "typeURI": "user", "name": None, "authnAccountId": "ext-1",
                      "host": {"address": None, "agent": None}},
        "target": {"accountId": target, "id": None, "serviceName": None, "action": "svc.read"},
        "responseData": {"decision": decision, "isEnforced": False, "state": "monitor", "allowlisted": False,
                         "settingsVersion": {"effectiveTime": None, "topic": None, "partition": None,
                                             "offset": None, "exact": True}},
        "outcome": "failure", "severity": "normal",
        "reason": {"reasonCode": 403, "reasonType": "test"},
        "observer": {"name": "access-eval", "version": "test", "evaluatedAt": now},
        "truncated": False,
    }


def evolved_schema() -> dict[str, Any]:
    """A compatible next version: one new optional field (what a v2 producer would register)."""
    s = load_schema_json()
    s["fields"].append({"name": "region", "type": ["null", "string"], "default": None, "doc": "new in v2"})
    return s


# --- configuration pass-through -----------------------------------------------------------------------


def test_registry_conf_from_properties_and_environment() -> None:
    props = {
        "bootstrap.servers": "k:9092",
        "sasl.password": "kafka-secret",
        "schema.registry.basic.auth.user.info": "file-user:file-pw",
        "schema.registry.ssl.ca.location": "/etc/ca.pem",
        "schema.registry.url": "http://ignored-here",
    }
    conf = registry.registry_conf("https://sr:8081", props, env={})
    assert conf == {"url": "https://sr:8081", "basic.auth.user.info": "file-user:file-pw",
                    "ssl.ca.location": "/etc/ca.pem", "timeout": registry.DEFAULT_TIMEOUT_S}
    env = {"ACCESS_EVAL_SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO": "env-user:env-pw",
           "ACCESS_EVAL_SCHEMA_REGISTRY_SSL_CERTIFICATE_LOCATION": "/etc/cert.pem",
           "ACCESS_EVAL_SCHEMA_REGISTRY_TIMEOUT": "5",
           "ACCESS_EVAL_SCHEMA_REGISTRY_URL": "http://the-flag-env-not-an-option"}
    conf = registry.registry_conf("https://sr:8081", props, env=env)
    assert conf["basic.auth.user.info"] == "env-user:env-pw"  # environment wins over the file
    assert conf["ssl.certificate.location"] == "/etc/cert.pem" and conf["timeout"] == 5
    assert "url" in conf and conf["url"] == "https://sr:8081"
    # Java-client style un-prefixed key
    conf = registry.registry_conf("http://sr", {"basic.auth.user.info": "u:p",
                                                "basic.auth.credentials.source": "USER_INFO"}, env={})
    assert conf == {"url": "http://sr", "basic.auth.user.info": "u:p", "timeout": registry.DEFAULT_TIMEOUT_S}
    # registry keys never reach librdkafka
    assert kafka_only({**props, "basic.auth.user.info": "u:p"}) == {
        "bootstrap.servers": "k:9092", "sasl.password": "kafka-secret"}


def test_registry_conf_rejects_unknown_options() -> None:
    with pytest.raises(ConfigError, match=r"unknown schema registry option.*ssl\.ca\.locaton"):
        registry.registry_conf("http://sr", {"schema.registry.ssl.ca.locaton": "/x"}, env={})
    with pytest.raises(ConfigError, match="must be an integer"):
        registry.registry_conf("http://sr", {}, env={"ACCESS_EVAL_SCHEMA_REGISTRY_TIMEOUT": "soon"})


# --- confluent-kafka's mock registry --------------------------------------------------------------------


def test_codec_for_topic_registers_under_topic_name_strategy() -> None:
    url = f"mock://reg-{time.time_ns()}"
    codec = registry.codec_for_topic(url, "iam.access-evaluations", {})
    assert codec.schema_id is not None
    client = registry.client_for(registry.registry_conf(url, {}, env={}))
    latest = client.get_latest_version("iam.access-evaluations-value")
    assert latest.schema_id == codec.schema_id
    assert json.loads(latest.schema.schema_str) == load_schema_json()
    # idempotent: the same schema gets the same id
    assert registry.codec_for_topic(url, "iam.access-evaluations", {}).schema_id == codec.schema_id

    data = codec.encode(sample_event(1))
    assert data[:1] == CONFLUENT_MAGIC and int.from_bytes(data[1:5], "big") == codec.schema_id
    decoded = EvalCodec().decode(data, registry.resolver(url, {}))
    assert decoded["attemptId"] == "att-1"


def test_reader_resolves_an_evolved_writer_schema_by_id() -> None:
    url = f"mock://reg-{time.time_ns()}"
    new = evolved_schema()
    new_id = registry.register(url, "evals", {}, schema=new)
    writer = EvalCodec(schema_id=new_id, schema=new)
    rec = {**sample_event(2), "region": "eu-de"}
    decoded = EvalCodec().decode(writer.reference_encode(rec), registry.resolver(url, {}))
    assert decoded["attemptId"] == "att-2" and "region" not in decoded  # read with the current schema
    with pytest.raises(LookupError, match="schema id 999"):
        EvalCodec().decode(CONFLUENT_MAGIC + (999).to_bytes(4, "big") + b"\x00", registry.resolver(url, {}))


def test_processor_build_codec_uses_the_registry() -> None:
    url = f"mock://run-{time.time_ns()}"
    cfg = load({"bootstrap_servers": "127.0.0.1:1", "schema_registry_url": url, "eval_topic": "my.evals"})
    codec = build_codec(cfg)
    assert codec.schema_id is not None and codec.header[:1] == CONFLUENT_MAGIC
    client = registry.client_for(registry.registry_conf(url, {}, env={}))
    assert client.get_latest_version("my.evals-value").schema_id == codec.schema_id
    assert dict(codec.headers)["avro.schema.id"] == str(codec.schema_id).encode()


def test_tail_resolves_ids_through_a_mock_registry(topics: Topics, capsys: pytest.CaptureFixture[str]) -> None:
    """In-process (the mock registry lives in this process): tail decodes events written with two ids."""
    topics.create(partitions=1, only=[topics.evals])
    url = f"mock://tail-{time.time_ns()}"
    current = registry.codec_for_topic(url, topics.evals, {})
    new = evolved_schema()
    v2 = EvalCodec(schema_id=registry.register(url, topics.evals, {}, schema=new), schema=new)
    assert v2.schema_id != current.schema_id
    produce(topics.bootstrap, topics.evals, [
        (b"acct-1", current.encode(sample_event(1))),
        (b"acct-1", v2.reference_encode({**sample_event(2), "region": "us-south"})),
    ])
    code = cli_main(["tail", "--bootstrap-servers", topics.bootstrap, "--eval-topic", topics.evals,
                     "--from-beginning", "--schema-registry-url", url])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert [json.loads(x)["attemptId"] for x in out.out.splitlines()] == ["att-1", "att-2"]


# --- over HTTP, with basic auth -----------------------------------------------------------------------------


def test_basic_auth_passes_through_over_http(stub: StubRegistry, auth_env: None) -> None:
    codec = registry.codec_for_topic(stub.url, "evals", {})
    assert codec.schema_id == 1 and stub.subjects == {"evals-value": [1]}
    expected = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    assert stub.requests and all(h == expected for _m, _p, h in stub.requests)
    decoded = EvalCodec().decode(codec.encode(sample_event(3)), registry.resolver(stub.url, {}))
    assert decoded["attemptId"] == "att-3"


def test_basic_auth_from_the_properties_file(stub: StubRegistry, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ACCESS_EVAL_SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO", raising=False)
    props = {"schema.registry.basic.auth.user.info": f"{USER}:{PASSWORD}", "max.retries": "0"}
    assert registry.codec_for_topic(stub.url, "from-file", props).schema_id == 1


def test_wrong_credentials_are_a_config_error_and_unreachable_is_retryable(
    stub: StubRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ACCESS_EVAL_SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO", f"{USER}:wrong")
    with pytest.raises(ConfigError, match="BASIC_AUTH_USER_INFO") as info:
        registry.codec_for_topic(stub.url, "evals", {})
    assert "evals-value" in str(info.value) and "\n" not in str(info.value)
    monkeypatch.setenv("ACCESS_EVAL_SCHEMA_REGISTRY_MAX_RETRIES", "0")
    with pytest.raises(registry.RegistryUnavailable, match="cannot register"):  # retried by `run`
        registry.codec_for_topic(f"http://127.0.0.1:{free_port()}", "evals", {})


def test_run_gives_up_on_a_registry_that_never_answers() -> None:
    """A registry that accepts connections and never answers: each request times out
    (`DEFAULT_TIMEOUT_S`, since confluent-kafka's client would wait forever) and --startup-timeout-s
    applies, exit 2. Before the default timeout this start-up hung."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            with contextlib.suppress(OSError):
                held.append(server.accept()[0])  # never read, never answered

    threading.Thread(target=accept, daemon=True).start()
    url = f"http://127.0.0.1:{server.getsockname()[1]}"
    try:
        started = time.monotonic()
        proc = subprocess.run(
            [sys.executable, "-m", "processor", "run", "--bootstrap-servers", "127.0.0.1:1", "--metrics-port", "0",
             "--schema-registry-url", url, "--startup-timeout-s", "2"],
            cwd=REPO, capture_output=True, text=True, timeout=90,
            env={**os.environ, "ACCESS_EVAL_SCHEMA_REGISTRY_MAX_RETRIES": "0"},
        )
        took = time.monotonic() - started
    finally:
        stop.set()
        for conn in held:
            conn.close()
        server.close()
    assert held, "the processor never connected to the silent registry"
    assert proc.returncode == 2, proc.stderr
    assert "cannot register the eval event schema" in proc.stderr and "gave up after 2s" in proc.stderr
    assert "Traceback" not in proc.stderr
    print(f"exit 2 after {took:.1f} s")
