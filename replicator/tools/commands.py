"""The operator commands as the CLI runs them: logging, signals, output, exit status.

Kept apart from the tools themselves so that those stay callable from tests and
scripts without touching the process's signal handlers or stdout.
"""

from __future__ import annotations

import os
import signal
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from replicator import entry, logs
from replicator.config.loader import job_file_path, load_job, refuse_directory
from replicator.config.model import ResolvedJob

if TYPE_CHECKING:
    from replicator.conflictlog.base import ConflictLogTarget, Selection
    from replicator.conflictlog.sqs import SqsConflictLog


def load(config_path: Path, *, writes: bool = True) -> ResolvedJob:
    """The job, logging as it asks; ``writes``: the command plans writes, so its custom
    resolvers must load (a ConfigError, exit 2, when one does not)."""
    with logs.HeldPrints() as imported:  # a resolver's prints: logged as the job says
        resolved = load_job(job_file_path(config_path), resolvers=writes)
    try:
        logs.configure(resolved.job.logging.level, resolved.job.logging.format.value)
        logs.bind_everywhere(job=str(resolved.path), task=resolved.task_name)
    finally:
        imported.release()
    return resolved


@contextmanager
def interrupts(on_signal: Callable[[], None]) -> Iterator[None]:
    """Route SIGINT, SIGTERM and SIGHUP (:func:`replicator.entry.stop_signals`) to
    ``on_signal`` (called once per signal) while inside; from its end on, they are noted
    only (the command's result is decided)."""
    received = 0

    def act(number: int) -> None:
        nonlocal received
        received += 1
        name = signal.Signals(number).name
        if received == 1:
            logs.echo(
                f"replicator: {name} received; stopping after the work in hand "
                "(again to stop at once)",
                err=True,
            )
        else:
            logs.echo(f"replicator: {name} received again; stopping at once", err=True)
        on_signal()

    with routed_signals(act):
        yield


