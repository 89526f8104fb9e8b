"""How a destination's refusals are told apart and worded.

DynamoDB refuses a write for reasons that call for different answers, and its words are
what tells them apart: :func:`key_schema_differs` finds the refusals that say the
table's key is not the source's (a table re-created with another key), which are
retried and stop the worker rather than dead-letter each change. :func:`describe_refusal` and
:func:`refusal_answer` quote an error as log lines, dead letters and messages show it (with the
tombstone table it came from); :func:`expected_key` and :func:`missing_tombstones`
complete the message of a refusal that stops the worker, and :data:`NOT_PASSED` ends
it. Kept apart from the writer's retry loop (destination.py), which decides what each
refusal does, so that the commands that replace its ending (redrive, a restore) and
the tests read the same words.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from botocore.exceptions import ClientError

from replicator.aws.errors import ErrorKind, error_code, error_message, excerpt
from replicator.tombstones.table import KEY_SCHEMA, TombstoneTableError

# How a refusal that stops the worker ends: what it did not do. Commands that are not the
# worker (``redrive``) say instead what became of their own work.
NOT_PASSED = "nothing was dead-lettered and the checkpoint has not passed these changes"


# DynamoDB's answers to a write whose item or key lacks, or mistypes, an attribute of
# the table's key. The replicator always writes the source's key with the source's
# types, so at a destination these mean the table's key schema is not the source's.
# "Type mismatch for key pk expected: N actual: S" is a put whose item carries the
# table's key attribute with another type (a table re-created with the same key name
# and another type). A mistyped index key is worded "Type mismatch for Index Key ..."
# and is the item's own problem: it does not match here and stays a dead letter.
_KEY_SCHEMA_MESSAGES = (
    "Missing the key ",
    "The provided key element does not match the schema",
    "Type mismatch for key ",
)


def key_schema_differs(error: BaseException) -> bool:
    """Whether ``error`` is a ValidationException that says the table's key is not the
    one the written item or key carries."""
    if not isinstance(error, ClientError) or error_code(error) != "ValidationException":
        return False
    message = str(error.response.get("Error", {}).get("Message", ""))
    return any(text in message for text in _KEY_SCHEMA_MESSAGES)


def keys_not_of(keys: Mapping[str, Mapping[str, Any]], schema: Mapping[str, str]) -> str | None:
    """Why ``keys`` (a change's, boto3 form) are not a key of a table whose key schema is
    ``schema`` (name -> ``HASH:S``, :class:`~replicator.aws.tables.TableShape`), or None
    when they are. A stream record always carries its table's key; keys that are not the
    source table's are a hand-made record's (one put on a Kinesis stream by hand), whose
    refusal at a destination says nothing of the destination's own key."""
    wanted = {name: kind.split(":", 1)[1] for name, kind in schema.items()}
    problems = [f"lacks {name}" for name in wanted if name not in keys]
    problems += [
        f"has {name} of type {next(iter(keys[name]), '?')}, not {kind}"
        for name, kind in wanted.items()
        if name in keys and set(keys[name]) != {kind}
    ]
    problems += [f"has {name}, which is no key attribute" for name in keys if name not in wanted]
    if not problems:
        return None
    key = ", ".join(f"{name} ({kind})" for name, kind in wanted.items())
    return f"its key {'; '.join(problems)} (the source table's key: {key})"


def describe_refusal(error: BaseException) -> str:
    """``error`` as log lines, dead letters and messages quote it: DynamoDB's answer, and
    the tombstone table it came from when it was one (the writer's own table is fine)."""
    if isinstance(error, TombstoneTableError):
        return f"{error.table}: {refusal_answer(error)}"
    return refusal_answer(error)


def refusal_answer(error: BaseException) -> str:
    """``error`` as DynamoDB answered it (code and message), or the exception's type and
    the start of its text when no answer came (a timeout, a dropped connection)."""
    if isinstance(error, ClientError):
        return f"{error_code(error)}: {error_message(error)}"
    return f"{type(error).__name__}: {excerpt(str(error))}"


def expected_key(error: BaseException) -> str:
    """The key a refused table should have had, for a refusal's message."""
    if isinstance(error, TombstoneTableError):
        return f"a tombstone table's, {KEY_SCHEMA}"
    return "the source table's"


def missing_tombstones(error: BaseException, kind: ErrorKind) -> str:
    """What to do about a missing tombstone table, for a refusal's message."""
    if isinstance(error, TombstoneTableError) and kind is ErrorKind.NOT_FOUND:
        return (
            ". The job creates a missing tombstone table when it starts: start it again "
            "(see 'Delete tombstones' in docs/active-active.md)"
        )
    return ""
