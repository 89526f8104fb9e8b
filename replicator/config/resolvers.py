"""A job's custom conflict resolvers, loaded when the job is: one that does not load is a
problem of the job file, found by ``validate`` and before ``run`` or a tool starts, and
reported with the file's other problems, at its key's line.

Kept apart from the pipeline's wiring so that checking a job file imports only what the
job names: ``validate`` runs in deploy pipelines and pre-commit hooks, where each second
of start-up is paid on every call."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Mapping
from typing import Any

from pydantic import ValidationError

from replicator.config.cross_checks import Problems
from replicator.config.model import ConflictConfig, ConflictPolicyName
from replicator.exceptions import Interrupted, PlanError


def resolver_problems(document: Mapping[str, Any]) -> Problems:
    """Import every custom resolver the job file names, before anything starts: one that
    does not load is a problem at its ``resolver`` key (exit 2), not a processor that fails
    at each start, nor a traceback from a tool.

    ``document`` is the file's mapping as read, whatever its other problems: a resolver
    is loaded when its own section's ``policy`` and ``resolver`` are valid, so that its
    problem is reported beside a bad ``metrics.port`` rather than after it is fixed."""
    custom = list(_custom_resolvers(document))
    if not custom:
        return []
    from replicator.rules.custom import load_resolver

    # The processors run as ``python -m``, which puts the working directory first on the
    # import path; the console script does not. Import from where they will.
    here = os.getcwd()
    added = here not in sys.path and "" not in sys.path
    if added:
        sys.path.insert(0, here)
    problems: Problems = []
    try:
        for place, resolver in custom:
            try:
                load_resolver(resolver)
            except PlanError as error:
                problems.append((place, str(error)))
            except KeyboardInterrupt:
                raise Interrupted(
                    f"interrupted (SIGINT) while importing the custom resolver {resolver!r}"
                ) from None
    finally:
        if added:
            sys.path.remove(here)
    return problems


def _custom_resolvers(document: Mapping[str, Any]) -> Iterator[tuple[tuple[str | int, ...], str]]:
    """Each ``resolver`` key of a ``custom`` section (the job's, and each destination's
    own) whose section's policy and resolver are valid, with the resolver."""
    sections: list[tuple[tuple[str | int, ...], object]] = [
        (("conflict",), document.get("conflict"))
    ]
    destinations = document.get("destinations")
    if isinstance(destinations, list):
        sections += [
            (("destinations", index, "conflict"), destination.get("conflict"))
            for index, destination in enumerate(destinations)
            if isinstance(destination, Mapping)
        ]
    for place, section in sections:
        if not isinstance(section, Mapping):
            continue
        own = {key: section[key] for key in ("policy", "resolver") if key in section}
        try:
            conflict = ConflictConfig.model_validate(own)
        except ValidationError:
            continue  # reported as the section's own problem
        if conflict.policy is ConflictPolicyName.CUSTOM and conflict.resolver:
            yield (*place, "resolver"), conflict.resolver