@contextmanager
def routed_signals(act: Callable[[int], None]) -> Iterator[None]:
    """SIGINT, SIGTERM and SIGHUP (:func:`replicator.entry.stop_signals`) handed to
    ``act`` (with the signal's number, on a thread of its own) while inside; from its
    end on, they are noted only (the command's result is decided).

    The first signal sent again within a second is one request, not two: coreutils'
    ``timeout`` signals the command and then its process group, and a closing terminal
    may send SIGHUP twice; taken for a second request, either stopped the command at
    once, skipping what a stop does first (:class:`replicator.entry.StopRequests`)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    handled = entry.stop_signals()
    previous = {number: signal.getsignal(number) for number in handled}
    requests = entry.StopRequests()

    def relayed(number: int, at: float) -> None:
        if not requests.repeated(number, at):
            act(number)

    relay = entry.SignalRelay(relayed)  # acted on off the handler: see SignalRelay
    relay.start()
    for number in handled:
        signal.signal(number, relay.handler)
    try:
        yield
    finally:
        # The work is over and its result decided: a signal from here to the process's
        # end (its summary printed, the interpreter ending) is noted, not acted on. The
        # handlers before (Python's KeyboardInterrupt) turned a second Ctrl-C just after
        # the summary into exit 130 with no word; ``replicator.entry`` ends these
        # commands without the interpreter's shutdown, which puts SIG_DFL back.
        entry.after_the_work(previous)
        relay.close()  # a signal that came during the work is acted on all the same


def backfill(config_path: Path, **options: Any) -> int:
    from replicator.tools.backfill import Backfill, BackfillOptions

    resolved = load(config_path)
    runner = Backfill(resolved, BackfillOptions(**options))
    # The summary is printed with the signals still routed to the runner: a second
    # Ctrl-C just after the work ended would otherwise end the command with 130, not
    # with the summary's exit code.
    with interrupts(runner.interrupt), aws_failures(f"backfill {resolved.task_name}", resolved):
        result = runner.run()
        logs.echo(result.summary())
    return result.exit_code


def verify(config_path: Path, as_json: bool, **options: Any) -> int:
    from replicator.tools.verify import Verify, VerifyOptions

    resolved = load(config_path, writes=bool(options.get("repair")))
    runner = Verify(resolved, VerifyOptions(**options))
    with interrupts(runner.interrupt), aws_failures(f"verify {resolved.task_name}", resolved):
        report = runner.run()
        logs.echo(report.as_json() if as_json else report.text())  # as backfill's
    return report.exit_code


def endpoints(resolved: ResolvedJob) -> str:
    """Where the job's tables are, for a message about an AWS error that may come from
    any of them: each region, with its endpoint_url when one is set."""
    from replicator.aws.tables import where

    job = resolved.job
    places = [where(job.source.region, job.source.endpoint_url)]
    places += [where(d.region, d.endpoint_url) for d in job.destinations]
    return " or ".join(dict.fromkeys(places))


@contextmanager
def aws_failures(what: str, resolved: ResolvedJob | None = None) -> Iterator[None]:
    """AWS errors that outlasted the retries, and destinations that refuse every write or
    stopped answering, as one clear line (naming the job's endpoints when ``resolved`` is
    given)."""
    from botocore.exceptions import BotoCoreError, ClientError

    from replicator.exceptions import (
        DeadLetterUnavailable,
        DestinationRefused,
        DestinationUnavailable,
        EnvironmentProblem,
    )
    from replicator.runtime.preflight import explain

    try:
        yield
    except (DestinationRefused, DestinationUnavailable, DeadLetterUnavailable) as error:
        raise EnvironmentProblem(f"{what}: {error}") from None
    except (ClientError, BotoCoreError) as error:
        where = endpoints(resolved) if resolved is not None else "its AWS endpoint"
        raise explain(error, what, where) from None


def redrive(config_path: Path) -> int:
    from replicator.tools.redrive import Redrive

    resolved = load(config_path)
    runner = Redrive(resolved)
    with interrupts(runner.interrupt), aws_failures(f"redrive {resolved.task_name}", resolved):
        report = runner.run()
        logs.echo(report.text())  # as backfill's
    return report.exit_code


def conflicts(
    config_path: Path,
    key: Any,
    since: str | None,
    destination: str | None,
    output: str,
    limit: int,
    restore_id: str | None,
    force: bool,
) -> int:
    from replicator.config.model import ConflictLogKind
    from replicator.conflictlog.base import Selection
    from replicator.conflictlog.keys import canonical_key
    from replicator.exceptions import ConfigError, LogReadingStopped

    resolved = load(config_path, writes=restore_id is not None)
    if force and restore_id is None:
        raise click.UsageError("--force is for --restore")
    if resolved.job.conflict_log.kind is ConflictLogKind.NONE:
        raise ConfigError(
            f"{resolved.path}: conflict_log.kind is none, so this job keeps no record of lost "
            "conflicts; set conflict_log.kind to file, sqs or dynamodb"
        )
    place = None
    if destination is not None:
        destination, place = _destination_label(resolved, destination)
    selection = Selection(
        item=canonical_key(key) if key is not None else None,
        since=since,
        destination=destination,
        place=place,
    )
    stop = _ReadingStop()
    with routed_signals(stop.act):
        try:
            exit_code = _conflicts(resolved, stop, key, selection, output, limit, restore_id, force)
        except LogReadingStopped:
            return stop.ended()
        stop.after_the_work()
        return exit_code


class _ReadingStop:
    """The stop signals while ``conflicts`` runs. The first ends the log's reading (an
    SQS log's reader lets go of the messages it holds at once: the queue's consumers
    and the next reading need them) or a restore before its write, and the command
    says so and exits 128 + the signal's number, as a shell reports a command the
    signal ended; a restore's write under way ends first, and its result stands. A
    second signal ends the process at once, whatever is in hand."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._target: ConflictLogTarget | None = None

    def act(self, number: int) -> None:
        if self.signum is not None:
            name = signal.Signals(number).name
            os.write(2, f"replicator: {name} received again; conflicts stopped\n".encode())
            os._exit(128 + self.signum)
        self.signum = number
        logs.echo(
            f"replicator: {signal.Signals(number).name} received; stopping (again to stop at "
            "once, leaving an SQS log's messages this reading holds hidden for up to 120 s)",
            err=True,
        )
        if self._target is not None:
            self._target.stopping.set()

    def watch(self, target: ConflictLogTarget) -> None:
        self._target = target
        if self.signum is not None:
            target.stopping.set()

    def ended(self) -> int:
        signum = self.signum if self.signum is not None else signal.SIGINT
        logs.echo(
            f"replicator: conflicts stopped by {signal.Signals(signum).name}; nothing was listed "
            "or written",
            err=True,
        )
        return 128 + signum

    def after_the_work(self) -> None:
        if self.signum is not None:
            name = signal.Signals(self.signum).name
            logs.echo(
                f"replicator: {name} received as the command ends; its result stands", err=True
            )


