"""The pure core: data models, the SPEC §5 decision and the eval event, with no I/O, no clock and no Kafka."""
