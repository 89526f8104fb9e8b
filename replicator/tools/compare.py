"""Comparing items: what differs between a source item and a destination item.

Pure functions over boto3-form items, shared by ``verify`` and the demo's
convergence check, so that "equal" means the same thing everywhere: same attributes,
same types, same values (numbers compared as numbers, sets as sets).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from replicator.items import Item, KeyId, canonical_number, describe_key, key_id


@dataclass
class Difference:
    key: KeyId
    kind: str  # "missing" | "extra" | "different"
    attributes: list[str] = field(default_factory=list)


def normalised(value: Mapping[str, Any]) -> Any:
    """A comparable form of one attribute value."""
    ((kind, inner),) = value.items()
    if kind == "N":
        return ("N", _number(inner))
    if kind == "NS":
        return ("NS", frozenset(_number(v) for v in inner))
    if kind in ("SS", "BS"):
        return (kind, frozenset(inner))
    if kind == "M":
        return ("M", tuple(sorted((k, normalised(v)) for k, v in inner.items())))
    if kind == "L":
        return ("L", tuple(normalised(v) for v in inner))
    return (kind, inner)


def _number(text: str) -> Any:
    """Exact: numbers of up to 38 digits that differ in the last one stay different."""
    try:
        return canonical_number(text)
    except ValueError:
        return ("not a number", text)


def differing_attributes(left: Item, right: Item) -> list[str]:
    names = sorted(set(left) | set(right))
    return [
        name
        for name in names
        if name not in left
        or name not in right
        or normalised(left[name]) != normalised(right[name])
    ]


def compare(
    source: Iterable[Item], destination: Iterable[Item], key_names: list[str]
) -> list[Difference]:
    """Every difference between two full sets of items."""
    left = {key_id({k: item[k] for k in key_names}): item for item in source}
    right = {key_id({k: item[k] for k in key_names}): item for item in destination}
    differences = []
    for key, item in left.items():
        other = right.get(key)
        if other is None:
            differences.append(Difference(key, "missing"))
            continue
        attributes = differing_attributes(item, other)
        if attributes:
            differences.append(Difference(key, "different", attributes))
    differences.extend(Difference(key, "extra") for key in right if key not in left)
    return differences


def describe(key: KeyId) -> str:
    """The key as every report shows one (:func:`replicator.items.describe_key`)."""
    return describe_key({name: {kind: value} for name, kind, value in key})
