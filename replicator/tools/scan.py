"""Reading tables for the operator tools: segmented scans under a read rate, and
strongly consistent batched reads by key.

DynamoDB splits a Scan into ``TotalSegments`` independent segments that can be read in
parallel, each resuming from its own LastEvaluatedKey: that is what makes a long copy
both fast and resumable. The read rate counts items, which is what an operator sizes
against a table's read capacity, and is shared by every thread reading one table.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any

import structlog
from botocore.exceptions import BotoCoreError, ClientError

from replicator.aws.backoff import Backoff
from replicator.aws.errors import ErrorKind, classify
from replicator.aws.tables import BATCH_GET_LIMIT
from replicator.exceptions import OperatorError
from replicator.items import Item, KeyId, key_id, project
from replicator.tools.tables import TableRef

log = structlog.get_logger(__name__)

# Throttling and 5xx are waited out this many times (13 waits, each a random part of a
# ceiling doubling from 0.1 s up to the 20 s cap: about a minute of continuous failure,
# 125 s at most) before the command stops with the error; anything else
# stops it at once. A stopped backfill resumes where it was.
MAX_ATTEMPTS = 14
_BACKOFF = Backoff(base_s=0.1, cap_s=20.0)


class ReadStopped(OperatorError):
    """The command's stop request came while a read waited to be tried again: the read
    is given up, as the work a stop leaves is, rather than the stop waiting out a backoff
    of up to ``_BACKOFF.cap_s`` (tried again immediately, it would only meet the same
    throttling). Each command ends as its stop says (a backfill keeps its saved pages)."""


# The wait of a read whose caller has no stop request (a backfill's progress, which is
# saved whatever the stop).
_NEVER = threading.Event()


def call(
    operation: Callable[..., Any], what: str, *, stop: threading.Event | None = None, **kwargs: Any
) -> Any:
    """Call ``operation``, retrying throttling and transient failures with backoff;
    :class:`ReadStopped` once ``stop`` is set during a wait."""
    attempt = 0
    while True:
        try:
            return operation(**kwargs)
        except (ClientError, BotoCoreError) as error:
            if classify(error) not in (ErrorKind.THROTTLED, ErrorKind.RETRY):
                raise
            if attempt + 1 >= MAX_ATTEMPTS:
                raise
            delay = _BACKOFF.delay(attempt)
            attempt += 1
            # The first failure of a read is a warning, so that an operator at
            # logging.level warning sees an outage while the command waits it out (about
            # a minute before it stops); the retries after it are info.
            said = log.warning if attempt == 1 else log.info
            said(
                "read failed, retrying",
                what=what,
                error=str(error),
                delay_s=round(delay, 2),
                attempt=attempt,
                gives_up_after=MAX_ATTEMPTS,
            )
            _back_off(delay, stop, what)


def _back_off(delay: float, stop: threading.Event | None, what: str) -> None:
    if (stop if stop is not None else _NEVER).wait(delay):
        raise ReadStopped(f"{what}: stopped while waiting to read again")


class ReadRate:
    """A shared budget of items per second; ``0`` means unlimited.

    A page's size is known only once it has arrived, so reads are charged afterwards and
    the reader then waits off any debt: over time the rate holds, whatever the page sizes.
    The debt is shared, so with N readers one waits up to N items' time: as much as the
    rate requires, since the others' pages were read already. A low rate makes that
    minutes, so ``stop`` (the command's stop request) ends every wait at once and no
    wait starts once it is set: the command then stops after the work in hand. The
    readers' waits to retry a read end on it too (:class:`ReadStopped`).
    """

    def __init__(
        self,
        per_second: float,
        stop: threading.Event | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.per_second = per_second
        self._stop = stop if stop is not None else threading.Event()
        self._clock = clock
        self._lock = threading.Lock()
        self._available = 0.0
        self._last = clock()

    @property
    def stop(self) -> threading.Event:
        return self._stop

    @property
    def limited(self) -> bool:
        return self.per_second > 0

    def page_limit(self, page_size: int) -> int:
        """A page size that keeps one page within about a second of the budget."""
        if not self.limited:
            return page_size
        return max(1, min(page_size, int(self.per_second)))

    def charge(self, items: int) -> None:
        if not self.limited or items <= 0:
            return
        with self._lock:
            now = self._clock()
            refill = (now - self._last) * self.per_second
            self._available = min(self.per_second, self._available + refill)
            self._last = now
            self._available -= items
            wait = -self._available / self.per_second if self._available < 0 else 0.0
        if wait > 0:
            self._stop.wait(wait)


# Segments past which more segments than items is worth a word: a few thousand empty
# segments cost seconds, a million hours.
_MANY_SEGMENTS = 1000


def warn_of_empty_segments(command: str, segments: int, items: int) -> None:
    """Warn when ``segments`` is far above the ``items`` there are to read: every segment
    costs at least one Scan request, empty or not, so such a run takes about
    ``segments`` requests per table for what a few segments read as fast."""
    if segments > max(_MANY_SEGMENTS, items):
        log.warning(
            f"{command}: {segments} scan segments for about {items} items (the tables' "
            "estimate): each segment is at least one Scan request, empty or not; fewer "
            "segments read as fast",
            segments=segments,
            estimated_items=items,
        )


@dataclass(frozen=True)
class Page:
    items: list[Item]
    next_key: Item | None  # where the segment continues; None at its end


def scan_pages(
    ref: TableRef,
    segment: int,
    total_segments: int,
    rate: ReadRate,
    *,
    start_key: Item | None = None,
    page_size: int = 1000,
    key_names: list[str] | None = None,
    allowance: Callable[[int], int] | None = None,
) -> Generator[Page, None, None]:
    """The pages of one scan segment from ``start_key``; only the keys if ``key_names``.

    ``allowance``, asked before each Scan with the page's size, gives the most items that
    Scan may return (its ``Limit``: a Scan without a filter returns no more items than
    it evaluates); 0 ends the pages there, without a read."""
    limit = rate.page_limit(page_size)
    kwargs: dict[str, Any] = {"TableName": ref.table, "Limit": limit}
    if total_segments > 1:
        kwargs["Segment"] = segment
        kwargs["TotalSegments"] = total_segments
    if key_names:
        kwargs.update(_projection(key_names))
    if start_key:
        kwargs["ExclusiveStartKey"] = start_key
    while True:
        if allowance is not None:
            kwargs["Limit"] = allowance(limit)
            if kwargs["Limit"] <= 0:
                return
        page = call(
            ref.client.scan, f"scan {ref.label} segment {segment}", stop=rate.stop, **kwargs
        )
        items: list[Item] = page.get("Items", [])
        rate.charge(max(len(items), 1))
        next_key: Item | None = page.get("LastEvaluatedKey")
        yield Page(items, next_key)
        if not next_key:
            return
        kwargs["ExclusiveStartKey"] = next_key


def batch_get(
    ref: TableRef, keys: list[Item], key_names: list[str], rate: ReadRate
) -> dict[KeyId, Item]:
    """The items at ``keys`` that exist, read strongly consistently, by key identity."""
    unique: dict[KeyId, Item] = {}
    for key in keys:
        unique.setdefault(key_id(key), key)
    found: dict[KeyId, Item] = {}
    pending = list(unique.values())
    for start in range(0, len(pending), BATCH_GET_LIMIT):
        request: dict[str, Any] = {
            ref.table: {"Keys": pending[start : start + BATCH_GET_LIMIT], "ConsistentRead": True}
        }
        attempt = 0
        while request:
            what = f"read {ref.label}"
            response = call(ref.client.batch_get_item, what, stop=rate.stop, RequestItems=request)
            items = response.get("Responses", {}).get(ref.table, [])
            rate.charge(len(items))
            for item in items:
                found[key_id(project(item, key_names))] = item
            request = response.get("UnprocessedKeys") or {}
            if request:  # throttled in part: DynamoDB asks for the rest later
                _back_off(_BACKOFF.delay(attempt), rate.stop, what)
                attempt += 1
    return found


def _projection(key_names: list[str]) -> dict[str, Any]:
    names = {f"#k{index}": name for index, name in enumerate(key_names)}
    return {"ProjectionExpression": ", ".join(names), "ExpressionAttributeNames": names}
