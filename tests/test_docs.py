"""The configuration reference names every key the job schema accepts; the README stays a
screen-sized entry point that links every page of docs/."""

from __future__ import annotations

import re
import types
import typing

from pydantic import BaseModel

from replicator.config.model import JobConfig
from tests.support import ROOT

README = (ROOT / "README.md").read_text()
CONFIGURATION = (ROOT / "docs" / "configuration.md").read_text()


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


def test_every_job_key_is_in_the_configuration_reference() -> None:
    documented = set(re.findall(r"^\| `([^`]+)` \|", CONFIGURATION, flags=re.MULTILINE))
    missing = [path for path in key_paths(JobConfig) if path not in documented]
    assert not missing, f"keys missing from docs/configuration.md: {missing}"


def test_the_readme_fits_on_a_screen_and_links_every_doc() -> None:
    assert len(README.splitlines()) < 250
    unlinked = [
        page.name
        for page in sorted((ROOT / "docs").glob("*.md"))
        if f"(docs/{page.name}" not in README
    ]
    assert not unlinked, f"docs not linked from README.md: {unlinked}"


def test_links_between_docs_name_pages_that_exist() -> None:
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    broken = []
    for page in pages:
        for target in re.findall(r"\]\(([^)#\s]+\.md)(?:#[^)]*)?\)", page.read_text()):
            if not (page.parent / target).resolve().exists():
                broken.append(f"{page.relative_to(ROOT)} -> {target}")
    assert not broken, broken


def test_the_active_active_repair_caution_names_pending_deletes_too() -> None:
    """The caution before ``verify --repair`` of an active-active pair named only items
    not yet replicated back (``extra``); a delete not yet replicated back looks
    ``missing``, and a repair copies the item back into the region that deleted it."""
    text = " ".join((ROOT / "docs" / "operator-tools.md").read_text().split())
    start = text.index("In an active-active pair, items written at a destination")
    caution = text[start : text.index("## redrive", start)]
    assert "look `extra`" in caution
    assert "deleted at a destination whose delete has not yet replicated back" in caution
    assert "look `missing`" in caution
    assert "copies such an item back into the region that deleted it" in caution
    assert "repair a pair while it is quiet" in caution
