"""The tombstone table of one region: where deletes and their ranks are kept.

One table per user table and region (``active_active.tombstone_table``, by default
``<table>-tombstones``), shared by every job that writes that region: the job reading
the region's stream and each job replicating into it. It is created at start when
missing (partition key ``pk``, on-demand capacity, TTL on ``expires_at``). A row is
written with a condition, so it only ever moves up the total order: a lower or equal
delete of the same item leaves it as it is. A row ranked otherwise than the job ranks
(:class:`~replicator.tombstones.model.Ranking`: the job's policy or ranking attribute
changed since, or another job of the mesh ranks otherwise) is not compared: reads take
it for no tombstone (saying so once, see :meth:`TombstoneTable.counted`) and a delete
replaces it.

All reads are strongly consistent: a put checks for a tombstone *after* it created an
item and a delete writes its tombstone *before* it removes the item, so whichever of
the two runs second sees the other (see docs/active-active.md).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, cast

import structlog
from botocore.exceptions import ClientError

from replicator.items import Item, KeyId, describe_key
from replicator.owned_tables import ensure_table
from replicator.rules.order import any_of, below, equal_rank, pruned
from replicator.tombstones.model import (
    PARTITION_KEY,
    RANK_ATTRIBUTE,
    RANK_POLICY,
    TOMBSTONE_FIELDS,
    TTL_ATTRIBUTE,
    Ranking,
    Tombstone,
    row_key,
)
from replicator.writers.wire import botocore_client_of

if TYPE_CHECKING:
    from replicator.aws.clients import WriteClient
from replicator.aws.errors import ErrorKind, classify

log = structlog.get_logger(__name__)

# Conditional writes of one row before it is left to whoever keeps changing it.
_ATTEMPTS = 5
# The key of every tombstone table, as messages name it.
KEY_SCHEMA = f"{PARTITION_KEY} (HASH, S) alone"


class TombstoneTableError(ClientError):
    """An error DynamoDB answered to a request for a tombstone table: a ClientError like
    any other for the writer's retries and refusals, which also says which table it was
    (``table``, the table's description). The writer that sent it writes the user's
    table beside it, through the same client: without this, a tombstone table deleted
    or denied would be reported as that table, which is there."""

    def __init__(self, error: ClientError, table: str) -> None:
        super().__init__(error.response, error.operation_name)
        self.table = table


class TombstoneTable:
    """Reads and conditional writes of one region's tombstone table.

    ``client`` is the destination writer's own (same region, endpoint and role as the
    user's table). DynamoDB's errors propagate as :class:`TombstoneTableError`, for the
    writer's retries, which name the table; botocore's own (no answer) as it raises them.
    It counts the requests it answered (:attr:`answered`), for the writer's refusals.
    ``ranking`` is the job's (None: every row counts, for a reader that does not rank);
    ``origin`` the job's own region stamp, which tells the rows other regions' jobs wrote.
    """

    def __init__(
        self,
        client: WriteClient,
        table: str,
        where: str,
        retention_s: int,
        clock: Callable[[], float] = time.time,
        *,
        ranking: Ranking | None = None,
        origin: str = "",
    ) -> None:
        self.client = client
        self.table = table
        self.where = where
        self.retention_s = retention_s
        self.description = f"tombstone table {table} ({where})"
        self._clock = clock
        self._answered = 0
        self._lock = threading.Lock()
        self.ranking = ranking
        self.origin = origin
        self._since_ms = int(clock() * 1000)
        # Each kind of ranking mismatch is logged once per table (one per job and shard).
        self._said: set[str] = set()

    @property
    def answered(self) -> int:
        """How many requests the table has answered so far (a write its condition refused
        included). A change's refusals by this table are counted in a row until this
        moves: the writes that succeed at the user's table beside it meanwhile never
        touch this table, and say nothing of it."""
        with self._lock:
            return self._answered

    def now(self) -> float:
        return self._clock()

    def expiry(self) -> int:
        """``expires_at`` of a tombstone written now."""
        return int(self._clock()) + self.retention_s

    def record(self, tombstone: Tombstone) -> Tombstone | None:
        """Write ``tombstone`` unless the table holds, for the same item, a live
        tombstone that ranks at or above it. None when written; otherwise that one."""
        condition, names, values = below(
            TOMBSTONE_FIELDS, tombstone.ordering, tombstone.origin, tombstone.digest, prefix="t"
        )
        names = {**names, "#tk": PARTITION_KEY, "#tx": TTL_ATTRIBUTE}
        values = {**values, ":tnow": {"N": str(int(self._clock()))}}
        ranked_otherwise = None
        if tombstone.ranking is not None:
            # A row that says it was ranked by something else has a rank that compares
            # with nothing here: replaced whatever it holds. One that says nothing is
            # ranked as this job ranks (written before rows said so).
            ranked_otherwise = "attribute_exists(#tp) AND (#tp <> :tp OR #ta <> :ta)"
            names = {**names, "#tp": RANK_POLICY, "#ta": RANK_ATTRIBUTE}
            values = {
                **values,
                ":tp": {"S": tombstone.ranking.policy},
                ":ta": {"S": tombstone.ranking.attribute},
            }
        request = pruned(
            any_of("attribute_not_exists(#tk)", "#tx <= :tnow", ranked_otherwise, condition),
            names,
            values,
        )
        for _ in range(_ATTEMPTS):
            held = self._put(tombstone, request)
            if held is None:
                return None
            if (
                held.expired(self._clock())
                or not held.ranked_like(tombstone.ranking)
                or held.rank < tombstone.rank
            ):
                # Expired, ranked otherwise, or below ours where DynamoDB could not compare
                # (values of another type), by this clock and reading: replace it while it
                # is still that very row.
                request = equal_rank(
                    TOMBSTONE_FIELDS, held.ordering, held.origin, held.digest, prefix="t"
                )
                continue
            return held
        return tombstone  # it kept changing under us: someone else is recording deletes

    def _put(
        self, tombstone: Tombstone, request: tuple[str, dict[str, str], dict[str, Any]]
    ) -> Tombstone | None:
        expression, names, values = request
        try:
            with self._named():
                self.client.put_item(
                    TableName=self.table,
                    Item=tombstone.to_item(),
                    ConditionExpression=expression,
                    ExpressionAttributeNames=names,
                    ExpressionAttributeValues=values,
                    ReturnValuesOnConditionCheckFailure="ALL_OLD",
                )
        except ClientError as error:
            if classify(error) is not ErrorKind.CONDITION_FAILED:
                raise
            held = error.response.get("Item")
            if not isinstance(held, dict):
                return tombstone  # a refusal without the row: as if ours were there
            return Tombstone.from_item(held)
        return None

    def get(self, keys: Item) -> Tombstone | None:
        """The item's tombstone, read strongly consistently (expired ones included)."""
        with self._named():
            response = self.client.get_item(
                TableName=self.table,
                Key={PARTITION_KEY: {"S": row_key(keys)}},
                ConsistentRead=True,
            )
        item = cast("Item | None", response.get("Item"))
        return None if not item else self.counted(Tombstone.from_item(item))

    def get_some(self, pending: dict[str, KeyId], found: dict[KeyId, Tombstone | None]) -> None:
        """One strongly consistent BatchGetItem of the rows ``pending`` names by row key
        (at most BATCH_GET_LIMIT): each row answered moves from ``pending`` to ``found``
        (None: no tombstone, expired ones included). The keys DynamoDB leaves unprocessed
        (it throttled part of the request) stay pending and raise a throttling error, so
        that the writer's retries ask for them again after its backoff."""
        with self._named():
            response = self.client.batch_get_item(
                RequestItems={
                    self.table: {
                        "Keys": [{PARTITION_KEY: {"S": row}} for row in pending],
                        "ConsistentRead": True,
                    }
                }
            )
        for item in response.get("Responses", {}).get(self.table, []):
            row = cast("Item", item)
            key = pending.pop(str(row[PARTITION_KEY].get("S")), None)
            if key is not None:
                found[key] = self.counted(Tombstone.from_item(row))
        unprocessed = response.get("UnprocessedKeys", {}).get(self.table)
        keys = cast("list[Item]", unprocessed["Keys"] if unprocessed else [])
        left = {str(key[PARTITION_KEY].get("S")) for key in keys}
        for row_id in [row_id for row_id in pending if row_id not in left]:
            found[pending.pop(row_id)] = None
        if pending:
            throttled = ClientError(
                {
                    "Error": {
                        "Code": "ProvisionedThroughputExceededException",
                        "Message": f"BatchGetItem left {len(pending)} keys unprocessed",
                    }
                },
                "BatchGetItem",
            )
            raise TombstoneTableError(throttled, self.description)

    def counted(self, row: Tombstone) -> Tombstone | None:
        """``row`` when its rank compares with the job's; None (no tombstone, for ranking)
        for a row ranked otherwise, logged once per table: at error level when another
        region's job wrote it for a delete made while this table was in use (that job
        ranks otherwise now: the mesh's jobs disagree), at warning level otherwise (a
        row from before the job's ranking changed, most likely)."""
        if row.ranked_like(self.ranking):
            return row
        other_job = bool(self.origin) and row.written_by not in ("", self.origin)
        said = {
            "table": self.description,
            "tombstone_ranking": str(row.ranking),
            "job_ranking": str(self.ranking),
            "written_by": row.written_by,
            "deleted_in": row.deleted_in,
            "key": describe_key(row.keys),
        }
        if other_job and row.deleted_at_ms >= self._since_ms:
            if self._first("disagree"):
                log.error(
                    "another region's job ranks otherwise than this job: the regions will "
                    "not converge; give every job of the mesh the same conflict policy "
                    "and attribute",
                    origin=self.origin,
                    **said,
                )
        elif self._first("mismatch"):
            log.warning(
                "a tombstone ranked otherwise than this job ranks does not count against "
                "puts (the job's conflict policy or attribute changed since it was written?)",
                note="logged once per tombstone table and shard",
                **said,
            )
        return None

    def _first(self, what: str) -> bool:
        with self._lock:
            first = what not in self._said
            self._said.add(what)
            return first

    @contextmanager
    def _named(self) -> Iterator[None]:
        """DynamoDB's errors to the requests sent inside as :class:`TombstoneTableError`;
        an answer (a failed condition too: the table is there and takes writes) counted."""
        try:
            yield
        except ClientError as error:
            if classify(error) is ErrorKind.CONDITION_FAILED:
                self._note_answer()
            raise TombstoneTableError(error, self.description) from error
        self._note_answer()

    def _note_answer(self) -> None:
        with self._lock:
            self._answered += 1

    def ensure_exists(self, wait_s: float = 120.0) -> None:
        ensure_table(
            botocore_client_of(self.client),
            self.table,
            {PARTITION_KEY: "HASH"},
            TTL_ATTRIBUTE,
            f"tombstone table {self.table}",
            self.where,
            f"tombstones need a table keyed by {KEY_SCHEMA}: name another table in "
            "active_active.tombstone_table",
            wait_s,
        )
