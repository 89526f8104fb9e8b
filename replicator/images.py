"""An item image as a stream record carried it, decoded only as far as it is read.

Most images are only forwarded: the put that replicates a change sends the very
DynamoDB JSON the stream record held. Decoding such an image into an
:data:`~replicator.items.Item` and encoding it again costs more than everything else
the processor does for the change, so an :class:`Image` keeps the record's bytes
(``wire``) and decodes:

* one attribute at a time for :meth:`Image.get` (what a conflict rule ranks by, the
  origin stamp of loop prevention), skipping the rest of the JSON;
* the whole item, checked down to its scalars, the first time anything else reads it
  (:attr:`Image.item`, or the image as a mapping).

The write path splices ``wire`` into the PutItem body unchanged
(:func:`replicator.writers.wire.request_body`); DynamoDB checks it as it checks any
request, and refuses a malformed one (the change is then dead-lettered with its answer).
An image found malformed here raises :class:`~replicator.exceptions.MalformedImage`,
which dead-letters the change as well.
"""

from __future__ import annotations

import base64
import copy
import functools
from collections.abc import Iterator, Mapping, Sequence
from typing import Annotated, Any, Literal, TypeVar, overload

import msgspec
from msgspec import UNSET, Meta, UnsetType

from replicator.exceptions import AttributeFormatError, MalformedImage
from replicator.items import (
    AttributeValue,
    Item,
    KeyId,
    canonical_number,
    item_from_wire,
    value_from_wire,
)

_T = TypeVar("_T")

# -- checking an image whole, in msgspec's C decoder ---------------------------------------
#
# Two typed decodes together say what ``item_from_wire`` says of an image, at about half
# its cost (they build no item): ``_Value`` checks what each type key holds (a string,
# a list of strings, base64 for a binary, true for NULL, maps and lists of values) and
# refuses unknown keys; the one-key decoder checks that every value has exactly one type key.
# Only when either refuses does the reference check run, to name the attribute at fault
# (or to pass an image nested deeper than ``_ONE_KEY_DEPTH``, which the one-key check does
# not follow).
# ``\Z``, not ``$``: msgspec searches with ``re``, whose ``$`` also matches before a final
# newline, which base64 with validation refuses.
_BASE64 = Annotated[
    str, Meta(pattern=r"^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?\Z")
]


