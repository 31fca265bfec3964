"""Authorization (ACL) failure while running: exit 3, one line naming what to fix, nothing lost.

A broker of its own with the StandardAuthorizer and a SASL/PLAIN listener. The processor runs as
`alice`, whose ACLs allow exactly what `run` needs; the test then revokes one of them (WRITE on the
eval topic, READ on the group) while the processor is serving. docs/contract.md §8: an authentication
or authorization failure while running exits 3 (one found at start-up is a misconfiguration: 2). The
batch that failed is not committed, so once the ACL is back a restarted processor evaluates those
attempts, exactly once.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka.admin import (
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
)

from tests.support.fault_harness import OwnBroker, problem_lines, run_to_exit
from tests.support.kafka_harness import Topics
from tests.support.processor_harness import (
    committed_offsets,
    produce,
    read_evals,
    settings_record,
    start_processor,
    wait_all_committed,
)
from tests.support.strategies import ACCOUNTS, BASE_MS, attempt_obj, dumps, settings_obj

pytestmark = [pytest.mark.kafka, pytest.mark.faults]

USERS = {"admin": "admin-secret", "alice": "alice-secret"}
ALICE = "User:alice"
#: The processor as alice, over SASL/PLAIN.
ALICE_ENV = {"ACCESS_EVAL_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "ACCESS_EVAL_KAFKA_SASL_MECHANISM": "PLAIN",
             "ACCESS_EVAL_KAFKA_SASL_USERNAME": "alice", "ACCESS_EVAL_KAFKA_SASL_PASSWORD": USERS["alice"],
             # A member refused READ on its group cannot leave it: a short session lets the restart in soon.
             "ACCESS_EVAL_KAFKA_SESSION_TIMEOUT_MS": "3000", "ACCESS_EVAL_KAFKA_HEARTBEAT_INTERVAL_MS": "500"}
#: The PLAINTEXT and controller listeners authenticate nobody (User:ANONYMOUS): the test's own admin
#: and producers use them, as super users; only the SASL listener is subject to ACLs.
AUTHORIZER = {
    "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
    "super.users": "User:ANONYMOUS;User:admin",
    "allow.everyone.if.no.acl.found": "false",
}
TARGET, OTHER = ACCOUNTS[0], ACCOUNTS[1]


@pytest.fixture(scope="module")
def acl_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OwnBroker]:
    broker = OwnBroker(tmp_path_factory.mktemp("acl-kafka"), sasl_users=USERS, extra=AUTHORIZER)
    try:
        broker.start()
        yield broker
    finally:
        broker.stop()


def binding(rtype: ResourceType, name: str, op: AclOperation) -> AclBinding:
    return AclBinding(rtype, name, ResourcePatternType.LITERAL, ALICE, "*", op, AclPermissionType.ALLOW)


def alice_acls(topics: Topics, txn_id: str) -> list[AclBinding]:
    """What `run` needs, and no more: read the inputs, write the outputs, its group and transactional id."""
    t = ResourceType.TOPIC
    return [
        binding(t, topics.settings, AclOperation.READ),
        binding(t, topics.settings, AclOperation.DESCRIBE_CONFIGS),  # the cleanup.policy=compact check
        binding(t, topics.attempts, AclOperation.READ),
        binding(t, topics.evals, AclOperation.WRITE),
        binding(t, topics.dlq, AclOperation.WRITE),
        binding(ResourceType.GROUP, topics.group, AclOperation.READ),
        binding(ResourceType.TRANSACTIONAL_ID, txn_id, AclOperation.WRITE),
    ]


def apply(admin: AdminClient, create: list[AclBinding] | None = None,
          delete: list[AclBindingFilter] | None = None) -> None:
    for fut in (admin.create_acls(create) if create else {}).values():
        fut.result(30)
    for fut in (admin.delete_acls(delete) if delete else {}).values():
        fut.result(30)


def attempts(first: int, n: int) -> list[tuple[bytes, bytes]]:
    """External-user attempts into TARGET (monitor, no allowlist): every one is emitted, would-be deny."""
    return [(TARGET.encode(), dumps(attempt_obj(TARGET, OTHER, "user", BASE_MS + 60_000 + i, attempt_id=f"att-{i}")))
            for i in range(first, first + n)]


def revoke(admin: AdminClient, topics: Topics, revoked: str) -> None:
    """Delete alice's WRITE on the eval topic ("eval-topic-write") or her READ on the group."""
    gone = (binding(ResourceType.TOPIC, topics.evals, AclOperation.WRITE) if revoked == "eval-topic-write"
            else binding(ResourceType.GROUP, topics.group, AclOperation.READ))
    apply(admin, delete=[AclBindingFilter(gone.restype, gone.name, gone.resource_pattern_type, gone.principal,
                                          gone.host, gone.operation, gone.permission_type)])


