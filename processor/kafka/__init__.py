"""The Kafka edge: client configurations, topic checks, the settings table, the schema registry,
and the readers and publisher the tools share."""
