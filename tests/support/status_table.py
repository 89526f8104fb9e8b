"""A status table in memory, for the publisher's unit tests: it keeps parts as DynamoDB
would (parts only raised, placeholders never replacing a part, dead letters and spans
merged), can be deleted, can refuse a kind of write, and can hang."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Collection
from typing import Any

from botocore.exceptions import ClientError

from replicator.watermark.history import SourceHistory
from replicator.watermark.parts import EVERY, Part, Placeholder, merge_ranges
from replicator.watermark.spans import UnreadSpan, merge_spans
from replicator.watermark.table import PartLost, StatusTable
from replicator.watermark.tracker import DeadLetters


def created_with_its_stream() -> SourceHistory:
    """A source table created with its stream a moment ago: a first start at
    TRIM_HORIZON reads every change made to it."""
    now_us = int(time.time() * 1_000_000)
    return SourceHistory(table_created_us=now_us, stream_created_us=now_us)


def client_error(code: str, operation: str = "UpdateItem") -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": code}}, operation)


class Region:
    """The status tables of one region: table name -> parts by (destination, shard)."""

    def __init__(self) -> None:
        self.tables: dict[str, dict[tuple[str, str], Part]] = {}
        self.lock = threading.Lock()


class FakeStatusTable(StatusTable):
    def __init__(
        self, destination: str, region: Region | None = None, name: str = "task-watermark"
    ) -> None:
        client: Any = None
        super().__init__(client, name, destination)
        self.region = region or Region()
        self.refuse: set[str] = set()
        """Methods that raise InternalServerError (``add_dead_letters``, ...)."""
        self.open = threading.Event()
        """Cleared: every call waits until it is set again (an endpoint that hangs)."""
        self.open.set()
        self.entered = threading.Event()
        """Set when a call is made."""
        self.calls: list[str] = []
        self.raised = threading.Event()
        """Set when a part is raised."""

    # -- the fake's own ---------------------------------------------------------------

    def delete(self) -> None:
        with self.region.lock:
            self.region.tables.pop(self.name, None)

    def stored(self) -> list[Part]:
        """The parts as they are now, without a call."""
        with self.region.lock:
            parts = self.region.tables.get(self.name, {})
            return [part for key, part in parts.items() if key[0] == self.destination]

    def _enter(self, method: str) -> None:
        """A request: it waits while the endpoint hangs, and is refused if told to be."""
        self.calls.append(method)
        self.entered.set()
        self.open.wait()
        if method in self.refuse:
            raise client_error("InternalServerError")

    def _table(self) -> dict[tuple[str, str], Part]:
        parts = self.region.tables.get(self.name)
        if parts is None:
            raise client_error("ResourceNotFoundException")
        return parts

    def _get(self, parts: dict[tuple[str, str], Part], shard: str) -> Part:
        return parts.get((self.destination, shard)) or Part(self.destination, shard)

    # -- StatusTable ------------------------------------------------------------------

    def ensure_exists(self, wait_s: float = 60.0) -> None:
        self._enter("ensure_exists")
        with self.region.lock:
            self.region.tables.setdefault(self.name, {})

    def parts_if_any(
        self, attributes: Collection[str] = EVERY, *, unreadable_as_unset: Collection[str] = ()
    ) -> list[Part]:
        try:
            return self.parts(attributes)
        except ClientError as error:
            if error.response["Error"]["Code"] != "ResourceNotFoundException":
                raise
            return []

    def parts(
        self, attributes: Collection[str] = EVERY, *, unreadable_as_unset: Collection[str] = ()
    ) -> list[Part]:
        self._enter("parts")
        with self.region.lock:
            parts = self._table()
            return [part for key, part in parts.items() if key[0] == self.destination]

    def part(self, shard: str, attributes: Collection[str] = EVERY) -> Part | None:
        self._enter("part")
        with self.region.lock:
            return self._table().get((self.destination, shard))

    def raise_part(
        self,
        shard: str,
        watermark_us: int,
        owner: str,
        *,
        raised_before: bool = False,
        members: frozenset[str] | None = None,
        source: str | None = None,  # not recorded: the fake keeps no source
    ) -> int:
        self._enter("raise_part")
        with self.region.lock:
            parts = self._table()
            current = self._get(parts, shard)
            if raised_before and current.owner is None:
                raise PartLost(f"the part of shard {shard} was never raised")
            if (self.destination, shard) in parts and current.watermark_us >= watermark_us:
                return current.watermark_us
            now = time.time()
            parts[self.destination, shard] = dataclasses.replace(
                current,
                watermark_us=watermark_us,
                owner=owner,
                updated_at=now,
                **({"members": members, "members_at": now} if members else {}),
            )
        self.raised.set()
        return watermark_us

    def add_placeholder(self, placeholder: Placeholder, source: str | None = None) -> bool:
        self._enter("add_placeholder")
        with self.region.lock:
            parts = self._table()
            if (self.destination, placeholder.shard) in parts:
                return False
            parts[self.destination, placeholder.shard] = Part(
                self.destination,
                placeholder.shard,
                watermark_us=placeholder.watermark_us,
                parents=placeholder.parents,
            )
            return True

    def add_children(self, shard: str, children: frozenset[str]) -> None:
        self._enter("add_children")
        with self.region.lock:
            parts = self._table()
            if (self.destination, shard) in parts:
                part = parts[self.destination, shard]
                parts[self.destination, shard] = dataclasses.replace(
                    part, children=part.children | children
                )

    def mark_ended(self, shard: str) -> None:
        self._enter("mark_ended")
        with self.region.lock:
            parts = self._table()
            if (self.destination, shard) in parts:
                part = parts[self.destination, shard]
                parts[self.destination, shard] = dataclasses.replace(part, ended=True)

    def add_dead_letters(self, shard: str, dead_letters: DeadLetters, attempts: int = 5) -> None:
        self._enter("add_dead_letters")
        with self.region.lock:
            parts = self._table()
            part = self._get(parts, shard)
            parts[self.destination, shard] = dataclasses.replace(
                part,
                dead_letters=part.dead_letters + dead_letters.count,
                dead_letter_ranges=tuple(
                    merge_ranges([*part.dead_letter_ranges, *dead_letters.ranges])
                ),
                dead_letter_version=part.dead_letter_version + 1,
            )

    def add_unread_spans(
        self,
        shard: str,
        spans: tuple[UnreadSpan, ...],
        attempts: int = 5,
        *,
        started_with: frozenset[str] = frozenset(),
    ) -> None:
        self._enter("add_unread_spans")
        with self.region.lock:
            parts = self._table()
            part = self._get(parts, shard)
            parts[self.destination, shard] = dataclasses.replace(
                part,
                unread_spans=tuple(merge_spans([*part.unread_spans, *spans])),
                unread_version=part.unread_version + 1,
                started_with=part.started_with | started_with,
            )

    def add_started_with(self, shard: str, destinations: frozenset[str]) -> None:
        self._enter("add_started_with")
        with self.region.lock:
            parts = self._table()
            part = self._get(parts, shard)
            parts[self.destination, shard] = dataclasses.replace(
                part, started_with=part.started_with | destinations
            )
