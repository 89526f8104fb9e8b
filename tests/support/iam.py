"""The least-privilege policy of docs/security.md, read from the page itself, and the AWS
calls a replicator made, as the session's moto server received them: a call the policy
does not grant is one the documented role would refuse in AWS, where the job stops.

The server records a process's calls by the access key in its signature, so a test gives
the processes it checks keys of their own and leaves out its own setup and checks."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from moto.core.responses import BaseResponse

PAGE = Path(__file__).parents[2] / "docs" / "security.md"
ACCOUNT = "111111111111"  # the account the page's policy names

_CREDENTIAL = re.compile(r"Credential=([^/]+)/")


@dataclass(frozen=True)
class Call:
    access_key: str
    target: str  # X-Amz-Target, e.g. "DynamoDB_20120810.GetItem"; "" for query protocols
    action: str
    region: str
    body: dict[str, Any]


WORKER_POLICY = "## Least-privilege IAM policy"
SOURCE_ROLE_POLICY = "## A source in another account"


def documented_statements(heading: str = WORKER_POLICY) -> list[dict[str, Any]]:
    """The statements of one of the page's policies (the first JSON block after its
    heading): the worker's, or the role a source in another account is read through."""
    text = PAGE.read_text().split(heading, 1)[1]
    block = text.split("```json\n", 1)[1].split("\n```", 1)[0]
    statements: list[dict[str, Any]] = json.loads(block)["Statement"]
    return statements


def worker_statements_in(account: str, *sids: str) -> list[dict[str, Any]]:
    """The worker policy's statements named ``sids``, for resources of ``account``: the
    ones the page tells a source role in that account to add."""
    chosen = [st for st in documented_statements() if st["Sid"] in sids]
    assert len(chosen) == len(sids), sids
    moved: list[dict[str, Any]] = json.loads(
        json.dumps(chosen).replace(f":{ACCOUNT}:", f":{account}:")
    )
    return moved


def _listed(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else value


def granted(statements: list[dict[str, Any]], action: str, arn: str) -> bool:
    """IAM's wildcard matching of one action on one resource against Allow statements."""
    return any(
        statement["Effect"] == "Allow"
        and any(fnmatchcase(action, pattern) for pattern in _listed(statement["Action"]))
        and any(fnmatchcase(arn, pattern) for pattern in _listed(statement["Resource"]))
        for statement in statements
    )


class CallLog:
    """Every request the in-process moto server answers while recording."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calls: list[Call] = []

    def calls(self, access_key: str) -> list[Call]:
        with self._lock:
            return [call for call in self._calls if call.access_key == access_key]

    def calls_all(self) -> list[Call]:
        with self._lock:
            return list(self._calls)

    def _record(self, response: BaseResponse) -> None:
        headers = getattr(response, "headers", None)
        if headers is None:
            return
        found = _CREDENTIAL.search(headers.get("Authorization", ""))
        body: Any = getattr(response, "body", None) or {}
        if isinstance(body, str | bytes):
            try:
                body = json.loads(body)
            except ValueError:
                body = {}
        call = Call(
            access_key=found.group(1) if found else "",
            target=headers.get("X-Amz-Target", ""),
            action=response._get_action(),
            region=response.region,
            body=body if isinstance(body, dict) else {},
        )
        with self._lock:
            self._calls.append(call)

    @contextmanager
    def recording(self) -> Iterator[CallLog]:
        original = BaseResponse._dispatch

        def dispatch(response: BaseResponse, *args: Any, **kwargs: Any) -> Any:
            try:
                return original(response, *args, **kwargs)
            finally:
                self._record(response)

        BaseResponse._dispatch = dispatch  # type: ignore[method-assign]
        try:
            yield self
        finally:
            BaseResponse._dispatch = original  # type: ignore[method-assign]


_SERVICES = {"DynamoDB_20120810": "dynamodb", "DynamoDBStreams_20120810": "dynamodb"}


def _documented_name(name: str, names: dict[str, str]) -> str:
    """``names`` maps a test's table names to the page's (``orders``, ``TASK``); a name
    they begin, followed by a suffix (``-tombstones``, ``-watermark``), keeps the suffix."""
    prefixes = [p for p in names if name == p or name.startswith(p + "-")]
    if not prefixes:
        return name
    prefix = max(prefixes, key=len)
    return names[prefix] + name[len(prefix) :]


def documented_resource(
    call: Call,
    regions: dict[str, str],
    names: dict[str, str],
    stream_table: str,
    account: str = ACCOUNT,
) -> tuple[str, str]:
    """The call as the page's policy names it: the IAM action and the resource's ARN,
    with the test's regions and names replaced by the page's (unknown ones kept, so that
    they match nothing and the check names them)."""
    region = regions.get(call.region, call.region)
    if call.target.startswith("AmazonSQS."):
        queue = _documented_name(str(call.body.get("QueueUrl", "")).rsplit("/", 1)[-1], names)
        return f"sqs:{call.action}", f"arn:aws:sqs:{region}:{account}:{queue}"
    service = _SERVICES.get(call.target.split(".", 1)[0], "unknown")
    arn = f"arn:aws:dynamodb:{region}:{account}:table/"
    if call.target.startswith("DynamoDBStreams_"):
        # GetRecords names only an iterator: the stream is the one the job reads.
        table = str(call.body.get("StreamArn", f"table/{stream_table}/")).split("table/")[1]
        return f"{service}:{call.action}", arn + _documented_name(table.split("/")[0], names) + (
            "/stream/LABEL"
        )
    # A batch names its tables in RequestItems (the job's batches read one table).
    named = call.body.get("TableName") or next(iter(call.body.get("RequestItems") or {}), "")
    if not named and "ResourceArn" in call.body:  # the tag calls name the table by its ARN
        named = str(call.body["ResourceArn"]).split(":table/", 1)[-1]
    table = _documented_name(str(named), names)
    index = f"/index/{call.body['IndexName']}" if "IndexName" in call.body else ""
    return f"{service}:{call.action}", arn + table + index


def ungranted(
    calls: list[Call],
    regions: dict[str, str],
    names: dict[str, str],
    stream_table: str,
    *,
    heading: str = WORKER_POLICY,
    account: str = ACCOUNT,
    added: list[dict[str, Any]] | None = None,
) -> list[str]:
    """Each call the documented policy (the one under ``heading``, with the statements
    ``added``, for resources of ``account``) does not grant, as "action on ARN", once."""
    statements = documented_statements(heading) + (added or [])
    named = [documented_resource(call, regions, names, stream_table, account) for call in calls]
    refused = {resource for resource in named if not granted(statements, *resource)}
    return sorted(f"{action} on {arn}" for action, arn in refused)
