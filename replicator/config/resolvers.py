"""A job's custom conflict resolvers, loaded when the job is: one that does not load is a
problem of the job file, found by ``validate`` and before ``run`` or a tool starts.

Kept apart from the pipeline's wiring so that checking a job file imports only what the
job names: ``validate`` runs in deploy pipelines and pre-commit hooks, where each second
of start-up is paid on every call."""

from __future__ import annotations

import os
import sys

from replicator.config.model import ConflictPolicyName, ResolvedJob
from replicator.exceptions import ConfigError, PlanError


def check_resolvers(resolved: ResolvedJob) -> None:
    """Import every custom resolver the job names, before anything starts: one that does
    not load is a ConfigError naming the job file and key (exit 2), not a processor that
    fails at each start, nor a traceback from a tool."""
    custom = [
        (place, conflict.resolver)
        for place, conflict in resolved.job.conflict_settings
        if conflict.policy is ConflictPolicyName.CUSTOM and conflict.resolver
    ]
    if not custom:
        return
    from replicator.rules.custom import load_resolver

    # The processors run as ``python -m``, which puts the working directory first on the
    # import path; the console script does not. Import from where they will.
    here = os.getcwd()
    added = here not in sys.path and "" not in sys.path
    if added:
        sys.path.insert(0, here)
    try:
        for place, resolver in custom:
            try:
                load_resolver(resolver)
            except PlanError as error:
                raise ConfigError(f"{resolved.path}: {place}.resolver: {error}") from None
    finally:
        if added:
            sys.path.remove(here)