def _conflicts(
    resolved: ResolvedJob,
    stop: _ReadingStop,
    key: Any,
    selection: Selection,
    output: str,
    limit: int,
    restore_id: str | None,
    force: bool,
) -> int:
    from replicator.config.model import ConflictLogKind
    from replicator.config.stranded import stranded_files
    from replicator.conflictlog import sqs
    from replicator.conflictlog.reader import Listing, read_task_entries
    from replicator.conflictlog.restore import named_places, restore, under_current_names
    from replicator.conflictlog.targets import conflict_log_target
    from replicator.exceptions import EntryNotFound
    from replicator.runtime import file_owners

    with aws_failures(f"conflicts {resolved.task_name}"):
        if key is not None:
            _check_key_names(resolved, key)
        refuse_directory(resolved, "conflict_log", any_kind=True)
        file_owners.check(resolved, ("conflict_log.path",))
        target = conflict_log_target(resolved)
        stop.watch(target)
        if isinstance(target, sqs.SqsConflictLog):
            _warn_about_redrive(target)
        missing = _missing_file(resolved, target)
        if restore_id is not None:
            try:
                result = restore(resolved, target, restore_id, key=key, force=force)
            except EntryNotFound as error:
                why = missing or _missing_table(target) or _unread(target)
                if why is None:
                    raise
                raise EntryNotFound(f"{error}: {why}") from None
            # Made (or refused) whether or not its line is read: the exit code says which.
            logs.echo_outcome(result.message)
            return result.exit_code
        own, others = read_task_entries(
            target, selection, resolved.task_name, named_places=named_places(resolved)
        )
        own = under_current_names(resolved, own)
        listing = Listing(
            target.description,
            selection,
            own,
            dict(Counter(e.task_name for e in others)),
            missing=missing or _missing_table(target),
            incomplete=_unread(target),
        )
        if resolved.job.conflict_log.kind is ConflictLogKind.FILE:
            listing.stranded = stranded_files(resolved, resolved.job.conflict_log.path)
    logs.echo(listing.as_json(limit) if output == "json" else listing.text(limit))
    return 1 if listing.incomplete else 0


def _unread(target: Any) -> str | None:
    """What the last read of the log left out (entries of an SQS log another reader
    held past the wait), in words; None when it read the whole log."""
    from replicator.conflictlog.sqs import SqsConflictLog

    return target.unread() if isinstance(target, SqsConflictLog) else None


def _missing_table(target: Any) -> str | None:
    """For a DynamoDB log whose table the last read found missing, a line that says so."""
    from replicator.conflictlog.dynamodb import DynamoDbConflictLog

    return target.missing if isinstance(target, DynamoDbConflictLog) else None


def _missing_file(resolved: ResolvedJob, target: Any) -> str | None:
    """For a file log that does not exist, a line that says so, with its absolute path and,
    for a relative ``conflict_log.path``, that it is relative to the working directory:
    the usual reason for "no file" is running the command from another directory than
    the job's, and an empty listing would hide that."""
    from replicator.conflictlog.file import FileConflictLog

    if not isinstance(target, FileConflictLog) or target.path.exists():
        return None
    line = f"no conflict-log file at {target.path} (yet): nothing has been recorded there"
    configured = resolved.job.conflict_log.path.format(task_name=resolved.task_name)
    if not Path(configured).is_absolute():
        line += (
            f"; conflict_log.path {configured!r} is relative to the working directory "
            f"({Path.cwd()}): run the command where the job runs, or make the path absolute"
        )
    return line


