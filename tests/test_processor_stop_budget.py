"""How long a processor asked to stop may take, and the limits set above it: a processor
whose destination accepts nothing answers ``shutdownRequested`` after
``kcl.shutdown_flush_ms`` and at most ``PROCESSOR_STOP_WATERMARK_S`` more
(docs/reliability.md), which the local runtime's kill limit and the KCL's grace cover
for every value the job file allows."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

import pytest

from replicator.config.model import (
    PROCESSOR_FLUSH_TIMEOUT_MS,
    PROCESSOR_STOP_WATERMARK_S,
    JobConfig,
    processor_stop_s,
)
from replicator.metrics import Metrics
from replicator.processor import ReplicationProcessor
from replicator.runtime.kcl.properties import shutdown_grace_ms
from replicator.runtime.local.runtime import STOP_DEADLINE_S
from replicator.runtime.local.shard_settings import stop_answer_limit_s


class _StuckPipeline:
    """A pipeline whose writes never settle and whose status table may hang: the
    watermark's publish takes all it is given when ``hangs``."""

    def __init__(self, hangs: bool) -> None:
        self.hangs = hangs
        self.store_waits: list[float] = []

    def release_holds(self) -> None:
        pass

    def flush(self, timeout: float) -> bool:
        return False

    def publish_watermark(self, wait_s: float) -> None:
        if self.hangs:
            time.sleep(wait_s)

    def checkpointable(self) -> str:
        return "200"

    def outstanding(self) -> dict[str, int]:
        return {"hung": 1}

    def store_watermark_before_checkpoint(self, wait_s: float, *, urgent: bool = False) -> bool:
        self.store_waits.append(wait_s)
        return False

    def watermark_unstored(self) -> list[str]:
        return ["hung"]


@pytest.mark.parametrize("hangs", [True, False], ids=["publish-hangs", "publish-answered"])
def test_the_watermark_s_publish_and_store_share_one_budget_after_the_flush(hangs: bool) -> None:
    """Before, the store waited 3 s more after a 2 s publish: 25 s and more in all with
    the default flush, at the runtime's kill limit."""
    pipeline = _StuckPipeline(hangs)
    processor = ReplicationProcessor(lambda _: Any, Metrics(), shutdown_flush_timeout_s=1.0)
    processor.intake = SimpleNamespace(pipeline=pipeline)  # type: ignore[assignment]
    processor.checkpoints = SimpleNamespace(last="100", moves=lambda position: True)  # type: ignore[assignment]
    processor.shutdown_requested(SimpleNamespace(checkpointer=None))
    (store_wait,) = pipeline.store_waits
    if hangs:
        assert store_wait < 0.5  # what is left of the budget after the publish took it
    else:
        assert PROCESSOR_STOP_WATERMARK_S - 0.5 < store_wait <= PROCESSOR_STOP_WATERMARK_S


@pytest.mark.parametrize("flush_ms", [1000, 5000, PROCESSOR_FLUSH_TIMEOUT_MS])
def test_the_stop_limits_cover_what_a_processor_may_take(flush_ms: int) -> None:
    took = processor_stop_s(flush_ms)
    assert took == flush_ms / 1000 + PROCESSOR_STOP_WATERMARK_S
    # runtime: local kills a processor only after it had all it may take, and the whole
    # stop (a batch released first, about a second; the lease released after) fits in
    # its deadline.
    assert stop_answer_limit_s(flush_ms) > took
    assert stop_answer_limit_s(flush_ms) + 3 < STOP_DEADLINE_S
    # runtime: kcl, with the shortest failover time allowed.
    job = JobConfig.model_validate(
        {
            "task_name": "task",
            "source": {"region": "us-east-1", "table": "src"},
            "destinations": [{"region": "eu-west-1", "table": "dst"}],
            "kcl": {"shutdown_flush_ms": flush_ms, "failover_time_ms": 1000},
        }
    )
    assert shutdown_grace_ms(job) / 1000 > took + 5
