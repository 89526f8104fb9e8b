"""A quicker answer from the tests' moto server to the calls the tests make most.

moto 5.2 serializes every answer through the service's botocore shapes, member by
member; for the item calls the tests and the replicator make thousands of times a
minute (puts, updates, gets, queries, scans), that walk is about a third of the
server's CPU, and the suite runs on two shared cores. For those calls the result moto
built is already the answer's JSON (DynamoDB's attribute values, binaries as bytes),
so it is written with ``json.dumps``. Every other call, and every error, goes through
moto's serializer as before. tests/test_fastmoto.py holds the two to the same JSON for
each of these calls, so that a moto release that changes its results fails there, not
as a replicator defect somewhere else.
"""

from __future__ import annotations

import base64
import json
from typing import Any

FAST_OPERATIONS = frozenset(
    {"PutItem", "UpdateItem", "GetItem", "Query", "Scan", "BatchGetItem", "GetShardIterator"}
)
_CONTENT_TYPE = "application/x-amz-json-1.0"


def _binary(value: Any) -> str:
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(value).decode()
    raise TypeError(f"{type(value).__name__} is not JSON")


def fast_body(result: Any) -> str:
    return json.dumps(result, default=_binary)


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
        ):
            headers = {"Content-Type": _CONTENT_TYPE, **self.response_headers}
            return 200, headers, fast_body(action_result.result)
        return serialized(self, action_result)

    BaseResponse.moto_serialized = serialized  # type: ignore[attr-defined]
    BaseResponse.serialized = quicker  # type: ignore[method-assign]
