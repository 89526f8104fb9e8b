"""A backfill's progress, kept in its own table so that a stopped backfill resumes.

The table is ``<task_name>-backfill`` in the source's region (and endpoint), keyed by
``segment`` (a number). It is not the lease table: the KCL reads every row of its lease
table as a shard lease. Rows:

* ``segment = -1``: the run: ``total_segments``, ``destinations`` (the labels the copy
  writes to), ``source``, ``tables`` (which table each label was: see
  :func:`table_identity`), ``owner`` and ``heartbeat`` of the process running it,
  ``started_at`` and ``finished_at``;
* ``segment = 0..n-1``: ``last_key`` (the segment's LastEvaluatedKey as wire JSON, absent
  until its first page is done), ``done``, and counters ``scanned``, ``applied``,
  ``kept``, ``dead_lettered``, ``undone``, ``equal``, ``left``.

A segment's row is written only after every item of its pages up to ``last_key`` is
settled at every destination, so resuming from it skips nothing. Two processes
copying the same job at once would only repeat work, but a second one is refused while
the first's heartbeat is fresh, so that progress reports stay meaningful.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog
from botocore.exceptions import BotoCoreError, ClientError

from replicator.aws.errors import error_code
from replicator.exceptions import EnvironmentProblem
from replicator.items import Item, item_from_wire, item_to_wire
from replicator.runtime.preflight import explain
from replicator.tools.scan import call
from replicator.tools.tables import TableRef

log = structlog.get_logger(__name__)

RUN_ROW = -1
SUFFIX = "-backfill"
STALE_AFTER_S = 60.0
_HEARTBEAT_EVERY_S = 5.0


# A segment's counters (a row written by an earlier version lacks the newer ones: 0).
COUNTERS = ("scanned", "applied", "kept", "dead_lettered", "undone", "equal", "left")


def state_table_name(task_name: str) -> str:
    return task_name + SUFFIX


@dataclass
class SegmentProgress:
    segment: int
    last_key: Item | None = None
    done: bool = False
    scanned: int = 0
    applied: int = 0
    kept: int = 0
    dead_lettered: int = 0
    undone: int = 0
    equal: int = 0
    left: int = 0

    def to_item(self, owner: str) -> dict[str, Any]:
        item: dict[str, Any] = {
            "segment": {"N": str(self.segment)},
            "done": {"BOOL": self.done},
            "owner": {"S": owner},
            "updated_at": {"S": _now()},
        }
        for name in COUNTERS:
            item[name] = {"N": str(getattr(self, name))}
        if self.last_key is not None:
            item["last_key"] = {"S": json.dumps(item_to_wire(self.last_key), sort_keys=True)}
        return item

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> SegmentProgress:
        last = item.get("last_key", {}).get("S")
        return cls(
            segment=int(item["segment"]["N"]),
            last_key=item_from_wire(json.loads(last)) if last else None,
            done=bool(item.get("done", {}).get("BOOL", False)),
            **{name: int(item.get(name, {}).get("N", "0")) for name in COUNTERS},
        )


@dataclass(frozen=True)
class Plan:
    """What this run does: every segment's progress so far, and whether it resumes."""

    total_segments: int
    segments: list[SegmentProgress]
    resumed: bool
    started_at: str

    @property
    def complete(self) -> bool:
        return all(s.done for s in self.segments)