class _Value(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    S: str | UnsetType = UNSET
    N: str | UnsetType = UNSET
    B: _BASE64 | UnsetType = UNSET
    SS: list[str] | UnsetType = UNSET
    NS: list[str] | UnsetType = UNSET
    BS: list[_BASE64] | UnsetType = UNSET
    M: dict[str, _Value] | UnsetType = UNSET
    L: list[_Value] | UnsetType = UNSET
    NULL: Literal[True] | UnsetType = UNSET
    BOOL: bool | UnsetType = UNSET


_Kind = Literal["S", "N", "B", "SS", "NS", "BS", "M", "L", "NULL", "BOOL"]
# msgspec types cannot refer to themselves outside a Struct, so the one-key check is
# spelt out level by level; images nested deeper fall back to the reference check. Its
# cost to build grows about threefold with each level (6 levels: ~10 ms; 8: ~100 ms, in
# every process that imported this module), so it is built at the first check, and
# deep enough for the items people store (nesting past six levels is rare).
_ONE_KEY_DEPTH = 6
_VALUES = msgspec.json.Decoder(dict[str, _Value])


@functools.cache
def _one_keys_decoder() -> msgspec.json.Decoder[Any]:
    """The one-key check's decoder, built once per process, when first needed."""
    one_key: Any = Annotated[dict[_Kind, str | bool | list[str]], Meta(min_length=1, max_length=1)]
    for _ in range(_ONE_KEY_DEPTH):
        one_key = Annotated[
            dict[_Kind, str | bool | list[str | one_key] | dict[str, one_key]],
            Meta(min_length=1, max_length=1),
        ]
    return msgspec.json.Decoder(dict[str, one_key])


_ANY = msgspec.json.Decoder()
_STRINGS = frozenset({"S", "N"})
_decoders: dict[str, msgspec.json.Decoder[Any]] = {}
_MISSING: Any = object()


def _one_attribute(name: str) -> msgspec.json.Decoder[Any]:
    """A decoder that reads attribute ``name`` of an image and skips the others."""
    decoder = _decoders.get(name)
    if decoder is None:
        struct = msgspec.defstruct(
            "OneAttribute", [("value", Any, msgspec.UNSET)], rename={"value": name}
        )
        decoder = _decoders[name] = msgspec.json.Decoder(struct)
    return decoder


class Image(Mapping[str, AttributeValue]):
    """One item image: the stream record's JSON (``wire``) or an item built elsewhere."""

    __slots__ = ("_item", "_read", "wire")

    def __init__(self, wire: msgspec.Raw | bytes | None = None, item: Item | None = None) -> None:
        """``wire``: the image's DynamoDB JSON text, a JSON object (a stream image);
        ``item``: an item already in boto3 form (write-backs, corrections, tools)."""
        self.wire = wire
        self._item = item
        self._read: dict[str, AttributeValue | None] | None = None

    @classmethod
    def of(cls, item: Item | None) -> Image | None:
        """An image of ``item`` (None for no item)."""
        return None if item is None else cls(item=item)

    def copy(self) -> Image:
        """An image of the same item that shares nothing this one can be changed through:
        the record's bytes (immutable) are decoded again when read, an item is copied."""
        if self.wire is not None:
            return Image(wire=self.wire)
        return Image(item=copy.deepcopy(self._item))

    @property
    def decoded(self) -> Item | None:
        """The item, if something has read it whole (None: only the bytes so far)."""
        return self._item

    @property
    def item(self) -> Item:
        """The whole item in boto3 form (binaries as bytes), decoded and checked once."""
        item = self._item
        if item is None:
            assert self.wire is not None
            try:
                item = item_from_wire(_ANY.decode(self.wire), has_binary=False)
            except AttributeFormatError as error:
                raise MalformedImage(str(error)) from None
            except msgspec.DecodeError as error:  # JSON msgspec will not build (1e400)
                raise MalformedImage(f"the image is not JSON ({error})") from None
            except RecursionError:  # DynamoDB nests at most 32 levels; a hand-made record
                raise MalformedImage("the image is nested too deeply to read") from None
            self._item = item
            self._read = None
        return item

    def check(self, read_ahead: Sequence[str] = (), key: KeyId | None = None) -> None:
        """Check the whole image as :attr:`item` would, without building the item (the
        intake checks every image as its record is read, most of them only forwarded);
        MalformedImage says which attribute is at fault.

        ``read_ahead``: attributes the rules will :meth:`get` (what they rank by, origin
        stamps). A string or number among them is kept from the check's decode, so that
        reading it does not scan the image once more.

        ``key``: the record's key (its ``Keys``); each of its attributes must be in the
        image with the same value (MalformedImage otherwise). A put writes the image, so
        one without its key would be refused by the destination as if the destination's
        key schema were at fault."""
        if self.wire is None:
            return
        if self._item is not None:
            if key is not None:
                _check_key(key, self._item)
            return
        try:
            values = _VALUES.decode(self.wire)
            _one_keys_decoder().decode(self.wire)
        except (msgspec.ValidationError, msgspec.DecodeError, RecursionError):
            # The reference check: raises naming the attribute, or passes (an image nested
            # deeper than the one-key check follows).
            item = self.item
            if key is not None:
                _check_key(key, item)
            return
        if key is not None:
            _check_key(key, values, wire=True)
        if not read_ahead:
            return
        read = self._read
        if read is None:
            read = self._read = {}
        for name in read_ahead:
            value = values.get(name)
            if value is None:
                read[name] = None
            elif type(value.S) is str:  # checked: the value's one type key
                read[name] = {"S": value.S}
            elif type(value.N) is str:
                read[name] = {"N": value.N}

    @overload
    def get(self, key: str, /) -> AttributeValue | None: ...

    @overload
    def get(self, key: str, /, default: AttributeValue | _T) -> AttributeValue | _T: ...

    def get(self, key: str, /, default: Any = None) -> Any:
        """One attribute's value, without decoding the others."""
        if self._item is not None:
            return self._item.get(key, default)
        read = self._read
        if read is None:
            read = self._read = {}
        value = read.get(key, _MISSING)
        if value is _MISSING:
            value = read[key] = self._decode_one(key)
        return default if value is None else value

    def _decode_one(self, name: str) -> AttributeValue | None:
        assert self.wire is not None
        value = _one_attribute(name).decode(self.wire).value
        if value is msgspec.UNSET:
            return None
        if type(value) is dict and len(value) == 1:
            ((kind, inner),) = value.items()
            if kind in _STRINGS and type(inner) is str:
                return value  # what rules read: a string or a number, already boto3's form
        try:
            return value_from_wire(value, name)
        except AttributeFormatError as error:
            raise MalformedImage(str(error)) from None
        except RecursionError:
            raise MalformedImage(f"attribute {name} is nested too deeply to read") from None

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.get(key) is not None

    def __getitem__(self, key: str) -> AttributeValue:
        return self.item[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.item)

    def __len__(self) -> int:
        return len(self.item)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Image):
            return self.item == other.item
        if isinstance(other, Mapping):
            return self.item == other
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        if self._item is not None:
            return f"Image({self._item!r})"
        return f"Image(wire={bytes(self.wire or b'')!r})"


