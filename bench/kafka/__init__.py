"""Sections of `bench/bench_kafka.py`, the Kafka benchmark (one module per section)."""