def _destination_label(resolved: ResolvedJob, destination: str) -> tuple[str, str | None]:
    """The name entries at ``destination`` are listed under, and the ``<region>/<table>``
    they are selected by (None: by that name).

    A destination of the job is found as ``wait`` finds it (its name, table or
    ``<region>/<table>``; several that fit are refused, exit 2), and its entries are those
    recorded at its region and table, whatever name they were recorded under: a name
    given to the destination since, or changed, leaves its history its own. Only where
    the job has another destination at that region and table (in another account), or
    its source is there, does the name tell them apart. The source's own
    ``<region>/<table>`` (active-active corrections) is its entries' name, before any
    destination's ``<region>/<table>``, which a named destination's entries do not go
    by. A name the job file does not have is that of a destination since removed from
    it, whose entries keep it, or a typo: listed by that name with a warning, not
    refused. An empty one is no destination's, ever: refused (exit 2), as by ``wait``."""
    from replicator.config.destinations import destination_place, resolve_destination, spelled
    from replicator.conflictlog.restore import source_label
    from replicator.exceptions import UnknownDestination

    destinations = resolved.job.destinations
    source = source_label(resolved)
    if destination == source and all(d.label != source for d in destinations):
        return source, None
    try:
        found = resolve_destination(resolved, destination)
    except UnknownDestination:
        pass
    else:
        place = destination_place(found)
        sharing = [d for d in destinations if destination_place(d) == place]
        alone = len(sharing) == 1 and place != source
        return found.label, place if alone else None
    logs.echo(
        f"replicator: warning: {destination!r} is neither a destination of {resolved.path} "
        f"(destinations: {', '.join(spelled(d) for d in destinations)}) nor its source "
        f"({source}); listing the entries recorded under that name (a destination since "
        "removed from the job file has some)",
        err=True,
    )
    return destination, None


def _warn_about_redrive(target: SqsConflictLog) -> None:
    """Reading the queue counts as a receive of every entry; say so when that moves them
    to a dead-letter queue. Not being allowed to look is no reason to stop."""
    from botocore.exceptions import BotoCoreError, ClientError

    from replicator.aws.queues import names_no_queue

    try:
        warning = target.redrive_warning()
    except (ClientError, BotoCoreError) as error:
        if names_no_queue(error):
            return  # the read says so, in its one line
        warning = f"the queue's redrive policy could not be read ({error})"
    if warning:
        logs.echo(f"replicator: warning: {warning}", err=True)


# Where --key's text is kept as typed (click's context meta), for the messages below.
KEY_AS_GIVEN = "replicator.key_as_given"


def _check_key_names(resolved: ResolvedJob, key: Any) -> None:
    """A --key must name exactly the source table's key attributes, each with the type
    the table gives it: ``pk=S:7`` can never name an item whose key pk is a number, and
    looking for it would only print "0 lost conflicts"."""
    from replicator.items import describe_key, describe_names
    from replicator.tools.tables import describe, source_ref

    shape = describe(source_ref(resolved, connections=1))
    table = resolved.job.source.table
    context = click.get_current_context(silent=True)
    given_as = context.meta.get(KEY_AS_GIVEN) if context is not None else None
    shown = given_as.strip() if isinstance(given_as, str) else describe_key(key)
    if sorted(key) != sorted(shape.key_names):
        extra = sorted(set(key) - set(shape.key_names))
        missing = [name for name in shape.key_names if name not in key]
        advice = []
        if extra:
            noun = "is no key attribute" if len(extra) == 1 else "are no key attributes"
            advice.append(f"{describe_names(extra)} {noun}")
        if missing:
            # Beside the names given when each is a key attribute, else in their place.
            advice.append(f"give {describe_names(missing)}" + ("" if extra else " too"))
        raise click.BadParameter(
            f"{shown!r} names {describe_names(sorted(key))}, but the key of "
            f"{table} is {describe_names(list(shape.key_names))}: {'; '.join(advice)}",
            param_hint="'--key'",
        )
    for name in shape.key_names:
        wanted = shape.key_schema[name].partition(":")[2]
        (given,) = key[name]
        if given != wanted:
            raise click.BadParameter(
                f"{shown!r} gives {name} as type {given}, but in {table} the key "
                f"attribute {name} is of type {wanted}: write {name}={wanted}:...",
                param_hint="'--key'",
            )
