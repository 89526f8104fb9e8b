"""The source table's key schema, as the writers ask for it when a destination refuses a
change's key (DestinationWriter.source_key_schema).

Such a refusal reads as a destination re-created with another key, which stops the
worker; it can also be a hand-made record whose keys are not the source's, which is that
record's fault. The source's key tells them apart. It is read only when such a refusal
comes, and kept for a few seconds: the source itself can be re-created with another key
while the job runs (nothing watches a Kinesis source for that), and a change of the new
table must then read as the destination's problem again, not as a stray record.

A source that cannot be described gives None (the refusal is the table's, as without
this check) and is not asked again for ten seconds, so that writer threads refused at once
do not each wait out a describe that does not answer; the reads are short and not
retried by the SDK, and one at a time.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

import structlog
from botocore.exceptions import BotoCoreError, ClientError

from replicator.aws.tables import shape_of
from replicator.exceptions import EnvironmentProblem

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.type_defs import TableDescriptionTypeDef

log = structlog.get_logger(__name__)

# Seconds a key schema read is used for: a source re-created with another key is seen
# this soon after.
KEPT_FOR_S = 5.0
# Seconds after a failed read before the source is described again (a warning each
# time): long enough that writer threads refused at once meet one failed read, short
# enough that a refusal after a passing outage reads the key again.
FAILED_FOR_S = 10.0


class SourceKeySchema:
    """Callable: the source table's key schema (name -> ``HASH:S``), or None when it
    cannot be read. ``describe`` is DescribeTable of the source (its ``Table``);
    ``what``/``where`` name it in messages."""

    def __init__(
        self,
        describe: Callable[[], TableDescriptionTypeDef],
        what: str,
        where: str,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._describe = describe
        self._what = what
        self._where = where
        self._clock = clock
        self._lock = threading.Lock()  # held during a read: one at a time
        self._schema: Mapping[str, str] | None = None
        self._read_at = 0.0
        self._failed_at: float | None = None

    def __call__(self) -> Mapping[str, str] | None:
        with self._lock:
            now = self._clock()
            if self._schema is not None and now - self._read_at < KEPT_FOR_S:
                return self._schema
            if self._failed_at is not None and now - self._failed_at < FAILED_FOR_S:
                return None
            try:
                schema = shape_of(self._describe(), self._what, self._where).key_schema
            except (ClientError, BotoCoreError, EnvironmentProblem) as error:
                self._failed_at = self._clock()
                self._schema = None
                log.warning(
                    "the source table's key could not be read to tell whether a "
                    "destination's refusal of a key is the record's or the table's: taken "
                    f"as the table's, and read again in {FAILED_FOR_S:g} s at the earliest",
                    source=f"{self._what} at {self._where}",
                    error=str(error),
                )
                return None
            self._schema, self._read_at, self._failed_at = schema, self._clock(), None
            return schema
