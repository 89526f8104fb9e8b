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
    and the ``<region>/<table>`` of a named destination is then how to choose it (no
    name is another destination's ``<region>/<table>``: the job file refuses it). The
    refusal offers, for each, a spelling that finds it alone.

    An empty (or blank) name is refused as a ConfigError, never as UnknownDestination:
    no destination has one, nor ever had (a job file refuses it), so it cannot be that
    of a destination since removed, which ``replicator conflicts`` lists with a warning."""
    destinations = resolved.job.destinations
    if not name.strip():
        raise ConfigError(
            f"--destination {name!r}: no destination of {resolved.path} has an empty name: "
            f"give one's name or table; its destinations: {_listed(destinations)}"
        )
    fits = _fitting(destinations, name)
    if len(fits) == 1:
        return fits[0]
    if fits:
        raise ConfigError(
            f"--destination {name!r} fits several destinations "
            f"({', '.join(spelled(d) for d in fits)}); {_choices(destinations, fits)}"
        )
    raise UnknownDestination(
        f"--destination {name!r}: no destination of {resolved.path} has that name or table; "
        f"its destinations: {_listed(destinations)}"
    )


def _fitting(destinations: Sequence[DestinationConfig], name: str) -> list[DestinationConfig]:
    fits = [d for d in destinations if name in (d.label, d.table)]
    return fits or [d for d in destinations if name == f"{d.region}/{d.table}"]


def _choices(destinations: Sequence[DestinationConfig], fits: list[DestinationConfig]) -> str:
    """What to give instead: for each destination that fits, a spelling that finds it
    alone. One found by none is named as such, never offered a spelling that finds
    another."""
    found = [(d, _finding(destinations, d)) for d in fits]
    offered = [repr(spelling) for _, spelling in found if spelling is not None]
    said = [f"give {' or '.join(offered)}"] if offered else []
    said += [
        f"{spelled(d)} is found by no spelling: its name is another destination's table and "
        "its <region>/<table> another's name; give it a name no other destination has as "
        "its table"
        for d, spelling in found
        if spelling is None
    ]
    return "; ".join(said)


def _finding(
    destinations: Sequence[DestinationConfig], destination: DestinationConfig
) -> str | None:
    """The destination's label if that finds it alone, else its ``<region>/<table>`` if
    that does (a name that is also another's table), else None: its name is another's
    table and its ``<region>/<table>`` the default name of its twin in another account."""
    for spelling in (destination.label, f"{destination.region}/{destination.table}"):
        if [id(d) for d in _fitting(destinations, spelling)] == [id(destination)]:
            return spelling
    return None


def _listed(destinations: Sequence[DestinationConfig]) -> str:
    return ", ".join(spelled(d) for d in destinations)


def destination_place(destination: DestinationConfig) -> str:
    """A destination's ``<region>/<table>``, as its dead letters and conflict entries
    record theirs."""
    return f"{destination.region}/{destination.table}"


def destinations_at(
    destinations: Sequence[DestinationConfig], place: str, name: str, *, shared: bool = False
) -> list[DestinationConfig]:
    """The destinations at ``place`` (``<region>/<table>``) that a letter or entry
    recorded there under ``name`` may be for: the place decides, whatever the
    destination is called now (a name given since, or changed, does not make the
    record another's, and a name pointed elsewhere since does not send it there). Only
    where more than one is there (other accounts), or ``shared`` (the job's source is
    there too), does the recorded name tell them apart. One answer, or none."""
    there = [d for d in destinations if destination_place(d) == place]
    if len(there) + shared > 1:
        there = [d for d in there if d.label == name]
    return there


def spelled(destination: DestinationConfig) -> str:
    """The destination's label, and its ``<region>/<table>`` when the label is a name."""
    where = destination_place(destination)
    return where if destination.label == where else f"{destination.label} ({where})"
