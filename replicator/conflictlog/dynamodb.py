"""The conflict log as a DynamoDB table, kept for a retention period by DynamoDB's TTL.

The table (``<task_name>-conflicts`` by default, in the source region) is keyed so
that every entry of one item is one Query away:

* ``pk`` (S, partition key): the item's canonical key (:func:`keys.canonical_key`),
  such as ``[["pk","S","order-1"],["sk","N","3"]]``, or ``sha256:<digest>`` of it when
  it is longer than a partition key may be (:func:`keys.partition_key`); jobs that
  share the table and have items of the same key share the partition, and readers keep
  to their task's entries;
* ``sk`` (S, sort key): ``<time>#<entry id>``, the time being the losing change's
  creation (a restore: when it was made), ISO-8601 UTC, so a Query returns an item's
  history in time order and ``--since`` is a key condition;
* ``entry`` (B): the whole entry as gzip-compressed JSON, so images come back byte for
  byte (numbers as sent, sets in their order, binaries as they were);
* ``id``, ``kind``, ``destination``, ``at``, ``key_text``: for reading the table in
  the console; ``expires_at`` (N, epoch seconds): the TTL attribute.

The recorder's entries are written with BatchWriteItem, 25 a request, each on its own
key, so writing one twice (a change replayed after a restart) leaves one item. Items the
service leaves unprocessed (throttling) are reported unavailable, and the recorder tries
them again after its backoff. DynamoDB refuses a whole request for one item it cannot
take (a ValidationException): that request's items are then written one by one with
PutItem, so that only the one refused is given up. One conflict costs one write of about
1 KB per KB of compressed entry, and its storage until DynamoDB's TTL removes it (within
a few days after ``expires_at``; expired items are not returned by the reader).
"""

from __future__ import annotations

import gzip
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import structlog
from botocore.exceptions import BotoCoreError, ClientError

from replicator.aws.errors import error_code
from replicator.conflictlog.base import (
    Selection,
    StoreOutcome,
    read_failure,
    storage_failure,
    stored,
)
from replicator.conflictlog.entry import ConflictEntry
from replicator.conflictlog.keys import partition_key
from replicator.exceptions import ConflictLogUnavailable, EntryFormatError, EnvironmentProblem
from replicator.items import describe_key, item_from_wire
from replicator.owned_tables import check_key_schema, ensure_table

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_dynamodb.literals import KeyTypeType
    from mypy_boto3_dynamodb.type_defs import QueryOutputTypeDef, ScanOutputTypeDef

log = structlog.get_logger(__name__)

TTL_ATTRIBUTE = "expires_at"
ITEM_LIMIT = 400 * 1024
BATCH_WRITE_LIMIT = 25  # items in one BatchWriteItem
# Room for the other attributes of the item (keys, names, times) beside the entry blob.
_ENVELOPE = 8 * 1024
_DAY_S = 86_400
# How long a store waits for a table it made again to become ACTIVE (the start waits 120 s):
# entries wait meanwhile, and the checkpoint with them, up to their retry_for_s.
_MAKE_AGAIN_WAIT_S = 60.0
KEYS: dict[str, KeyTypeType] = {"pk": "HASH", "sk": "RANGE"}
HINT = (
    "the conflict log needs pk (HASH, S) and sk (RANGE, S): name another table in "
    "conflict_log.table"
)


