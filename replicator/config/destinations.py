"""A destination as an operator names it on the command line (``--destination``): every
command that takes one finds it alike, so a spelling one accepts is not "unknown" to
another."""

from __future__ import annotations

from collections.abc import Sequence

from replicator.config.model import DestinationConfig, ResolvedJob
from replicator.exceptions import ConfigError, UnknownDestination


def resolve_destination(resolved: ResolvedJob, name: str) -> DestinationConfig:
    """A destination by its label (``name``, default ``<region>/<table>``) or its table
    name; failing both, by its ``<region>/<table>``. Refused when more than one fits: a
    name that is also another destination's table would otherwise pick one silently,
    and the ``<region>/<table>`` of a named destination is then how to choose it.

    An empty (or blank) name is refused as a ConfigError, never as UnknownDestination:
    no destination has one, nor ever had (a job file refuses it), so it cannot be that
    of a destination since removed, which ``replicator conflicts`` lists with a warning."""
    destinations = resolved.job.destinations
    if not name.strip():
        raise ConfigError(
            f"--destination {name!r}: no destination of {resolved.path} has an empty name: "
            f"give one's name or table; its destinations: {_listed(destinations)}"
        )
    fits = [d for d in destinations if name in (d.label, d.table)]
    if not fits:
        fits = [d for d in destinations if name == f"{d.region}/{d.table}"]
    if len(fits) == 1:
        return fits[0]
    if fits:
        # Two destinations of one region and table (in two accounts) differ by name alone.
        places = {(d.region, d.table) for d in fits}
        choose = "give one's name" + (" or <region>/<table>" if len(places) == len(fits) else "")
        raise ConfigError(
            f"--destination {name!r} fits several destinations "
            f"({', '.join(spelled(d) for d in fits)}); {choose}"
        )
    raise UnknownDestination(
        f"--destination {name!r}: no destination of {resolved.path} has that name or table; "
        f"its destinations: {_listed(destinations)}"
    )


def _listed(destinations: Sequence[DestinationConfig]) -> str:
    return ", ".join(spelled(d) for d in destinations)


def spelled(destination: DestinationConfig) -> str:
    """The destination's label, and its ``<region>/<table>`` when the label is a name."""
    where = f"{destination.region}/{destination.table}"
    return where if destination.label == where else f"{destination.label} ({where})"