def restart_evaluates_the_rest(topics: Topics, sasl: Topics, tmp_path: Path, env: dict[str, str], n: int) -> None:
    """A new life of instance "a" (as alice, on `sasl`) evaluates what is left: attempts att-0..att-{n-1}
    once each overall (read back through the super user's `topics`), and logs no error of its own."""
    q = start_processor(sasl, tmp_path, instance="a", env=env)
    try:
        q.wait_ready(90)
        wait_all_committed(topics.bootstrap, topics.group, topics.attempts)
        assert q.terminate() == 0, q.log()
    finally:
        q.kill()
    seen = Counter(e["attemptId"] for _, e in read_evals(topics.bootstrap, topics.evals))
    assert seen == Counter({f"att-{i}": 1 for i in range(n)}), (
        f"missing {sorted(set(f'att-{i}' for i in range(n)) - set(seen))[:5]}, "
        f"duplicated {[a for a, c in seen.items() if c > 1][:5]}")
    assert all(json.loads(line).get("level") != "error" for line in q.log_path.read_text().splitlines()
               if line.startswith("{") and '"logger": "access_eval.librdkafka"' not in line)


@pytest.mark.parametrize(("revoked", "refusal"), [("eval-topic-write", "Topic authorization failed"),
                                                  ("group-read", "Group authorization failed")])
def test_acl_revoked_while_running_exits_3_and_loses_nothing(acl_broker: OwnBroker, tmp_path: Path, revoked: str,
                                                             refusal: str) -> None:
    topics = Topics.for_test(acl_broker.bootstrap, f"acl-{revoked}")
    topics.create(partitions=2)  # through the PLAINTEXT listener (super user)
    txn_id = f"{topics.group}-a"  # start_processor's transactional id for instance "a"
    admin = AdminClient({"bootstrap.servers": acl_broker.bootstrap})
    grants = alice_acls(topics, txn_id)
    apply(admin, create=grants)
    produce(topics.bootstrap, topics.settings,
            [settings_record(settings_obj(TARGET, {"user": {"state": "monitor"}}, "2026-06-01T00:00:00Z"))])
    sasl = dataclasses.replace(topics, bootstrap=acl_broker.sasl_bootstrap)
    env = ALICE_ENV

    # Control: with its ACLs alice's processor serves, so what follows is the revocation, not the setup.
    p = start_processor(sasl, tmp_path, env=env)
    try:
        p.wait_ready(90)
        produce(topics.bootstrap, topics.attempts, attempts(0, 200))
        wait_all_committed(topics.bootstrap, topics.group, topics.attempts)
        before = committed_offsets(topics.bootstrap, topics.group, topics.attempts)
        # These ACLs are enough: no client of the processor was refused anything (the settings table's
        # reader uses the processor's --group-id, so no ACL for another group is needed).
        refused = [line for line in p.log_path.read_text().splitlines() if "authorization failed" in line.lower()]
        assert not refused, refused

        revoke(admin, topics, revoked)
        produce(topics.bootstrap, topics.attempts, attempts(200, 200))
        started = time.monotonic()
        rc, lines = run_to_exit(p, 60)
        took = time.monotonic() - started
    finally:
        p.kill()
    errors = problem_lines(lines)
    assert rc == 3, "\n".join(lines[-40:])
    assert len(errors) == 1, errors
    assert "authorization failed" in errors[0] and refusal in errors[0], errors
    assert "ACLs" in errors[0] and "WRITE on --eval-topic" in errors[0] and "sasl.username" in errors[0], errors
    assert not any("Traceback" in line for line in lines)
    assert USERS["alice"] not in "\n".join(lines), "the password must not be logged"
    print(f"exit 3 {took:.1f} s after the revocation")
    # Nothing of the failed batch was committed: the group's offsets did not move past what it had done.
    assert committed_offsets(topics.bootstrap, topics.group, topics.attempts) == before

    # The ACL back, a restart evaluates what the failed run left, exactly once overall.
    apply(admin, create=grants)
    restart_evaluates_the_rest(topics, sasl, tmp_path, env, n=400)
