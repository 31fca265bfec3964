"""The settings table's local state (`--state-dir`): its snapshot file, for restarts that read only the tail.

At start (`restore`) a usable snapshot is loaded and the table reads the topic from its offsets; any
other (missing, corrupt, another format, topic, topic id or cluster, ahead of the topic) is ignored with
one log line and the table is read from the beginning as without a state directory. After the bootstrap
(`save`) the table, untouched by attempts so far, is written: encoded here (the loop has not started),
then fsync'd and renamed into place by a thread, so a reader sees the old file or the new one, whole.
Only then: later the table is pruned by stream time and no longer what a bootstrap builds.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any, BinaryIO

from confluent_kafka import KafkaError, KafkaException, TopicCollection
from confluent_kafka.admin import AdminClient

from processor.core import snapshot
from processor.core.settings import SettingsHistory
from processor.kafka import clients
from processor.logs import kv

log = logging.getLogger("access_eval.settings")

FILE = "settings.snapshot"
#: Errors of describe_topics that mean the cluster has no topic ids to give (older brokers).
NO_TOPIC_IDS = {KafkaError._UNSUPPORTED_FEATURE, KafkaError.UNSUPPORTED_VERSION}


#: A snapshot loaded at start is rewritten once the tail read after it exceeds this share of the accounts
#: (and MIN_TAIL offsets): encoding costs about as much CPU as reading ~50,000 records (bench/README.md),
#: and a restart reads the tail since the snapshot, not since the last start.
REWRITE_SHARE = 0.01
MIN_TAIL = 10_000


def worth_rewriting(restored: dict[int, int], positions: dict[int, int], accounts: int) -> bool:
    tail = sum(end - restored.get(p, 0) for p, end in positions.items())
    return tail > max(MIN_TAIL, accounts * REWRITE_SHARE)


class LocalState:
    """The snapshot file of one settings topic in `directory` (several instances may share it: each
    writes its own temporary file, and a rename replaces the snapshot whole)."""

    def __init__(self, directory: Path, props: dict[str, Any], topic: str) -> None:
        self.path = directory / FILE
        self.props = props
        self.topic = topic
        self._tmp = directory / f".{FILE}.{socket.gethostname()}.{os.getpid()}.tmp"
        self.cluster_id: str | None = None
        self.topic_id: str | None = None
        #: The offsets a snapshot was loaded at (None: none was).
        self.restored: dict[int, int] | None = None
        self.writer: threading.Thread | None = None
        for stale in directory.glob(f".{FILE}.{socket.gethostname()}.*.tmp"):  # left by a killed process
            with contextlib.suppress(OSError):
                stale.unlink()

    def restore(self, history: SettingsHistory, table: Any) -> dict[int, int] | None:
        """Load a usable snapshot into the empty `history`: the offsets to read the topic on from, or None
        (one log line says why). KafkaException while the topic cannot be described: the caller retries."""
        self.cluster_id, ends = table.describe()
        self.topic_id = self._topic_id()
        started, cpu = time.monotonic(), time.thread_time()
        got = self._read(ends)
        if isinstance(got, str):
            log.info("settings snapshot not used; reading the topic from the beginning",
                     extra=kv(path=str(self.path), reason=got))
            return None
        origin, body = got
        snapshot.restore(history, origin, body)
        self.restored = dict(origin.offsets)
        log.info("settings snapshot loaded; reading the topic on from its offsets",
                 extra=kv(path=str(self.path), accounts=len(history), versions=history.versions,
                          offsets=self.restored, seconds=round(time.monotonic() - started, 3),
                          cpu_seconds=round(time.thread_time() - cpu, 3)))
        return self.restored

    def _read(self, ends: dict[int, int]) -> tuple[snapshot.Origin, snapshot.Body] | str:
        """The snapshot's origin and body if it fits the topic as it is now, else why not."""
        try:
            with self.path.open("rb") as fh:
                reader = snapshot.Reader(fh.read)
                reason = snapshot.check(reader.origin, self.topic, self.cluster_id, self.topic_id, ends)
                return reason if reason is not None else (reader.origin, reader.load())
        except FileNotFoundError:
            return "no snapshot yet"
        except OSError as exc:
            return f"cannot read it: {exc.strerror}"
        except snapshot.Unusable as exc:
            return str(exc)

    def save(self, history: SettingsHistory, positions: dict[int, int]) -> None:
        """Write the table as read up to `positions`, unless a snapshot was loaded and the tail read since
        is short (`worth_rewriting`). A failure is logged and the instance goes on: it is only a cache."""
        if self.restored is not None and not worth_rewriting(self.restored, positions, len(history)):
            return
        origin = snapshot.Origin(self.topic, self.cluster_id, self.topic_id, dict(positions))
        started, cpu = time.monotonic(), time.thread_time()
        try:
            fh = self._tmp.open("wb")
            for piece in snapshot.encode(history, origin):
                fh.write(piece)
            fh.flush()
        except OSError as exc:
            self._not_written(exc)
            return
        # CPU of this thread, which the loop waits for (librdkafka's threads run meanwhile)
        encoded = {"encode_seconds": round(time.monotonic() - started, 3),
                   "encode_cpu_seconds": round(time.thread_time() - cpu, 3), "bytes": fh.tell()}
        # Not a daemon: the interpreter waits for it at exit, so a stop right after start keeps the file.
        self.writer = threading.Thread(target=self._commit, args=(fh, encoded), name="access-eval-snapshot")
        self.writer.start()

    def _commit(self, fh: BinaryIO, encoded: dict[str, Any]) -> None:
        """fsync, rename over the snapshot, fsync the directory: whole or not at all, also on a power cut."""
        started = time.monotonic()
        try:
            with fh:
                os.fsync(fh.fileno())
            os.replace(self._tmp, self.path)
            dir_fd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError as exc:
            self._not_written(exc)
            return
        log.info("settings snapshot written",
                 extra=kv(path=str(self.path), sync_seconds=round(time.monotonic() - started, 3), **encoded))

    def _not_written(self, exc: OSError) -> None:
        log.warning("settings snapshot not written; the next start reads the whole topic",
                    extra=kv(path=str(self.path), error=exc.strerror or str(exc)))
        with contextlib.suppress(OSError):
            self._tmp.unlink()

    def _topic_id(self) -> str | None:
        """The topic's id, which a deleted and re-created topic of the same name does not share."""
        admin = AdminClient(clients.admin_conf(self.props))
        future = admin.describe_topics(TopicCollection([self.topic]), request_timeout=10)[self.topic]
        try:
            return str(future.result().topic_id)
        except KafkaException as exc:
            if exc.args[0].code() in NO_TOPIC_IDS:
                return None
            raise
