"""A later put that loses to an earlier image only by the digest (same timestamp or
version) is warned about: the destination then keeps an older image than the source's,
which nothing else shows (replicator/rules/ties.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import structlog

from replicator.buffer import ChangeBuffer
from replicator.decode import decode
from replicator.metrics import Metrics
from replicator.records import Change
from replicator.rules import OrderedRule, squash_order
from replicator.rules.ties import TIES, WARN_EVERY_S, TieWatch
from replicator.writers.outcomes import Outcome
from tests.support.records import put
from tests.writers.test_writers import LWW, Destination

RULE = OrderedRule("last_writer_wins", "ts", None, numeric_only=False)
TIE = "two different images of one item have the same ts"


def earlier_and_later(ts: int = 5) -> tuple[Change, Change]:
    """Two puts of item ``a`` with the same ``ts``, the later one ranking below the
    earlier by its digest (which loses the draw)."""
    first, second = decode(put("a", 1, ts=ts, p="x")), decode(put("a", 2, ts=ts, p="y"))
    if RULE.rank(second.ranked) < RULE.rank(first.ranked):
        return first, second
    return decode(put("a", 1, ts=ts, p="y")), decode(put("a", 2, ts=ts, p="x"))


@pytest.fixture(autouse=True)
def no_warning_yet(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(TIES, "_warned_at", None)
    monkeypatch.setattr(TIES, "_seen", 0)


def ties_warned(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [line for line in lines if line["event"].startswith(TIE)]


def test_a_later_put_squashed_away_by_the_digest_is_warned_about() -> None:
    earlier, later = earlier_and_later()
    buffer = ChangeBuffer(["d"], squash_order([RULE], ordered_stream=True))
    with structlog.testing.capture_logs() as lines:
        buffer.add(earlier)
        assert buffer.add(later) is False  # dropped: the earlier image ranks above
        buffer.add(decode(put("a", 3, ts=6, p="z")))  # a higher ts: no draw, no word
    (warned,) = ties_warned(lines)
    assert warned["log_level"] == "warning"
    assert warned["key"] == "pk=S:a"
    assert warned["where"] == "squash"
    assert warned["since_last_warning"] == 1
    assert "ts=5" in warned["kept"] and "digest=" in warned["kept"]


def test_a_later_put_that_wins_the_draw_or_ranks_higher_is_no_warning() -> None:
    earlier, later = earlier_and_later()
    buffer = ChangeBuffer(["d"], squash_order([RULE], ordered_stream=True))
    with structlog.testing.capture_logs() as lines:
        buffer.add(later)  # now the one of the higher digest comes second
        buffer.add(decode(put("a", 3, ts=5, p=earlier.ranked["p"]["S"])))  # type: ignore[index]
        buffer.add(decode(put("b", 4, ts=1)))
        buffer.add(decode(put("b", 5, ts=2)))
    assert ties_warned(lines) == []


def test_a_later_put_lost_at_the_destination_by_the_digest_is_warned_about(
    moto_endpoint: str, unique: Any, tmp_path: Path, metrics: Metrics
) -> None:
    """One-way: the destination holds the earlier write of the item (an earlier batch),
    and the later one, with the same ts, loses by the digest; the source keeps it."""
    dest = Destination(moto_endpoint, unique("ties"), tmp_path, metrics)
    writer = dest.writer(**LWW)
    earlier, later = earlier_and_later()
    with structlog.testing.capture_logs() as lines:
        assert writer.write(earlier).outcome is Outcome.APPLIED
        assert writer.write(later).outcome is Outcome.CONFLICT_LOST
    assert dest.get("a")["p"] == earlier.ranked["p"]  # type: ignore[index]
    (warned,) = ties_warned(lines)
    assert warned["where"] == "dest"
    assert warned["key"] == "pk=S:a"
    assert warned["kept"] != warned["lost"]


def test_the_warning_comes_at_most_once_a_minute_with_the_count_between() -> None:
    now = [100.0]
    watch = TieWatch(clock=lambda: now[0])
    with structlog.testing.capture_logs() as lines:
        for step in range(5):
            now[0] += WARN_EVERY_S / 4
            watch.later_put_lost("ts", {"pk": {"S": f"k{step}"}}, lambda: ("a", "b"), "d")
    assert [line["since_last_warning"] for line in ties_warned(lines)] == [1, 4]
    assert [line["key"] for line in ties_warned(lines)] == ["pk=S:k0", "pk=S:k4"]
