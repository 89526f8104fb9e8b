"""DynamoDB attribute values in the two shapes the replicator meets.

Stream records carry attribute values as JSON ("wire" form: ``B``/``BS`` base64 text);
boto3's low-level client takes and returns them with ``B``/``BS`` as ``bytes``.
Everything inside the replicator uses the boto3 shape, converted once at the edge,
so that binary attributes survive byte for byte and numbers stay the exact strings
the source sent.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import unicodedata
from collections.abc import Mapping
from decimal import Context, Decimal, InvalidOperation
from typing import Any

from replicator.exceptions import AttributeFormatError, BinaryValueFound

AttributeValue = dict[str, Any]
Item = dict[str, AttributeValue]
# What reads an item without changing it takes: an Item, or a stream image
# (replicator.images.Image) that decodes only what is read.
ItemView = Mapping[str, AttributeValue]
KeyId = tuple[tuple[str, str, object], ...]


def item_from_wire(image: Mapping[str, Any], *, has_binary: bool = True) -> Item:
    """Convert a stream image (base64 binaries) to boto3 form (bytes binaries).

    Every attribute value is checked down to its scalars (an ``S`` holds a string, an
    ``SS`` a list of strings, ...), so that a decoded item is one boto3 can send as it is.
    ``has_binary=False`` lets the caller skip the conversion when the raw JSON holds no
    ``"B"``/``"BS"`` key at all, which is the common case and saves most of the work.
    """
    if not isinstance(image, Mapping):
        raise AttributeFormatError(f"expected a map of attributes, got {type(image).__name__}")
    if not has_binary:
        try:
            _check_map(image, "")
            return dict(image)
        except BinaryValueFound:
            pass  # a binary the caller's scan missed (an escaped key): convert after all
    return {name: value_from_wire(value, name) for name, value in image.items()}


_STRINGS = frozenset({"S", "N"})
_SETS = frozenset({"SS", "NS", "BS"})
_BINARIES = frozenset({"B", "BS"})


def _check_map(attributes: Mapping[str, Any], prefix: str) -> None:
    """Check the attribute values of a map; a string or number, by far the most common
    value, is checked inline and its path is only spelt out when it is wrong."""
    for name, value in attributes.items():
        if type(value) is dict and len(value) == 1:
            (kind,) = value
            if kind in _STRINGS and type(value[kind]) is str:
                continue
        _check(value, f"{prefix}{name}")


def _check(value: Any, path: str) -> None:
    """Validate an attribute value that needs no conversion (no binaries inside)."""
    if type(value) is not dict or len(value) != 1:
        raise AttributeFormatError(f"attribute {path}: expected one type key, got {value!r}")
    ((kind, inner),) = value.items()
    if kind == "M":
        if type(inner) is not dict:
            raise AttributeFormatError(f"attribute {path}: M must hold a map")
        _check_map(inner, f"{path}.")
    elif kind == "L":
        if type(inner) is not list:
            raise AttributeFormatError(f"attribute {path}: L must hold a list")
        for index, nested in enumerate(inner):
            if type(nested) is dict and len(nested) == 1:
                (nested_kind,) = nested
                if nested_kind in _STRINGS and type(nested[nested_kind]) is str:
                    continue
            _check(nested, f"{path}[{index}]")
    elif kind in _BINARIES:
        raise BinaryValueFound
    else:
        _check_scalar(kind, inner, path)


def _check_scalar(kind: Any, inner: Any, path: str) -> None:
    if kind in _STRINGS or kind == "B":
        if type(inner) is not str:
            raise AttributeFormatError(f"attribute {path}: {kind} must hold a string")
    elif kind in _SETS:
        if type(inner) is not list or any(type(member) is not str for member in inner):
            raise AttributeFormatError(f"attribute {path}: {kind} must hold a list of strings")
    elif kind == "BOOL":
        if type(inner) is not bool:
            raise AttributeFormatError(f"attribute {path}: BOOL must hold true or false")
    elif kind == "NULL":
        if inner is not True:
            raise AttributeFormatError(f"attribute {path}: NULL must hold true")
    else:
        raise AttributeFormatError(f"attribute {path}: unknown type {kind!r}")


def value_from_wire(value: Any, path: str) -> AttributeValue:
    """One attribute value, stream form -> boto3 form, checked down to its scalars
    (``path`` names it in the error)."""
    if not isinstance(value, Mapping) or len(value) != 1:
        raise AttributeFormatError(f"attribute {path}: expected one type key, got {value!r}")
    ((kind, inner),) = value.items()
    if kind == "M":
        if not isinstance(inner, Mapping):
            raise AttributeFormatError(f"attribute {path}: M must hold a map")
        return {"M": {k: value_from_wire(v, f"{path}.{k}") for k, v in inner.items()}}
    if kind == "L":
        if not isinstance(inner, list):
            raise AttributeFormatError(f"attribute {path}: L must hold a list")
        return {"L": [value_from_wire(v, f"{path}[{i}]") for i, v in enumerate(inner)]}
    _check_scalar(kind, inner, path)
    try:
        if kind == "B":
            return {"B": base64.b64decode(inner, validate=True)}
        if kind == "BS":
            return {"BS": [base64.b64decode(part, validate=True) for part in inner]}
    except (ValueError, TypeError) as error:  # binascii.Error, and text that is not ASCII
        raise AttributeFormatError(f"attribute {path}: {kind} is not valid base64") from error
    return {kind: inner}


def image_digest(image: Mapping[str, Any]) -> str:
    """sha256 of a wire-form image's JSON (keys sorted, no spaces): how an image left out
    of a size-limited message is named (a conflict-log entry's, a dead letter's)."""
    text = json.dumps(image, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def image_summary(image: Mapping[str, Any]) -> dict[str, Any]:
    """What a size-limited message keeps of a wire-form image it leaves out: its sha256
    (:func:`image_digest`), its size as compact JSON, and its attribute names."""
    return {
        "sha256": image_digest(image),
        "bytes": len(json.dumps(image, separators=(",", ":")).encode("utf-8")),
        "attributes": sorted(image),
    }


def item_to_wire(item: Mapping[str, AttributeValue]) -> dict[str, Any]:
    """boto3 form -> JSON-safe form (base64 binaries), for dead letters and reports."""
    return {name: _value_to_wire(value) for name, value in item.items()}


def _value_to_wire(value: AttributeValue) -> Any:
    ((kind, inner),) = value.items()
    if kind == "B":
        return {"B": base64.b64encode(inner).decode("ascii")}
    if kind == "BS":
        return {"BS": [base64.b64encode(part).decode("ascii") for part in inner]}
    if kind == "M":
        return {"M": {k: _value_to_wire(v) for k, v in inner.items()}}
    if kind == "L":
        return {"L": [_value_to_wire(v) for v in inner]}
    return {kind: inner}


def key_id(keys: Mapping[str, AttributeValue]) -> KeyId:
    """A hashable identity of a primary key, equal for equal keys.

    Numbers are canonicalized exactly (``1`` and ``1.0`` name the same item in DynamoDB,
    two 38-digit numbers that differ in their last digit do not); the attribute names are
    part of the identity so hash and range keys never mix.
    """
    parts = []
    for name in sorted(keys):
        value = keys[name]
        if len(value) != 1:
            raise AttributeFormatError(f"key attribute {name}: expected one type key")
        ((kind, inner),) = value.items()
        if kind == "N":
            try:
                inner = canonical_number(inner)
            except ValueError as error:
                raise AttributeFormatError(f"key attribute {name}: {error}") from error
        elif kind not in ("S", "B"):
            raise AttributeFormatError(f"key attribute {name}: type {kind} cannot be a key")
        parts.append((name, kind, inner))
    if not parts:
        raise AttributeFormatError("the record has no key attributes")
    return tuple(parts)


# The spellings of a number DynamoDB takes; ASCII digits only (Decimal would also read
# other scripts' digits, underscores and surrounding blanks).
_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]{1,9})?")
# DynamoDB's number range: magnitudes from 1E-130 to below 1E+126, and zero.
_MIN_ADJUSTED_EXPONENT = -130
_MAX_ADJUSTED_EXPONENT = 125
_MAX_SIGNIFICANT_DIGITS = 38


def canonical_number(text: Any) -> str:
    """The one spelling of a DynamoDB number: equal numbers give equal text, never rounded.

    ``Decimal(text)`` is exact, but ``normalize()`` in the default context rounds to 28
    digits, which makes 38-digit numbers that differ in their last digits equal. The
    canonical form is plain notation without leading or trailing zeros, exponent or sign
    on zero (``"1.50"``, ``"15E-1"`` and ``"+1.5"`` all give ``"1.5"``). Raises
    ValueError, naming the text, for anything that is not a number in DynamoDB's range.
    """
    if type(text) is not str:
        raise ValueError(f"bad number {text!r}: not a string")
    if (
        0 < len(text) <= _MAX_SIGNIFICANT_DIGITS
        and text.isdigit()
        and text.isascii()
        and (text[0] != "0" or text == "0")
    ):
        return text  # the common case: a plain integer is its own canonical form
    if not _NUMBER.fullmatch(text):
        raise ValueError(f"bad number {text!r}")
    number = Decimal(text)
    if number.is_zero():
        return "0"
    adjusted = number.adjusted()
    if not _MIN_ADJUSTED_EXPONENT <= adjusted <= _MAX_ADJUSTED_EXPONENT:
        raise ValueError(f"bad number {text!r}: outside DynamoDB's range (1E-130 to 1E+126)")
    # A precision of all its digits: normalize() then only drops trailing zeros.
    exact = Context(prec=max(1, len(number.as_tuple().digits)))
    return format(number.normalize(exact), "f")


def describe_key(keys: Mapping[str, AttributeValue]) -> str:
    """A short human-readable key for reports and logs, on one line and read back by
    ``replicator conflicts --key``: ``pk=S:order-1 sk=N:3``.

    A key string can hold anything: a newline would split a report's line, a space make
    ``pk=S:a sk=N:1`` two readings, a tab or NUL pass unseen. So a name or string value
    that is not a plain token (:func:`key_token`) is shown JSON-quoted, every character
    outside printable ASCII escaped: ``pk=S:"order 1\\n"``."""
    parts = []
    for name in sorted(keys):
        ((kind, inner),) = keys[name].items()
        if kind == "B":
            shown = base64.b64encode(inner).decode("ascii")
        elif kind == "S":
            shown = key_token(str(inner))
        else:
            shown = _shown_number(inner)
        parts.append(f"{key_token(name, forbidden='=')}={kind}:{shown}")
    return " ".join(parts)


def _shown_number(text: Any) -> str:
    """A key number in its canonical spelling, so that a log line and a listing show
    one item's key alike (the stream may send ``-1.5E+3`` for what a listing shows as
    ``-1500``); text that is no number is shown as it is, never hidden by the error."""
    try:
        return canonical_number(text)
    except ValueError:
        return str(text)


def key_token(text: str, *, forbidden: str = "") -> str:
    """``text`` as it is when it reads back unambiguously (not empty, printable, no
    whitespace, none of ``forbidden``, not starting with a double quote, which starts a
    quoted token, nor with ``{``, which makes a whole key read as JSON), else as a JSON
    string of printable ASCII. Text not in Unicode's composed form (NFC: ``cafe`` and a
    combining accent) is quoted too: printed as it is, it looks the same as the composed
    ``café``, another key to DynamoDB, and a report would seem to list one key twice."""
    plain = (
        text
        and text.isprintable()
        and unicodedata.is_normalized("NFC", text)
        and not any(character.isspace() or character in forbidden for character in text)
        and not text.startswith(('"', "{"))
    )
    return text if plain else json.dumps(text)


# What marks the parts of the fields that rank an image, as reports and logs show them:
# ``(updated_at=2027, origin=us-east-1)``.
_FIELD_MARKS = "(),="


def describe_field(name: str, value: AttributeValue | None) -> str:
    """``name=value`` for an attribute of an image, as reports, log lines and conflict
    entries show what ranks it: ``updated_at=2027``, ``updated_at=(absent)``.

    The value is data, as a key is: a newline in it would forge a report's line, a
    comma or parenthesis end the list it is in. So, as in :func:`describe_key`, a name or
    string (or number) that is not a plain token is JSON-quoted; a binary is base64, a
    set, list or map compact JSON of printable ASCII."""
    return f"{key_token(name, forbidden=_FIELD_MARKS)}={_value_text(value)}"


def describe_names(names: list[str]) -> str:
    """Attribute names as a report lists them (``a, "b c"``): each one token, quoted as
    :func:`describe_field` quotes a name, so a name cannot add an entry or a line."""
    return ", ".join(key_token(name, forbidden=_FIELD_MARKS) for name in names)


def _value_text(value: AttributeValue | None) -> str:
    if value is None:
        return "(absent)"
    ((kind, inner),) = value.items()
    if kind in ("S", "N"):
        return key_token(str(inner), forbidden=_FIELD_MARKS)
    if kind == "B":
        return base64.b64encode(inner).decode("ascii")
    if kind in ("BOOL", "NULL"):
        return str(inner)
    return json.dumps(_value_to_wire(value)[kind], separators=(",", ":"))


def project(item: Mapping[str, AttributeValue], names: list[str]) -> Item:
    """The key attributes of an item, given the key schema's attribute names."""
    return {name: item[name] for name in names if name in item}


def same_item(left: Mapping[str, AttributeValue], right: Mapping[str, AttributeValue]) -> bool:
    """Whether two items hold the same values as DynamoDB compares them.

    Numbers compare by value, exactly (``Decimal`` built from a string keeps every digit;
    only arithmetic would round), and sets compare without regard to order.
    """
    if left.keys() != right.keys():
        return False
    return all(_same_value(left[name], right[name]) for name in left)


def _same_value(left: AttributeValue, right: AttributeValue) -> bool:
    if len(left) != 1 or len(right) != 1:
        return False
    ((kind, a),) = left.items()
    ((other_kind, b),) = right.items()
    if kind != other_kind:
        return False
    try:
        if kind == "N":
            return bool(Decimal(a) == Decimal(b))
        if kind == "NS":
            return {Decimal(x) for x in a} == {Decimal(x) for x in b}
    except (InvalidOperation, TypeError):
        return bool(a == b)
    if kind in ("SS", "BS"):
        return set(a) == set(b)
    if kind == "M":
        return isinstance(a, Mapping) and isinstance(b, Mapping) and same_item(a, b)
    if kind == "L":
        return len(a) == len(b) and all(_same_value(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)
