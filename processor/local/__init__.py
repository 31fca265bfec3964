"""A real single-node Kafka broker on this machine (`access-eval local`), the demo and its workload.

The broker's public surface: `start`, `stop`, `status` (`processor.local.broker`), `fetch_jars`
(`processor.local.fetch`) and the data/cache locations (`processor.local.paths`).
"""

from processor.errors import LocalKafkaError
from processor.local.broker import DEFAULT_PORT, BrokerInfo, start, status, stop
from processor.local.fetch import KAFKA_VERSION, fetch_jars
from processor.local.paths import default_cache_dir, default_data_dir

__all__ = [
    "DEFAULT_PORT",
    "KAFKA_VERSION",
    "BrokerInfo",
    "LocalKafkaError",
    "default_cache_dir",
    "default_data_dir",
    "fetch_jars",
    "start",
    "status",
    "stop",
]
