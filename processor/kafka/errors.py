"""Kafka error classification: which client error codes retrying cannot fix, and what each asks the
operator to change. One home, because `run`'s startup (`admin`), its loop and transaction (`stream/`)
and the tools (`tools/`) all decide on the same codes."""

from __future__ import annotations

from confluent_kafka import KafkaError

#: Errors that mean the credentials or permissions are wrong: retrying will not fix them.
AUTH_ERRORS = {
    KafkaError._AUTHENTICATION,
    KafkaError.SASL_AUTHENTICATION_FAILED,
    KafkaError.TOPIC_AUTHORIZATION_FAILED,
    KafkaError.GROUP_AUTHORIZATION_FAILED,
    KafkaError.CLUSTER_AUTHORIZATION_FAILED,
    KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
}
#: What an authorization failure asks the operator to fix: the ACLs `run` needs (docs/configuration.md).
ACL_HINT = (
    "check the ACLs of the Kafka principal (sasl.username / ACCESS_EVAL_KAFKA_SASL_USERNAME): READ on "
    "--settings-topic, --attempts-topic and --group-id, WRITE on --eval-topic, --dlq-topic and --transactional-id"
)
