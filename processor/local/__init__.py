"""The local development Kafka broker, generated workload and the demo."""
