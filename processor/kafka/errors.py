"""Kafka error classification: the client error codes retrying cannot fix and what they ask the
operator to change, the ones a metadata refresh fixes, and those of the transactional producer's state
(fenced, fatal). One home, because `run`'s startup (`admin`), its loop and transaction (`stream/`), the
settings table and the tools (`tools/`) decide on them."""

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
#: Errors of an end-offsets query that mean the client's idea of the partition's leader is stale
#: (broker failover): asking for metadata once fixes them.
STALE_LEADER_ERRORS = {
    KafkaError._UNKNOWN_PARTITION,
    KafkaError._DESTROY_BROKER,
    KafkaError.NOT_LEADER_FOR_PARTITION,
    KafkaError.LEADER_NOT_AVAILABLE,
}
#: Errors that mean another producer with our transactional.id took over (the transaction re-creates
#: its producer, and exits 2 when fenced again soon: another live instance shares the id).
FENCED_ERRORS = {KafkaError._FENCED, KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH}
#: produce() errors of the producer's state, not of the record (the transaction's failure policy handles them).
PRODUCER_STATE_ERRORS = FENCED_ERRORS | {KafkaError._STATE, KafkaError._FATAL}
