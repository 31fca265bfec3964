"""/livez while `run` waits for an unreachable broker (item 9): waiting is progress, not a reason to restart."""

from __future__ import annotations

import json
from pathlib import Path

from tests.support.kafka_harness import Topics, wait_until
from tests.support.processor_harness import start_processor


def test_unreachable_broker_stays_live_past_the_bound(tmp_path: Path) -> None:
    nowhere = Topics.for_test("127.0.0.1:1", "unreachable")
    p = start_processor(nowhere, tmp_path, "--shutdown-timeout-s", "5", env={"ACCESS_EVAL_LIVENESS_BOUND_S": "1"})
    try:
        wait_until(lambda: p.get("/readyz")[0] == 503, 30, "/readyz to answer")
        # three retries (0.5 + 1 + 2 s of backoff) outlast the 1 s liveness bound
        wait_until(lambda: p.log_path.read_text().count("kafka not reachable yet") >= 3, 60, "repeated retry lines")
        status, body = p.get("/livez")
        doc = json.loads(body)
        assert status == 200 and doc["idle_deadline_s"] == 1, body
        assert p.get("/readyz")[0] == 503
        assert p.terminate(timeout=20) == 0, p.log()
    finally:
        p.kill()