def _check_key(key: KeyId, values: Mapping[str, Any], *, wire: bool = False) -> None:
    """That ``values`` hold the key attributes of ``key`` with their values: an item in
    boto3 form, or (``wire``) the checked decode of an image (:class:`_Value` structs)."""
    for name, kind, inner in key:
        value = values.get(name)
        if value is None:
            raise MalformedImage(_missing_key(name))
        held = getattr(value, kind, None) if wire else value.get(kind)
        if held != inner and not _same_key_value(kind, held, inner, wire=wire):
            raise MalformedImage(_different_key(name))


def _same_key_value(kind: str, held: Any, inner: object, *, wire: bool) -> bool:
    """Whether an image's key value ``held`` (of type ``kind``, or not there at all) that
    is not spelt as the key's canonical ``inner`` still equals it: a number spelt another
    way ("1.0" for "1"), a binary's base64 (``wire``) that decodes to the key's bytes."""
    if type(held) is not str:
        return False
    try:
        if kind == "N":
            return canonical_number(held) == inner
        if kind == "B" and wire:
            return base64.b64decode(held, validate=True) == inner
    except ValueError:  # not a number, not base64 (binascii.Error is a ValueError)
        return False
    return False


def _missing_key(name: str) -> str:
    return f"key attribute {name} (in the record's Keys) is missing from the image"


def _different_key(name: str) -> str:
    return f"key attribute {name} differs between the image and the record's Keys"


def stream_image(wire: msgspec.Raw) -> Image | None:
    """The image a record's ``NewImage``/``OldImage`` holds, or None for none: absent,
    null, or ``{}`` (adapter 2.x writes a missing image as ``{}``). Raises
    AttributeFormatError when it is not a JSON object."""
    if not wire:
        return None
    view = memoryview(wire)
    first = view[0]
    if first == 0x7B:  # "{"
        if len(view) <= 16 and bytes(view[1:]).strip() == b"}":
            return None
        return Image(wire)
    if bytes(view) == b"null":
        return None
    kind = type(_ANY.decode(wire)).__name__
    raise AttributeFormatError(f"expected a map of attributes, got {kind}")
