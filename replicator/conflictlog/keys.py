"""Item keys as the conflict log stores them and as an operator types them.

The log groups an item's entries under one canonical string, so that all conflicts of
one item are one Query (DynamoDB) or one comparison (file, SQS) away whatever form the
key arrived in: ``1``, ``1.0`` and ``10E-1`` name the same DynamoDB item, so numbers are
canonicalized; names are sorted, so the order of a composite key does not matter.

On the command line a key is written the way the replicator's log lines show it,
``pk=S:order-1 sk=N:3`` (one ``name=TYPE:value`` per key attribute, TYPE ``S``, ``N``
or ``B`` with base64 for binaries; a name or value that is not a plain token JSON-quoted,
``pk=S:"order 1"``, as :func:`replicator.items.describe_key` shows it), or as a JSON
object in DynamoDB's attribute-value form (``{"pk": {"S": "order 1"}}``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Mapping

from replicator import items
from replicator.exceptions import KeySyntaxError
from replicator.items import AttributeValue, Item

# A name as describe_key shows it: a plain token, or a JSON string.
_NAME = r'"(?:[^"\\]|\\.)*"|[^\s="][^\s=]*'
_PAIR = re.compile(rf"(?:^|\s)({_NAME})=(S|N|B):")
_PAIR_HERE = re.compile(rf"({_NAME})=(S|N|B):")
_QUOTED = json.JSONDecoder()
_KEY_TYPES = ("S", "N", "B")


_MAX_SIGNIFICANT_DIGITS = 38


def canonical_number(text: str) -> str:
    """A number's one spelling (:func:`replicator.items.canonical_number`: exact, no
    exponent, no trailing zeros, ``0`` for every zero).

    Only what DynamoDB stores as a number is one: at most 38 significant digits, a
    magnitude from 1E-130 to below 1E+126. Anything else could never be an item's key,
    so it is refused (KeySyntaxError) rather than looked for; and no spelling is
    rounded, so that two keys that differ in their 38th digit stay two items.
    """
    try:
        canonical = items.canonical_number(text)
    except ValueError:
        raise KeySyntaxError(
            f"{text!r} is not a DynamoDB number (digits with an optional sign, point and "
            "exponent; a magnitude from 1E-130 to below 1E+126)"
        ) from None
    significant = canonical.lstrip("-").replace(".", "").strip("0")
    if len(significant) > _MAX_SIGNIFICANT_DIGITS:
        raise KeySyntaxError(
            f"{text!r} has {len(significant)} significant digits; a DynamoDB number has at "
            f"most {_MAX_SIGNIFICANT_DIGITS}"
        )
    return canonical


def canonical_key(keys: Mapping[str, AttributeValue]) -> str:
    """The string under which an item's entries are grouped (JSON, names sorted).

    Binaries are base64, numbers canonical: ``[["pk","S","order-1"],["sk","N","3"]]``.
    """
    parts: list[list[str]] = []
    for name in sorted(keys):
        ((kind, value),) = keys[name].items()
        if kind == "N":
            shown = canonical_number(str(value))
        elif kind == "B":
            raw = value if isinstance(value, bytes | bytearray) else base64.b64decode(value)
            shown = base64.b64encode(raw).decode("ascii")
        elif kind == "S":
            shown = str(value)
        else:
            raise KeySyntaxError(f"key attribute {name} has type {kind}; keys are S, N or B")
        parts.append([name, kind, shown])
    return json.dumps(parts, separators=(",", ":"), ensure_ascii=False)


# DynamoDB's limit on a partition key value (UTF-8 bytes).
_PARTITION_KEY_LIMIT = 2048


def partition_key(canonical: str) -> str:
    """The partition key under which a table of the replicator's own (tombstones, the
    conflict log) keeps an item's rows: its canonical key, or, when that is longer than
    DynamoDB takes (a legal item key near 2 KB grows with the names, types and base64
    around it), ``sha256:`` and the key's digest. Every region computes the same, and no
    canonical key starts with ``sha256:`` (it is a JSON list)."""
    encoded = canonical.encode("utf-8")
    if len(encoded) <= _PARTITION_KEY_LIMIT:
        return canonical
    return "sha256:" + hashlib.sha256(encoded).hexdigest()


def parse_key(text: str) -> Item:
    """An item key (boto3 form) from ``name=TYPE:value ...`` or a JSON attribute-value map."""
    stripped = text.strip()
    if not stripped:
        raise KeySyntaxError("the key is empty; write it as name=TYPE:value, e.g. pk=S:order-1")
    if stripped.startswith("{"):
        return _from_json(text, stripped)
    key: Item = {}
    position = 0
    while position < len(stripped):
        match = _PAIR_HERE.match(stripped, position)
        if match is None:
            raise KeySyntaxError(
                f"{text!r} is not a key: write name=TYPE:value for each key attribute "
                "(TYPE S, N or B), e.g. 'pk=S:order-1 sk=N:3', or a JSON object such as "
                '\'{"pk": {"S": "order-1"}}\''
            )
        name, kind = _unquoted(text, match.group(1)), match.group(2)
        if stripped.startswith('"', match.end()):
            value, position = _quoted(text, stripped, match.end())
        else:
            # Unquoted, a value runs to the next name=TYPE: after a blank.
            following = _PAIR.search(stripped, match.end())
            position = following.start() if following else len(stripped)
            value = stripped[match.end() : position].rstrip()
        if name in key:
            raise KeySyntaxError(f"{text!r} names key attribute {name!r} twice")
        key[name] = _typed(text, name, kind, value)
        while position < len(stripped) and stripped[position].isspace():
            position += 1
    return key


def _unquoted(text: str, name: str) -> str:
    return _quoted(text, name, 0)[0] if name.startswith('"') else name


def _quoted(text: str, stripped: str, start: int) -> tuple[str, int]:
    """The JSON string at ``start`` and where it ends, which must be a blank or the end."""
    try:
        value, end = _QUOTED.raw_decode(stripped, start)
    except json.JSONDecodeError as error:
        raise KeySyntaxError(
            f"{text!r}: {stripped[start:]!r} starts with a double quote but is not a JSON "
            f"string ({error.msg}); a value that starts with a double quote is written "
            'JSON-quoted, e.g. pk=S:"\\"x"'
        ) from None
    if not isinstance(value, str) or (end < len(stripped) and not stripped[end].isspace()):
        raise KeySyntaxError(
            f"{text!r}: a quoted name or value must be one JSON string followed by a blank "
            "or the end"
        )
    return value, end


class _Pairs(list[tuple[str, object]]):
    """A JSON object's members in order, a name given twice kept twice: read as a dict,
    the last would win unseen."""


def _from_json(text: str, stripped: str) -> Item:
    try:
        document = json.loads(stripped, object_pairs_hook=_Pairs)
    except json.JSONDecodeError as error:
        raise KeySyntaxError(f"{text!r} is not valid JSON ({error.msg})") from None
    key: Item = {}
    for name, value in document:
        if name in key:
            raise KeySyntaxError(f"{text!r} names key attribute {name!r} twice")
        if not (isinstance(value, _Pairs) and len(value) == 1):
            raise KeySyntaxError(
                f'{text!r}: attribute {name!r} must be one typed value such as {{"S": "x"}}'
            )
        ((kind, inner),) = value
        if kind not in _KEY_TYPES or not isinstance(inner, str):
            raise KeySyntaxError(
                f"{text!r}: attribute {name!r} must be S, N or B (base64) holding a string"
            )
        key[name] = _typed(text, name, kind, inner)
    if not key:
        raise KeySyntaxError(f"{text!r} names no key attribute")
    return key


def _typed(text: str, name: str, kind: str, value: str) -> AttributeValue:
    if value == "":
        raise KeySyntaxError(f"{text!r}: key attribute {name!r} has an empty value")
    if kind == "N":
        try:
            canonical_number(value)
        except KeySyntaxError as error:
            raise KeySyntaxError(f"{text!r}: key attribute {name}: {error}") from None
        return {"N": value}
    if kind == "B":
        try:
            return {"B": base64.b64decode(value, validate=True)}
        except (binascii.Error, ValueError):
            raise KeySyntaxError(
                f"{text!r}: {name}=B:{value} is not base64{_base64_hint(value)}"
            ) from None
    return {"S": value}


def _base64_hint(value: str) -> str:
    """What to write instead, when the value is base64 but for its form: its padding left
    out (``AAE`` for ``AAE=``), or the URL-safe alphabet (``-`` and ``_`` for ``+``
    and ``/``), as listings and log lines never show it."""
    standard = value.replace("-", "+").replace("_", "/")
    padded = standard + "=" * (-len(standard) % 4)
    try:
        base64.b64decode(padded, validate=True)
    except (binascii.Error, ValueError):
        return ""
    return f" as keys are shown (standard alphabet, padded with =): {padded}"