class DynamoDbConflictLog:
    def __init__(
        self,
        client: DynamoDBClient,
        table: str,
        retention_days: int,
        where: str,
        clock: Any = time.time,
    ) -> None:
        self.client = client
        self.table = table
        self.retention_s = retention_days * _DAY_S
        self.where = where
        self.description = f"DynamoDB table {table} ({where})"
        self.stopping = threading.Event()
        self._clock = clock
        # Set by read() when the table does not exist: a line that says so.
        self.missing: str | None = None

    # -- writing --------------------------------------------------------------------------

    def put(self, entry: ConflictEntry) -> None:
        item = self._item(entry)
        failure = self._put_item(item)
        if failure is not None and self._made_again(failure.__cause__):
            failure = self._put_item(item)
        if failure is not None:
            raise failure

    def put_all(self, entries: Sequence[ConflictEntry]) -> list[StoreOutcome]:
        """``entries`` in requests of 25 (module docstring). A request that fails as a
        whole for a reason that may pass leaves it and the requests after it unavailable:
        they are not sent to an endpoint that is failing."""
        items = [self._item(entry) for entry in entries]
        outcomes: list[StoreOutcome] = [None] * len(items)
        # A request may not name a key twice (an entry handed over twice): a copy
        # shares the outcome of the one sent.
        sent: dict[tuple[str, str], int] = {}
        copies: dict[int, int] = {}
        for index, item in enumerate(items):
            copies[index] = sent.setdefault(_key_of(item), index)
        unique = [index for index, first in copies.items() if index == first]
        for start in range(0, len(unique), BATCH_WRITE_LIMIT):
            try:
                self._write_batch(unique[start : start + BATCH_WRITE_LIMIT], items, outcomes)
            except ConflictLogUnavailable as error:
                for index in unique[start:]:
                    outcomes[index] = error
                break
        return [outcomes[first] for first in copies.values()]

    def _write_batch(
        self,
        batch: list[int],
        items: list[dict[str, Any]],
        outcomes: list[StoreOutcome],
        *,
        again: bool = False,
    ) -> None:
        """Write ``items[i]`` for each ``i`` of ``batch``, noting each one's outcome
        (``again``: once more, the table having been made again)."""
        try:
            answer = self.client.batch_write_item(
                RequestItems={self.table: [{"PutRequest": {"Item": items[i]}} for i in batch]}
            )
        except (ClientError, BotoCoreError) as error:
            if not again and self._made_again(error):
                self._write_batch(batch, items, outcomes, again=True)
                return
            failure = storage_failure(error, f"BatchWriteItem to {self.description}")
            if isinstance(failure, ConflictLogUnavailable):
                raise failure from error
            for index in batch:  # one item refuses the request: find it
                outcomes[index] = self._put_item(items[index])
            return
        unprocessed = answer.get("UnprocessedItems", {}).get(self.table, [])
        if not unprocessed:
            return
        by_key = {_key_of(items[index]): index for index in batch}
        left = ConflictLogUnavailable(
            f"BatchWriteItem to {self.description}: {len(unprocessed)} of {len(batch)} "
            "items unprocessed"
        )
        for request in unprocessed:
            outcomes[by_key[_key_of(request["PutRequest"]["Item"])]] = left

    def _put_item(self, item: dict[str, Any]) -> StoreOutcome:
        return stored(
            lambda: self.client.put_item(TableName=self.table, Item=item),
            f"PutItem to {self.description}",
        )

    def _item(self, entry: ConflictEntry) -> dict[str, Any]:
        blob = gzip.compress(entry.to_json().encode("utf-8"))
        room = ITEM_LIMIT - _ENVELOPE - 2 * len(entry.item.encode("utf-8"))
        if len(blob) > room:
            log.warning(
                "conflict entry too large for one DynamoDB item; images stored as their sha256",
                id=entry.id,
                destination=entry.destination,
            )
            entry = entry.fitted(room, size=_compressed_size)
            blob = gzip.compress(entry.to_json().encode("utf-8"))
        return {
            "pk": {"S": partition_key(entry.item)},
            "sk": {"S": entry.sort_key},
            "id": {"S": entry.id},
            "kind": {"S": entry.kind},
            "destination": {"S": entry.destination},
            "at": {"S": entry.at},
            "key_text": {"S": describe_key(item_from_wire(entry.key))},
            TTL_ATTRIBUTE: {"N": str(int(self._clock()) + self.retention_s)},
            "entry": {"B": blob},
        }

    # -- reading --------------------------------------------------------------------------

    def read(self, selection: Selection) -> Iterator[ConflictEntry]:
        """The table's entries that match; EnvironmentProblem (exit 3) first when the
        table's keys are not the log's, as ``replicator run`` refuses it.

        A table that does not exist holds no entry: ``replicator run`` creates it at
        start, so a job that has not run yet (or not since the table was named) has none.
        That is said (:attr:`missing`), as for a log file that does not exist, not taken
        for an outage."""
        self.missing = None
        try:
            described = self.client.describe_table(TableName=self.table)["Table"]
        except (ClientError, BotoCoreError) as error:
            if error_code(error) == "ResourceNotFoundException":
                self.missing = (
                    f"no conflict-log table {self.table} at {self.where} (yet): nothing has "
                    "been recorded there; replicator run creates it at start"
                )
                return
            raise read_failure(error, f"conflict-log table {self.table}", self.where) from None
        check_key_schema(described, KEYS, f"conflict-log table {self.table}", self.where, HINT)
        kwargs: dict[str, Any] = {"TableName": self.table}
        operation: Callable[..., QueryOutputTypeDef | ScanOutputTypeDef]
        if selection.item is not None:
            condition = "pk = :pk"
            values: dict[str, Any] = {":pk": {"S": partition_key(selection.item)}}
            if selection.since is not None:
                condition += " AND sk >= :since"
                values[":since"] = {"S": selection.since_key}
            kwargs.update(KeyConditionExpression=condition, ExpressionAttributeValues=values)
            operation = self.client.query
        else:
            operation = self.client.scan
        now = int(self._clock())
        while True:
            try:
                page = operation(**kwargs)
            except (ClientError, BotoCoreError) as error:
                raise read_failure(error, f"conflict-log table {self.table}", self.where) from None
            for item in page.get("Items", []):
                expires = item.get(TTL_ATTRIBUTE, {}).get("N")
                if expires is not None and float(expires) < now:
                    continue  # expired, not yet removed by DynamoDB
                try:
                    entry = ConflictEntry.from_json(_unpacked(item))
                except EntryFormatError as error:
                    log.warning(
                        "unreadable conflict-log entry skipped",
                        table=self.table,
                        pk=item.get("pk", {}).get("S"),
                        sk=item.get("sk", {}).get("S"),
                        error=str(error),
                    )
                    continue
                if selection.matches(entry):
                    yield entry
            if "LastEvaluatedKey" not in page:
                return
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    # -- the table ------------------------------------------------------------------------

    def _made_again(self, error: BaseException | None) -> bool:
        """Whether the table was missing (``error``) and is there now, made by this call:
        the start could not make it (its endpoint did not answer), or it was deleted
        while the job ran. Without this, every entry until a restart would be dropped.
        What stops it being made (an outage, access denied) is logged, and the entries
        wait as for any outage."""
        if not isinstance(error, ClientError | BotoCoreError):
            return False
        if error_code(error) != "ResourceNotFoundException":
            return False
        try:
            self.ensure_exists(wait_s=_MAKE_AGAIN_WAIT_S)
        except (ClientError, BotoCoreError, EnvironmentProblem) as failure:
            log.error(
                "conflict-log table missing and not made; entries are retried and counted",
                table=self.table,
                where=self.where,
                error=str(failure),
            )
            return False
        log.warning("conflict-log table was missing; made it", table=self.table, where=self.where)
        return True

    def ensure_exists(self, wait_s: float = 120.0) -> None:
        """Create the table and turn its TTL on, unless that is already done.

        Raises EnvironmentProblem for what the operator must fix (access denied, a
        name DynamoDB refuses); an outage (throttling, 5xx, an endpoint that does not
        answer) propagates as the AWS error, for the caller to decide.
        """
        ensure_table(
            self.client,
            self.table,
            KEYS,
            TTL_ATTRIBUTE,
            f"conflict-log table {self.table}",
            self.where,
            HINT,
            wait_s,
        )


def _key_of(item: Any) -> tuple[str, str]:
    return item["pk"]["S"], item["sk"]["S"]


def _unpacked(item: dict[str, Any]) -> bytes:
    """The entry's JSON from an item; EntryFormatError when ``entry`` is missing or is not
    gzip (an item written by something else, or damaged)."""
    blob = item.get("entry", {}).get("B")
    if not isinstance(blob, bytes):
        raise EntryFormatError("the item has no binary attribute entry")
    try:
        return gzip.decompress(blob)
    except (OSError, EOFError, zlib.error) as error:  # gzip.BadGzipFile is an OSError
        raise EntryFormatError(f"entry is not gzip-compressed JSON: {error}") from None


def _compressed_size(entry: ConflictEntry) -> int:
    """What the table stores of an entry (its JSON, gzip-compressed): an image is only
    replaced by its digest when the compressed entry would not fit, so that a losing
    image that fits compressed stays restorable."""
    return len(gzip.compress(entry.to_json().encode("utf-8")))
