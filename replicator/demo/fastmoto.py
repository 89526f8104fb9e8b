"""A quicker answer from the demo's and the tests' moto server to the calls made most.

moto 5.2 serializes every answer through the service's botocore shapes, member by
member; for the item calls the replicator, the demo's workload and the tests make
thousands of times a minute (puts, updates, deletes, gets, queries, scans, stream
reads), that walk is about a third of the server's CPU (a stream read of 1,000 records
took over half a second), on the same cores as the replicator it serves. For those
calls the result moto built is already the answer's JSON (DynamoDB's attribute values,
binaries as bytes), so it is written with ``json.dumps``. Every other call, and every
error, goes through moto's serializer as before. tests/test_fastmoto.py holds the two to
the same JSON for each of these calls, so that a moto release that changes its results
fails there, not as a replicator defect somewhere else.
"""

from __future__ import annotations

import base64
import calendar
import functools
import json
from datetime import datetime
from typing import Any

FAST_OPERATIONS = frozenset(
    {
        "PutItem",
        "UpdateItem",
        "GetItem",
        "DeleteItem",
        "Query",
        "Scan",
        "BatchGetItem",
        "GetShardIterator",
        "GetRecords",
    }
)
# What an answer holds where moto's result holds more than the answer's shape (moto's
# serializer leaves out what the shape does not name).
_ANSWER_KEYS = {"DeleteItem": ("Attributes", "ConsumedCapacity", "ItemCollectionMetrics")}
_CONTENT_TYPE = "application/x-amz-json-1.0"
_SERVICES = frozenset({"moto.dynamodb.responses", "moto.dynamodbstreams.responses"})


def _json_value(value: Any) -> Any:
    """Binaries as base64; a time (a stream record's ApproximateCreationDateTime) as
    the JSON protocol's epoch seconds, truncated to milliseconds as moto writes it."""
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(value).decode()
    if isinstance(value, datetime):
        seconds = calendar.timegm(value.timetuple())
        return seconds + (value.microsecond // 1000) / 1000.0 if value.microsecond else seconds
    raise TypeError(f"{type(value).__name__} is not JSON")


def fast_body(result: Any, action: str = "") -> str:
    keys = _ANSWER_KEYS.get(action)
    if keys is not None:
        result = {key: result[key] for key in keys if key in result}
    return json.dumps(result, default=_json_value)


def install() -> None:
    """Patch moto's answer serializer in this process (once: the serializer it replaces
    is kept as ``BaseResponse.moto_serialized``, which also marks it done)."""
    from moto.core.responses import ActionResult, BaseResponse, PaginatedResult

    if hasattr(BaseResponse, "moto_serialized"):
        return
    serialized = BaseResponse.serialized

    def quicker(self: Any, action_result: ActionResult) -> Any:
        if (
            not isinstance(action_result, PaginatedResult)
            and isinstance(action_result.result, dict)
            and self._get_action() in FAST_OPERATIONS
            and type(self).__module__ in _SERVICES  # Kinesis has a GetRecords of its own
        ):
            headers = {"Content-Type": _CONTENT_TYPE, **self.response_headers}
            return 200, headers, fast_body(action_result.result, self._get_action())
        return serialized(self, action_result)

    BaseResponse.moto_serialized = serialized  # type: ignore[attr-defined]
    BaseResponse.serialized = quicker  # type: ignore[method-assign]
    _remember_lookups()


def _remember_lookups() -> None:
    """Two lookups moto repeats for every request, with answers that never change while
    it runs: the list of its service modules (a directory listing and a stat of each of
    about 150 entries, to match the Host header) and the methods of the service's
    response class (``inspect.getmembers``). About a fifth of the server's CPU per call."""
    from moto import backends
    from moto.core import responses, utils

    modules = tuple(backends.list_of_moto_modules())
    backends.list_of_moto_modules = lambda: modules
    # responses imported it by name: its own reference is the one to replace.
    responses.method_names_from_class = functools.cache(utils.method_names_from_class)  # type: ignore[attr-defined]
