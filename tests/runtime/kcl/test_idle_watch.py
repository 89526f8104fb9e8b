"""A worker that holds no shard for a minute says so once per spell, and why that can be
normal (a replacement waiting for a dead worker's leases sat silent for minutes)."""

from __future__ import annotations

import structlog.testing

from replicator.runtime.kcl.idle import IdleWatch


def test_no_shard_for_a_minute_is_said_once_per_spell() -> None:
    now = [100.0]
    shards = [0]
    watch = IdleWatch(lambda: shards[0], "carts-us", 10_000, clock=lambda: now[0])
    with structlog.testing.capture_logs() as logged:
        for step in range(12):  # 55 s without a shard: nothing yet
            now[0] = 100.0 + 5 * step
            watch.turn()
        assert logged == []
        now[0] = 160.0
        watch.turn()
        now[0] = 200.0
        watch.turn()  # the same spell: said once
        (line,) = logged
        assert line["event"] == "this worker holds no shard"
        assert line["for_s"] == 60
        assert "other workers of task carts-us hold every shard" in line["note"]
        assert "kcl.failover_time_ms: 10000 ms" in line["note"]
        assert "(GetShardIterator not allowed, the stream unreachable)" in line["note"]
        shards[0] = 1
        now[0] = 210.0
        watch.turn()
        shards[0] = 0
        for moment in (215.0, 270.0, 275.0):  # a new spell, from its own start
            now[0] = moment
            watch.turn()
        assert len(logged) == 2
        assert logged[1]["for_s"] == 60
