"""The README's configuration reference names every key the job schema accepts."""

from __future__ import annotations

import re
import types
import typing
from pathlib import Path

from pydantic import BaseModel

from replicator.config.model import JobConfig

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def _unwrap(annotation: object) -> tuple[object, bool]:
    """The model inside Optional/Annotated/list, and whether it was a list."""
    origin = typing.get_origin(annotation)
    if origin is list:
        return _unwrap(typing.get_args(annotation)[0])[0], True
    if origin in (typing.Union, types.UnionType, typing.Annotated):
        for arg in typing.get_args(annotation):
            inner, is_list = _unwrap(arg)
            if isinstance(inner, type) and issubclass(inner, BaseModel):
                return inner, is_list
    return annotation, False


def key_paths(model: type[BaseModel], prefix: str = "") -> list[str]:
    paths = []
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        inner, is_list = _unwrap(field.annotation)
        if not (isinstance(inner, type) and issubclass(inner, BaseModel)):
            paths.append(path)
        elif is_list:
            paths += [f"{path}[]", *key_paths(inner, f"{path}[].")]
        elif prefix == "destinations[].":  # a per-destination override of a whole section
            paths.append(path)
        else:
            paths += key_paths(inner, f"{path}.")
    return paths


def test_every_job_key_is_in_the_readme_reference() -> None:
    documented = set(re.findall(r"^\| `([^`]+)` \|", README, flags=re.MULTILINE))
    missing = [path for path in key_paths(JobConfig) if path not in documented]
    assert not missing, f"keys missing from the README configuration reference: {missing}"