class BackfillState:
    def __init__(self, ref: TableRef, owner: str) -> None:
        self.ref = ref  # the source's client; ref.table is the state table
        self.owner = owner
        self._lock = threading.Lock()
        self._last_heartbeat = 0.0
        # Told once another process has taken the run over (its owner is not ours).
        self._on_lost: Callable[[str], None] | None = None
        self._beating = threading.Event()  # set: the heartbeat thread is to end

    def keep_alive(self, on_lost: Callable[[str], None]) -> None:
        """Beat the run's heartbeat every few seconds from a thread until :meth:`finish`:
        a page that takes longer than ``STALE_AFTER_S`` to copy (a low ``--read-rate``)
        left it stale, and a second backfill of the job took the run while the first
        went on copying. ``on_lost`` is told, once, when another has taken the run over
        (then this one must stop)."""
        self._on_lost = on_lost

        def beat() -> None:
            while not self._beating.wait(_HEARTBEAT_EVERY_S):
                try:
                    self._update_run("SET heartbeat = :now", {":now": {"N": str(int(time.time()))}})
                except (ClientError, BotoCoreError) as error:  # the next beat tries again
                    log.warning("could not update the backfill heartbeat", error=str(error))

        threading.Thread(target=beat, name="backfill-heartbeat", daemon=True).start()

    @property
    def table(self) -> str:
        return self.ref.table

    def ensure_exists(self, wait_s: float = 120.0) -> None:
        client = self.ref.client
        try:
            client.create_table(
                TableName=self.table,
                KeySchema=[{"AttributeName": "segment", "KeyType": "HASH"}],
                AttributeDefinitions=[{"AttributeName": "segment", "AttributeType": "N"}],
                BillingMode="PAY_PER_REQUEST",
            )
            log.info("created backfill progress table", table=self.table)
        except ClientError as error:
            if error_code(error) != "ResourceInUseException":
                raise explain(
                    error, f"backfill progress table {self.table}", self.ref.endpoint
                ) from None
        except BotoCoreError as error:
            raise explain(
                error, f"backfill progress table {self.table}", self.ref.endpoint
            ) from None
        deadline = time.monotonic() + wait_s
        while True:
            table = call(client.describe_table, "describe progress table", TableName=self.table)
            status = table["Table"]["TableStatus"]
            if status == "ACTIVE":
                return
            if time.monotonic() > deadline:
                raise EnvironmentProblem(f"backfill progress table {self.table} is still {status}")
            time.sleep(1.0)

    def rows(self) -> dict[int, dict[str, Any]]:
        rows: dict[int, dict[str, Any]] = {}
        kwargs: dict[str, Any] = {"TableName": self.table, "ConsistentRead": True}
        while True:
            page = call(self.ref.client.scan, "read backfill progress", **kwargs)
            for item in page.get("Items", []):
                rows[int(item["segment"]["N"])] = item
            if "LastEvaluatedKey" not in page:
                return rows
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def begin(
        self,
        *,
        source: str,
        destinations: list[str],
        segments: int | None,
        default_segments: int,
        restart: bool,
        tables: Mapping[str, str] | None = None,
    ) -> Plan:
        """Resume the stored run, or start a new one (``restart``, or none stored).
        ``tables``: each label's :func:`table_identity` (the source's too)."""
        rows = self.rows()
        run = rows.get(RUN_ROW)
        if run is not None:
            self._refuse_if_running(run)
        if run is not None and not restart:
            stored_segments = int(run["total_segments"]["N"])
            stored_destinations = sorted(run.get("destinations", {}).get("SS", []))
            stored_source = run.get("source", {}).get("S")
            if stored_source != source or stored_destinations != sorted(destinations):
                raise EnvironmentProblem(
                    f"the stored backfill in {self.table} copied {stored_source} to "
                    f"{stored_destinations}, but the job now copies {source} to "
                    f"{sorted(destinations)}; run with --restart to copy from the start"
                )
            self._refuse_other_tables(run, tables or {})
            if segments is not None and segments != stored_segments:
                raise EnvironmentProblem(
                    f"the stored backfill in {self.table} uses {stored_segments} segments; "
                    f"resume it with --segments {stored_segments} (or leave --segments out), "
                    "or run with --restart to copy from the start"
                )
            progress = [
                SegmentProgress.from_item(rows[n]) if n in rows else SegmentProgress(n)
                for n in range(stored_segments)
            ]
            started_at = run.get("started_at", {}).get("S", _now())
            self._claim(run, stored_segments, source, destinations, started_at, tables)
            return Plan(stored_segments, progress, resumed=True, started_at=started_at)
        total = segments or default_segments
        started_at = _now()
        # The segments' progress is cleared before the new run's row is written: a crash
        # in between leaves the stored run (its segment count, its start) with progress
        # that is its own or cleared, which a resumed run at worst copies again. The other
        # order would leave the new run's row beside the old run's progress: segments done
        # under another segmentation, or by the copy --restart meant to repeat, skipped.
        # A segment without a row is one not begun (see the resume above), so only the
        # rows there are cleared and none is written ahead: a million segments start at
        # once, not after a million writes.
        for number in [n for n in rows if n != RUN_ROW]:
            call(
                self.ref.client.delete_item,
                "clear backfill progress",
                TableName=self.table,
                Key={"segment": {"N": str(number)}},
            )
        progress = [SegmentProgress(n) for n in range(total)]
        self._claim(run, total, source, destinations, started_at, tables)
        return Plan(total, progress, resumed=False, started_at=started_at)

    def save(self, progress: SegmentProgress) -> None:
        with self._lock:
            call(
                self.ref.client.put_item,
                "save backfill progress",
                TableName=self.table,
                Item=progress.to_item(self.owner),
            )
            now = time.monotonic()
            if now - self._last_heartbeat >= _HEARTBEAT_EVERY_S:
                self._last_heartbeat = now
                self._update_run("SET heartbeat = :now", {":now": {"N": str(int(time.time()))}})

    def finish(self, complete: bool) -> None:
        """Give the run up (it may be resumed by anyone); note when it completed."""
        self._beating.set()
        expression = "REMOVE #o"
        values: dict[str, Any] = {}
        if complete:
            expression = "SET finished_at = :at REMOVE #o"
            values[":at"] = {"S": _now()}
        self._update_run(expression, values)

    def _update_run(self, expression: str, values: dict[str, Any]) -> None:
        try:
            call(
                self.ref.client.update_item,
                "update backfill run",
                TableName=self.table,
                Key={"segment": {"N": str(RUN_ROW)}},
                UpdateExpression=expression,
                ConditionExpression="#o = :me",
                ExpressionAttributeNames={"#o": "owner"},
                ExpressionAttributeValues={":me": {"S": self.owner}, **values},
            )
        except ClientError as error:
            if error_code(error) != "ConditionalCheckFailedException":
                raise
            log.warning("another backfill has taken this run over", table=self.table)
            on_lost, self._on_lost = self._on_lost, None
            if on_lost is not None:
                self._beating.set()
                on_lost(
                    f"another backfill of this job has taken the run over ({self.table}): "
                    "this one stops; its progress so far is saved"
                )

    def _refuse_if_running(self, run: dict[str, Any]) -> None:
        owner = run.get("owner", {}).get("S")
        heartbeat = float(run.get("heartbeat", {}).get("N", "0"))
        age = time.time() - heartbeat
        if owner and owner != self.owner and age < STALE_AFTER_S:
            raise EnvironmentProblem(
                f"another backfill of this job (run {owner}) updated {self.table} "
                f"{age:.0f} s ago; stop it first, or wait {STALE_AFTER_S:.0f} s if it has died"
            )

    def _refuse_other_tables(self, run: dict[str, Any], tables: Mapping[str, str]) -> None:
        """A stored run is of the tables it copied, not of their names: a table deleted
        and created again (the source, re-created as the runbook says, before a backfill;
        a destination deleted mid-copy, whose copied items went with it) or a named
        destination pointed at another table would be taken up where the stored run
        stopped, or reported "already complete", with items never copied. A run stored
        before the tables were recorded has none to compare."""
        stored = {
            label: value.get("S") for label, value in run.get("tables", {}).get("M", {}).items()
        }
        changed = sorted(
            label
            for label, identity in tables.items()
            if label in stored and stored[label] != identity
        )
        if changed:
            raise EnvironmentProblem(
                f"the stored backfill in {self.table} copied other tables than the job names "
                f"now: {', '.join(changed)} (created again since, or another table under "
                "its name); what it saved as copied may not be there: run with --restart "
                "to copy from the start"
            )

    def _claim(
        self,
        run: dict[str, Any] | None,
        total: int,
        source: str,
        destinations: list[str],
        started_at: str,
        tables: Mapping[str, str] | None = None,
    ) -> None:
        item: dict[str, Any] = {
            "segment": {"N": str(RUN_ROW)},
            "total_segments": {"N": str(total)},
            "source": {"S": source},
            "destinations": {"SS": sorted(destinations)},
            "owner": {"S": self.owner},
            "heartbeat": {"N": str(int(time.time()))},
            "started_at": {"S": started_at},
        }
        if tables:
            item["tables"] = {"M": {label: {"S": identity} for label, identity in tables.items()}}
        if run is not None and "finished_at" in run and started_at == run["started_at"]["S"]:
            item["finished_at"] = run["finished_at"]
        # Conditional on the row as it was read: two runs starting at once cannot both win.
        kwargs: dict[str, Any] = {"TableName": self.table, "Item": item}
        if run is None:
            kwargs["ConditionExpression"] = "attribute_not_exists(#s)"
            kwargs["ExpressionAttributeNames"] = {"#s": "segment"}
        else:
            kwargs["ConditionExpression"] = "attribute_not_exists(#h) OR #h = :seen"
            kwargs["ExpressionAttributeNames"] = {"#h": "heartbeat"}
            kwargs["ExpressionAttributeValues"] = {":seen": run.get("heartbeat", {"N": "0"})}
        try:
            call(self.ref.client.put_item, "claim backfill run", **kwargs)
        except ClientError as error:
            if error_code(error) == "ConditionalCheckFailedException":
                raise EnvironmentProblem(
                    f"another backfill of this job started at the same time ({self.table}); "
                    "run one at a time"
                ) from None
            raise
        self._last_heartbeat = time.monotonic()


def table_identity(ref: TableRef) -> str:
    """Which table ``ref`` is: its ``TableId`` (or, where an endpoint gives none, its
    region, name and creation time), which a table created again under its name does not
    share. Not the endpoint's spelling: ``localhost`` and ``127.0.0.1`` reach one table."""
    table = call(ref.client.describe_table, f"describe {ref.label}", TableName=ref.table)["Table"]
    if table.get("TableId"):
        return f"id {table['TableId']}"
    return f"{ref.region}/{ref.table} created {table.get('CreationDateTime')}"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
