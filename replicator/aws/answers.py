"""Telling a well-formed DynamoDB (DynamoDB Streams, Kinesis) answer from a garbled one.

botocore parses the body of any HTTP 200 answer it cannot read as JSON into ``{}`` (its
JSON parser keeps the text as a ``message`` no output shape has), so a proxy, a load
balancer or a broken connection that hands back ``200`` with garbage looks like an
empty success: a GetRecords without ``NextShardIterator`` (the shard's end, checkpointed
``SHARD_END`` for good), a PutItem that was applied, a Kinesis ListShards without
shards (a hand-off check with nothing to check), a DescribeTable without ``Table`` (a
``KeyError`` far from the cause). Such an answer says nothing of what the service
did: it is a failed call whose request may have landed, as a dropped connection is, and
it is raised as :class:`MalformedAnswer`, which :mod:`replicator.aws.errors` retries.

Every client :mod:`replicator.aws.clients` makes checks its answers here (a
``before-parse`` handler), and so do the direct write paths (:mod:`replicator.writers.wire`).
The ``x-amz-crc32`` header is checked where present (:func:`check_crc32`); it is not
required: DynamoDB Streams does not send it.
"""

from __future__ import annotations

import json
import zlib
from typing import Any

import msgspec
from botocore.exceptions import BotoCoreError, ChecksumError

from replicator.aws.errors import excerpt

# What an answer of these operations always holds: the code reads it without a default,
# or (ListShards, whose model marks nothing required) would read its absence as "none".
# Kinesis names its GetRecords, GetShardIterator and DescribeStream answers' parts as
# DynamoDB Streams does.
REQUIRED_KEYS = {
    "GetRecords": "Records",
    "GetShardIterator": "ShardIterator",
    "DescribeTable": "Table",
    "DescribeStream": "StreamDescription",
    "DescribeStreamSummary": "StreamDescriptionSummary",
    "ListShards": "Shards",
}
_SHOWN_CHARS = 80
# The answer's top level only, its values skipped (and checked for being JSON): the
# check of a GetRecords or Scan page of a megabyte costs about a thirtieth of a parse,
# which botocore then does once.
_TOP_LEVEL = msgspec.json.Decoder(dict[str, msgspec.Raw])


class MalformedAnswer(BotoCoreError):
    """An HTTP 200 whose body is not the operation's answer: a failed call that may have
    been carried out (see the module's docstring)."""

    fmt = (
        "{operation} answered HTTP 200 with a body that is not a well-formed answer "
        "({reason}): {body}"
    )


def parse_answer(operation: str, body: bytes) -> dict[str, Any]:
    """The JSON object of a 200 answer to ``operation``, or :class:`MalformedAnswer`
    naming the operation and what is wrong, with the start of the body."""
    if not body:
        raise _malformed(operation, "no body", body)
    try:
        parsed = json.loads(body)
    except ValueError:
        raise _malformed(operation, "not JSON", body) from None
    if not isinstance(parsed, dict):
        raise _malformed(operation, "not a JSON object", body)
    _check_required(operation, parsed, body)
    return parsed


def _check_required(operation: str, answer: dict[str, Any], body: bytes) -> None:
    required = REQUIRED_KEYS.get(operation)
    if required is not None and required not in answer:
        raise _malformed(operation, f"no {required}", body)


def check_before_parse(operation_model: Any, response_dict: dict[str, Any], **_: Any) -> None:
    """botocore's ``before-parse`` event: a 200 whose body fails its checksum, or that
    :func:`parse_answer` refuses, raises before botocore makes ``{}`` of it. Errors
    (not 200) are botocore's to parse."""
    if response_dict.get("status_code") != 200:
        return
    body = response_dict.get("body")
    if isinstance(body, bytes | bytearray):
        body = bytes(body)
        operation = operation_model.name
        check_crc32(body, response_dict.get("headers", {}).get("x-amz-crc32"))
        if not body:
            raise _malformed(operation, "no body", body)
        try:
            top_level = _TOP_LEVEL.decode(body)
        except msgspec.ValidationError:
            raise _malformed(operation, "not a JSON object", body) from None
        except msgspec.DecodeError:
            raise _malformed(operation, "not JSON", body) from None
        _check_required(operation, top_level, body)


def check_crc32(body: bytes, crc32: str | None) -> None:
    """:class:`ChecksumError` for a body that fails its ``x-amz-crc32`` header, when
    there is one. botocore's own check is a retry condition: once its attempts are spent
    (one, for the writers, which retry themselves) it returns the body as the answer."""
    if crc32 is not None and int(crc32) != zlib.crc32(body):
        raise ChecksumError(
            checksum_type="crc32",
            expected_checksum=crc32,
            actual_checksum=str(zlib.crc32(body)),
        )


def watch_answers(client: Any) -> Any:
    """``client`` (DynamoDB, DynamoDB Streams or Kinesis), its answers checked by
    :func:`check_before_parse`."""
    service = client.meta.service_model.service_id.hyphenize()
    client.meta.events.register(f"before-parse.{service}", check_before_parse)
    return client


def parsed_away(operation: str, reason: str) -> MalformedAnswer:
    """:class:`MalformedAnswer` for an answer a client not checked here (an application's
    own boto3 client) has already parsed: its body is gone, ``{}`` is all that is left."""
    return MalformedAnswer(
        operation=operation, reason=reason, body="(the client parsed it into an empty answer)"
    )


# The errors botocore's response parser raises on a value of an unexpected type deep in
# an answer (a map where a string is, a string where a map is, a blob that is not
# base64): its top level passed :func:`check_before_parse`.
PARSER_ERRORS = (AttributeError, TypeError, ValueError, KeyError, IndexError)


def unparsed(operation: str, error: BaseException, where: str = "") -> MalformedAnswer | None:
    """:class:`MalformedAnswer` for ``error`` (one of :data:`PARSER_ERRORS`) if botocore's
    response parser raised it: the answer is garbled below its top level, which is a
    failed call (retried) naming the operation and ``where`` it was read, not a bug of
    the caller's to stop on with a bare ``AttributeError``. None for an error raised
    anywhere else."""
    trace = error.__traceback__
    while trace is not None:
        if trace.tb_frame.f_globals.get("__name__") == "botocore.parsers":
            return MalformedAnswer(
                operation=operation,
                reason=f"botocore could not read it: {type(error).__name__}: {error}",
                body=f"(the body is not kept){where}",
            )
        trace = trace.tb_next
    return None


def _malformed(operation: str, reason: str, body: bytes) -> MalformedAnswer:
    shown = excerpt(body[:_SHOWN_CHARS].decode("utf-8", "replace")) or "(empty)"
    return MalformedAnswer(operation=operation, reason=reason, body=repr(shown))
