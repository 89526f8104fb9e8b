"""The ``replicator`` command.

Expected failures (a bad job file, a missing table, no credentials) print one clear
message and exit non-zero without a traceback; the exit codes are listed in the README.
"""

from __future__ import annotations

import errno
import functools
import math
import os
import re
import signal
import socket
import sys
from collections import Counter
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any, NoReturn, ParamSpec, TypeVar

import click
from click.core import ParameterSource

from replicator.config.endpoints import environment_endpoint_problems
from replicator.config.loader import job_file_path, load_job
from replicator.config.model import LogFormat, ResolvedJob, RuntimeKind, WriterConfig
from replicator.entry import interrupted, outcome_decided
from replicator.exceptions import KeySyntaxError, OperatorError, SinceSyntaxError
from replicator.logs import echo, redact, report_kept_apart

P = ParamSpec("P")
R = TypeVar("R")


class _Bounds:
    """The range a number option's help shows: click's, or none when the option has
    neither bound (its callback checks it, and its help says the bounds): click shows
    such a range as ``x<=None``. A number is written in ASCII digits without ``_``:
    Python's float() and int() also take ``1_0`` (its literal grouping) and digits of
    other scripts, which no one types as a number of seconds or threads, and which
    ``wait --until`` refuses too."""

    min: Any
    max: Any
    name: str

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, str) and (not value.isascii() or "_" in value):
            self.fail(f"{value!r} is not a valid {self.name}.", param, ctx)  # type: ignore[attr-defined]
        return super().convert(value, param, ctx)  # type: ignore[misc]

    def _describe_range(self) -> str:
        if self.min is None and self.max is None:
            return ""
        described: str = super()._describe_range()  # type: ignore[misc]
        return described


class _Number(_Bounds, click.FloatRange):
    """A number option: click calls a value that is no number "not a valid float range"
    (``--timeout 5s``), which tells an operator nothing; this says "number"."""

    name = "number"


class _WholeNumber(_Bounds, click.IntRange):
    """A whole-number option (``--threads x``: "not a valid whole number")."""

    name = "whole number"


class _Timeout(_Number):
    """``wait --timeout``: a number of seconds from 0, or ``inf`` for no limit, spelled so.
    A number too large for a float (``1e400``) reads as infinity: taken as it is, a typo
    of an exponent would wait without limit, which the number did not ask for."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if not isinstance(value, str) or not math.isinf(number) or value == "inf":
            return number
        if value.strip().lstrip("+").lower() in ("inf", "infinity"):
            self.fail(f"{value!r}: write inf to wait without limit", param, ctx)
        self.fail(
            f"{value!r} is too large a number of seconds (it overflows to infinity): "
            "give a smaller number, or inf to wait without limit",
            param,
            ctx,
        )


class _JobFilePath(click.Path):
    """The job file's path: an empty one (``--config ''``, ``--config "$UNSET"``) is
    refused as such, where pathlib would read it as ``.`` and the message would be about
    a directory no one named."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, str) and not value:
            self.fail(f"is empty ({value!r}): give the path of the job file", param, ctx)
        from_environment = (
            ctx is not None
            and param is not None
            and param.name is not None
            and ctx.get_parameter_source(param.name) is ParameterSource.ENVIRONMENT
        )
        if from_environment and isinstance(value, str) and _nothing_at(value):
            # Named with where it came from: `docker run` without the job file mounted
            # meets the image's REPLICATOR_CONFIG, which the command line never showed.
            self.fail(
                f"{value!r}, from $REPLICATOR_CONFIG: job file not found (mount or write "
                "the job file there, or give --config)",
                param,
                ctx,
            )
        return super().convert(value, param, ctx)


def _nothing_at(path: str) -> bool:
    """Whether nothing is at ``path`` (another error, a directory that may not be searched
    or a loop of links, is for reading the file to tell)."""
    try:
        os.lstat(path)
    except FileNotFoundError:
        return True
    except OSError:
        return False
    return False


JOB_FILE = _JobFilePath(dir_okay=False, path_type=Path)

CONFIG_OPTION = click.option(
    "--config",
    "-c",
    "config_path",
    required=True,
    type=JOB_FILE,
    envvar="REPLICATOR_CONFIG",
    help="The job file (YAML). Also $REPLICATOR_CONFIG.",
)


def _operator_errors(function: Callable[P, R]) -> Callable[P, R]:
    @functools.wraps(function)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return function(*args, **kwargs)
        except OperatorError as error:
            outcome_decided()
            echo(f"replicator: {error}", err=True)
            sys.exit(error.exit_code)

    return wrapper


def _exit_with_report(run: Callable[[], int]) -> NoReturn:
    """Exit with the code of ``run``, a tool whose report keeps stdout to itself."""
    with report_kept_apart():
        code = run()
    sys.exit(code)


class _OnceEach(click.Command):
    """A command whose options that take one value may be given once each (every
    ``replicator`` command is one).

    click keeps the last of repeated values, so ``wait -d A -d B`` would wait on B
    alone and report A replicated when it is not, ``--until X --until 1`` would wait
    for 1, and ``run -c prod.yaml -c test.yaml`` would run the test job. A command that
    does less than was asked is worse than a usage error.
    """

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        # A first parse, only to count: the parser lists an option once per occurrence.
        _, _, order = self.make_parser(ctx).parse_args(args=list(args))
        given = Counter(
            param
            for param in order
            if isinstance(param, click.Option)
            and not (param.multiple or param.count or param.is_flag)
        )
        for param, times in given.items():
            if times > 1:
                flag = max(param.opts, key=len)
                hints = {
                    ("wait", "destination"): "run it once for each destination (joined "
                    "with && to wait for all)",
                    ("watermark", "destination"): "leave it out to show every destination",
                }
                hint = hints.get(
                    (ctx.command.name or "", param.name or ""),
                    "the last would be used, the others quietly dropped",
                )
                raise click.UsageError(
                    f"{flag} given {times} times; {ctx.command_path} takes one: {hint}", ctx
                )
        return super().parse_args(ctx, args)


class _Commands(click.Group):
    command_class = _OnceEach

    def invoke(self, ctx: click.Context) -> Any:
        """Ctrl-C that no command answers itself (``validate`` reading its job file,
        any command before its work begins) ends it as the commands that do answer it
        end: one line and 130, not click's "Aborted!" and 1, a failure's code."""
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            sys.exit(interrupted(ctx.invoked_subcommand))


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="dynamodb-replicator")
def cli() -> None:
    """Replicate a DynamoDB table to other regions and accounts through its stream."""


def _metrics_line(enabled: bool, host: str, port: int) -> str:
    from replicator.metrics.server import address

    if not enabled:
        return "off"
    if port == 0:  # the system picks one as run starts, and run logs it
        return f"on {address(host, 0).rsplit(':', 1)[0]}, a port chosen at start (logged)"
    return f"http://{address(host, port)}/metrics"


def _active_active(resolved: ResolvedJob) -> str:
    job = resolved.job
    if not job.writes_back:
        return "off (no write-back to the source, no tombstones)"
    text = "write-back of lost conflicts and corrections to the source"
    if job.active_active.tombstones:
        tables = [job.tombstone_table(job.source.table)] + [
            job.tombstone_table(d.table) for d in job.destinations
        ]
        hours = job.active_active.tombstone_retention_hours
        text += f"; tombstones in {', '.join(sorted(set(tables)))}, kept {hours} h"
    return text


@cli.command()
@CONFIG_OPTION
@_operator_errors
def validate(config_path: Path) -> None:
    """Check a job file and print the job as it resolves (exit 0), or every problem (exit 2)."""
    with report_kept_apart():  # a resolver's output as it is imported: not the report
        resolved = load_job(config_path, on_disk=True, resolvers=True)
        echo(redact(describe(resolved)))  # the job's URLs, not data: as a URL in an error
        endpoints = environment_endpoint_problems(_services_without_endpoints(resolved))
        for caution in [*resolved.job.cautions, *endpoints]:
            echo(f"warning: {resolved.path}: {caution}")  # several files' checks, one output


def _services_without_endpoints(resolved: ResolvedJob) -> dict[str, str]:
    """The services the job calls where botocore takes the endpoint from the environment
    (no ``endpoint_url`` given), each with where: STS for every ``role_arn``."""
    from replicator.config.model import (
        ConflictLogKind,
        DeadLetterKind,
        DestinationConfig,
        SourceConfig,
        StreamKind,
    )

    job = resolved.job
    where = "where the job file gives no endpoint_url"
    services: dict[str, str] = {}
    tables: list[SourceConfig | DestinationConfig] = [job.source, *job.destinations]
    letters, log = job.dead_letter, job.conflict_log
    if any(place.endpoint_url is None for place in tables) or (
        log.kind is ConflictLogKind.DYNAMODB and log.endpoint_url is None
    ):
        services["dynamodb"] = where
    if job.source.endpoint_url is None:
        kind = job.source.stream.kind
        services["kinesis" if kind is StreamKind.KINESIS else "dynamodbstreams"] = where
    if (letters.kind is DeadLetterKind.SQS and letters.endpoint_url is None) or (
        log.kind is ConflictLogKind.SQS and log.endpoint_url is None
    ):
        services["sqs"] = where
    if any(place.role_arn for place in tables) or letters.role_arn or log.role_arn:
        services["sts"] = "when it assumes the job's role_arn"
    return services


def _trimmed_data(resolved: ResolvedJob) -> str:
    """What source.on_trimmed_data does for this runtime and source (docs/configuration.md)."""
    from replicator.config.model import OnTrimmedData, RuntimeKind, StreamKind

    job = resolved.job
    setting = job.source.on_trimmed_data
    restart = setting is OnTrimmedData.RESTART_FROM_TRIM_HORIZON
    if job.source.stream.kind is StreamKind.KINESIS:
        return (
            f"{setting.value} has no effect on a kinesis source (the KCL has no such "
            "setting): keep the data stream's retention longer than any outage"
        )
    if job.runtime is RuntimeKind.LOCAL:
        return (
            "restart_from_trim_horizon: log an error and go on from the oldest record"
            if restart
            else "fail: stop with exit 6 when a checkpoint points at trimmed records"
        )
    return (
        "restart_from_trim_horizon (skipRecordsBehavior SKIP_RECORDS_TO_TRIM_HORIZON): the "
        "adapter logs a warning and goes on from the oldest record"
        if restart
        else "fail (skipRecordsBehavior KCL_RETRY): the adapter refuses the trimmed "
        "position and the KCL retries that shard for ever; the shard stalls, nothing is "
        "skipped, and the worker does not exit (no exit 6 under runtime kcl)"
    )


def describe(resolved: ResolvedJob) -> str:
    from replicator.config.model import DeadLetterKind
    from replicator.conflictlog.places import describe_target

    job = resolved.job
    source = job.source
    lines = [
        f"job file:    {resolved.path}",
        f"runtime:     {job.runtime.value}",
        f"task name:   {resolved.task_name}",
        f"lease table: {resolved.lease_table} (in {source.region})",
        f"source:      {source.region}/{source.table} via {source.stream.kind.value}"
        + (
            f" {source.stream.arn or source.stream.name}"
            if source.stream.arn or source.stream.name
            else ""
        )
        + (f" at {source.endpoint_url}" if source.endpoint_url else ""),
        "destinations:",
    ]
    for destination in job.destinations:
        conflict = job.conflict_for(destination)
        attribute = conflict.ranked_by
        lines.append(
            f"  - {destination.label}: {destination.region}/{destination.table}"
            + (f" at {destination.endpoint_url}" if destination.endpoint_url else "")
            + (f" as {destination.role_arn}" if destination.role_arn else "")
            + f", policy {conflict.policy.value}"
            + (f" on {attribute}" if attribute else "")
        )
    origin = job.loop_prevention.origin_attribute
    auto_format = job.logging.format is LogFormat.AUTO
    lines += [
        "loop prevention: "
        + (f"skip puts whose {origin} is not {job.origin_value!r}" if origin else "off"),
        f"ttl deletes: {job.ttl_deletes.value}",
        f"dead letters: {job.dead_letter.kind.value} "
        + (
            str(job.dead_letter.queue_url)
            if job.dead_letter.kind is DeadLetterKind.SQS
            else str(resolved.dead_letter_path())
        ),
        f"conflict log: {describe_target(resolved)}",
        "active-active: " + _active_active(resolved),
        "trimmed data: " + _trimmed_data(resolved),
        "metrics: " + _metrics_line(job.metrics.enabled, job.metrics.host, job.metrics.port),
        "watermark: "
        + (
            f"status table {resolved.watermark_table} in each destination's region, "
            f"at most one write per shard and destination every "
            f"{job.watermark.publish_interval_ms} ms"
            if resolved.publishes_watermark
            else "off"
        ),
        "writer: " + _writer_line(job.writer),
        f"logging: {job.logging.level}, format {job.logging.format.value}"
        + (" (JSON unless the output is a terminal)" if auto_format else ""),
    ]
    if job.runtime is RuntimeKind.KCL:
        kcl = job.kcl
        worker = kcl.worker_id or f"{socket.gethostname()} (the host name)"
        lines.append(
            f"kcl: new leases start at {kcl.initial_position.value}, up to {kcl.max_records} "
            f"records a read, worker id {worker}, Java runtime {kcl.java} "
            "(every KCL property: replicator properties)"
        )
    else:
        # The local runtime reads these kcl keys too: where a job with no checkpoint starts
        # is what an operator must know before a first run (or one stopped before it).
        lines.append(
            f"reading: a new job's shards start at {job.kcl.initial_position.value} (shards "
            f"added later at TRIM_HORIZON), up to {job.kcl.max_records} records a read "
            "(kcl.initial_position, kcl.max_records)"
        )
    return "\n".join(lines)


def _writer_line(writer: WriterConfig) -> str:
    """The writer's limits in one line: what bounds a shard's memory and its writes in
    flight, and how long a destination that does not answer is waited for."""
    return (
        f"up to {writer.max_in_flight} writes in flight per destination, "
        f"{writer.max_buffered_changes} changes buffered, retries after "
        f"{writer.retry.base_delay_ms}-{writer.retry.max_delay_ms} ms, timeouts "
        f"{writer.connect_timeout_s:g} s to connect, {writer.read_timeout_s:g} s to answer"
        + (", sent through botocore" if writer.send_with_botocore else "")
    )


def _worker_id(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """The worker id is checked as the job file's kcl.worker_id is: an empty one would
    silently fall back to the host name, and one with a control character, a byte that
    is not UTF-8 or a space at either end names a worker no one meant (or cannot be
    written in the properties file at all)."""
    from replicator.config.fields import check_name

    if value is None:
        return None
    if not value.strip():
        raise click.BadParameter(
            f"is empty ({value!r}): give a worker id, or leave the option out for the "
            "job's kcl.worker_id (default: the host name)",
            ctx,
            param,
        )
    try:
        return check_name(value)
    except ValueError as error:
        raise click.BadParameter(str(error), ctx, param) from None


@cli.command()
@CONFIG_OPTION
@click.option(
    "--worker-id",
    default=None,
    callback=_worker_id,
    help="workerId to write (default: the job's or host).",
)
@_operator_errors
def properties(config_path: Path, worker_id: str | None) -> None:
    """Print the KCL MultiLangDaemon properties for the job."""
    from replicator.runtime.kcl.properties import render_properties

    with report_kept_apart():  # a resolver's output as it is imported: not the file
        resolved = load_job(config_path)
        # verbatim: the file the KCL reads (it holds no credentials: docs/security.md)
        echo(render_properties(resolved, worker_id=worker_id), nl=False)


@cli.command()
@CONFIG_OPTION
@_operator_errors
def processor(config_path: Path) -> None:
    """Run as the KCL MultiLangDaemon's record processor (speaks the protocol on stdin/stdout)."""
    from replicator.processor import serve_daemon
    from replicator.runtime.jobcopy import JOB_FILE_ENV

    # Under `replicator run`, the config is the run's copy of the job file: messages name
    # the operator's file instead.
    named = os.environ.get(JOB_FILE_ENV) or None
    sys.exit(serve_daemon(load_job(job_file_path(config_path), named=named)))


@cli.command()
@CONFIG_OPTION
@_operator_errors
def run(config_path: Path) -> None:
    """Run the job with the runtime its file names (local or kcl) until stopped."""
    from replicator.config.model import RuntimeKind
    from replicator.tools.commands import load

    resolved = load(config_path)  # logging as the job asks, a resolver's prints with it
    if resolved.job.runtime is RuntimeKind.KCL:
        from replicator.runtime.kcl.launcher import run_kcl

        sys.exit(run_kcl(resolved))
    from replicator.runtime.local.runtime import run_local

    sys.exit(run_local(resolved))


# The demo's longest duration, settle time and linger: a week. Longer ones overflow a
# sleep or a deadline (--linger 1e308 was a traceback) and demonstrate nothing more.
_DEMO_MAX_S = 7 * 24 * 3600.0


def _finite(context: click.Context, parameter: click.Parameter, value: float) -> float:
    """A range check passes NaN (every comparison with it is false): refuse it, and
    infinity, as a usage error."""
    if not math.isfinite(value):
        raise click.BadParameter(f"{value} is not a finite number")
    return value


# The smallest --read-rate but 0 (unlimited): one item every 100 s. Below it a rate means
# nothing useful, and its waits overflow what a sleep takes.
MIN_READ_RATE = 0.01


def _read_rate(context: click.Context, parameter: click.Parameter, value: float) -> float:
    """Items per second: 0 (unlimited), or a finite number of at least MIN_READ_RATE."""
    if not math.isfinite(value) or 0 < value < MIN_READ_RATE:
        raise click.BadParameter(
            f"{value} is not 0 (unlimited) or a finite number of items per second of at "
            f"least {MIN_READ_RATE}"
        )
    return value


def _read_rate_option(help: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """``--read-rate``, as ``backfill`` and ``verify`` both take it (their help differs)."""
    return click.option(
        "--read-rate",
        type=_Number(min=0),
        default=0.0,
        show_default=True,
        callback=_read_rate,
        help=help,
    )


def _threads_option(help: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """``--threads``, as ``backfill`` and ``verify`` both take it (their help differs)."""
    return click.option(
        "--threads", type=_WholeNumber(1, 512), default=8, show_default=True, help=help
    )


# The longest --recheck-pause: an hour. A re-check waits out replication in flight, which
# takes seconds; a pause goes to a wait, which overflows (inf and 1e10 were a traceback).
MAX_RECHECK_PAUSE_S = 3600.0


DEMO_JOB = Path("config/demo.yaml")


def main(argv: list[str] | None = None) -> Any:
    return cli.main(args=argv, prog_name="replicator")


@cli.command()
@click.option(
    "--config",
    "-c",
    "config_path",
    default=DEMO_JOB,
    show_default=True,
    type=JOB_FILE,
    help="The job to demonstrate: config/demo.yaml (the project's, where the working "
    "directory has none) or another job file; the demo runs "
    "it all on its private endpoint with dummy credentials, and refuses (exit 2) one whose "
    "endpoint_url is not the demo's, or with a role_arn, an SQS queue, a source.stream or a "
    "custom conflict policy. Each write stamps the job's timestamp or version attribute.",
)
@click.option(
    "--duration",
    type=_Number(min=0, min_open=True, max=_DEMO_MAX_S),
    default=20.0,
    show_default=True,
    callback=_finite,
    help="Seconds of source writes.",
)
@click.option(
    "--rate",
    type=_Number(min=0.01, max=10_000),
    default=40.0,
    show_default=True,
    callback=_finite,
    help="Source changes per second.",
)
@click.option(
    "--keys",
    type=_WholeNumber(min=1, max=1_000_000),
    default=200,
    show_default=True,
    help="Distinct items the workload touches.",
)
@click.option(
    "--settle-timeout",
    type=_Number(min=0, max=_DEMO_MAX_S),
    default=60.0,
    show_default=True,
    callback=_finite,
    help="Seconds to wait for convergence after the writes stop.",
)
@click.option(
    "--linger",
    type=_Number(min=0, max=_DEMO_MAX_S),
    default=0.0,
    show_default=True,
    callback=_finite,
    help="Seconds to keep the replicator and its metrics running after the check, "
    "whatever its outcome (the exit code stays the check's; Ctrl-C ends it early, exit 130).",
)
@_operator_errors
def demo(
    config_path: Path,
    duration: float,
    rate: float,
    keys: int,
    settle_timeout: float,
    linger: float,
) -> None:
    """Run the embedded demo: local endpoint, demo tables, live progress, convergence check.

    The job runs on the local runtime, whatever the job file's runtime says.
    """
    from replicator.demo.run import STOP_SIGNALS, DemoOptions, run_demo

    options = DemoOptions(
        duration_s=duration,
        rate=rate,
        keys=keys,
        settle_timeout_s=settle_timeout,
        linger_s=linger,
    )
    try:
        code = run_demo(_demo_job(config_path), options)
    except OSError as error:
        # Its progress could not be written (`| head` done, a full disk): the replicator
        # was stopped and the demo's files removed on the way out; say so in one line
        # (click would end it with exit 1 and no word, which reads as a failed check).
        if error.errno not in (errno.EPIPE, errno.ENOSPC):
            raise
        _stdout_gone()
        echo(f"replicator: the demo's output could not be written to stdout: {error}", err=True)
        code = 1
    for stop_signal in STOP_SIGNALS:  # the outcome is decided: keep it
        signal.signal(stop_signal, signal.SIG_IGN)
    sys.exit(code)


def _stdout_gone() -> None:
    """stdout made the null device, so that what is still held for it is dropped rather
    than failing again (a traceback) as the interpreter flushes it at exit."""
    descriptor = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(descriptor, sys.stdout.fileno())
    except (AttributeError, OSError, ValueError):  # no stdout of its own (a test's)
        pass
    finally:
        os.close(descriptor)


def _demo_job(config_path: Path) -> Path:
    """The demo's job file. The default, ``config/demo.yaml``, names the project's copy
    when the working directory has none: a newcomer types ``replicator demo`` wherever the
    activated environment is, not only at the project's root."""
    context = click.get_current_context()
    if context.get_parameter_source("config_path") is not click.core.ParameterSource.DEFAULT:
        return config_path
    if config_path.exists():
        return config_path
    project_copy = Path(__file__).resolve().parent.parent / DEMO_JOB
    return project_copy if project_copy.is_file() else config_path


@cli.command()
@CONFIG_OPTION
@click.option(
    "--segments",
    type=_WholeNumber(1, 1_000_000),
    default=None,
    help="Parallel Scan segments [default: the interrupted run's, else 4].",
)
@_read_rate_option("Source items read per second, scans and re-reads together; 0 = unlimited.")
@_threads_option("Concurrent writes; also the most segments scanned at once.")
@click.option(
    "--page-size",
    type=_WholeNumber(1, 10_000),
    default=100,
    show_default=True,
    help="Items per Scan page; progress is saved after each page.",
)
@click.option(
    "--max-items",
    type=_WholeNumber(min=1),
    default=None,
    help="Stop after this many items, at most (progress kept; run again to continue).",
)
@click.option("--restart", is_flag=True, help="Forget saved progress and copy from the start.")
@click.option(
    "--skip-handoff-check",
    is_flag=True,
    help="Copy even if the replicator's start position could leave a gap (one-off copies).",
)
@_operator_errors
def backfill(config_path: Path, **options: Any) -> None:
    """Copy the source table to every destination through the conflict policy (resumable)."""
    from replicator.tools import commands

    _exit_with_report(lambda: commands.backfill(config_path, **options))


@cli.command()
@CONFIG_OPTION
@click.option(
    "--segments",
    type=_WholeNumber(1, 1_000_000),
    default=4,
    show_default=True,
    help="Parallel Scan segments per table.",
)
@_threads_option("Concurrent reads (and repair writes).")
@_read_rate_option("Items read per second from each table; 0 = unlimited.")
@click.option(
    "--sample",
    type=_WholeNumber(min=1),
    default=None,
    help="Check N items from random segments of each table instead of every item.",
)
@click.option(
    "--recheck",
    type=_WholeNumber(1, 100),
    default=3,
    show_default=True,
    help="Consistent reads of a difference before it is reported.",
)
@click.option(
    "--recheck-pause",
    "recheck_pause_s",
    type=_Number(min=0, max=MAX_RECHECK_PAUSE_S),
    default=2.0,
    show_default=True,
    callback=_finite,
    help=f"Seconds between those reads (at most {MAX_RECHECK_PAUSE_S:g}).",
)
@click.option(
    "--repair",
    is_flag=True,
    help="Rewrite differences through the conflict policy; an item the source lacks is "
    "deleted (docs/operator-tools.md).",
)
@click.option(
    "--delete-extra-written-elsewhere",
    "delete_written_elsewhere",
    is_flag=True,
    help="With --repair, in an active-active job: also delete an extra item another "
    "region stamped (or none did), which --repair otherwise leaves as that region's "
    "write on its way here. Only once that region's job has caught up: an item still "
    "extra then is one the source deleted (docs/operator-tools.md).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@_operator_errors
def verify(config_path: Path, as_json: bool, **options: Any) -> None:
    """Compare every destination with the source: exit 0 when equal, 1 when not."""
    from replicator.tools import commands

    if options["delete_written_elsewhere"] and not options["repair"]:
        raise click.UsageError("--delete-extra-written-elsewhere deletes only with --repair")

    _exit_with_report(lambda: commands.verify(config_path, as_json, **options))


@cli.command()
@CONFIG_OPTION
@_operator_errors
def redrive(config_path: Path) -> None:
    """Replay the job's dead letters through the writers; failures stay (exit 1 if any).

    A replayed put is checked against the source once written (an item deleted or
    changed there since is deleted again, or written as the source has it). Copies of a
    letter replayed once are removed with it, lines that are not letters are kept as
    they are (exit 1), letters of other tasks are left alone. Ctrl-C stops after the
    letter in hand; the next redrive takes up the rest. See docs/operator-tools.md.
    """
    from replicator.tools import commands

    _exit_with_report(lambda: commands.redrive(config_path))


def _time_option(
    ctx: click.Context, param: click.Parameter, value: str | None
) -> float | Decimal | None:
    """Epoch seconds (fractions allowed, kept exactly) or ISO 8601 with a zone."""
    if value is None:
        return None
    from replicator.watermark.commands import parse_time

    try:
        return parse_time(value, param.opts[0])
    except ValueError as error:
        raise click.BadParameter(str(error), ctx, param) from None


def _finite_seconds(
    ctx: click.Context, param: click.Parameter, value: float | None
) -> float | None:
    """A number of seconds that is a number: click's FloatRange lets NaN through (it
    compares False with every bound), and infinity only for --timeout (wait without end)."""
    if value is None or math.isfinite(value) or (math.isinf(value) and param.name == "timeout"):
        return value
    raise click.BadParameter(f"{value!r} is not a number of seconds", ctx, param)


# The shortest prefix of an entry id --restore takes: shorter ones (the empty one names
# every entry) are a mistake to refuse, not a choice among many entries to list.
MIN_ENTRY_PREFIX = 4
ENTRY_ID_LENGTH = 16


def _entry_id_option(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is None:
        return None
    # Ids are lower-case hexadecimal; one copied from a tool that shouts is the same id.
    wanted = value.strip().lower()
    if len(wanted) < MIN_ENTRY_PREFIX:
        raise click.BadParameter(
            f"{value!r} is too short to name an entry: give its id (16 hexadecimal "
            f"characters, as the listing shows them) or at least its first {MIN_ENTRY_PREFIX}"
        )
    # One that no id can start with is a mistake too: said at once, not after a read of
    # the whole log (a pass over every message of a queue) that could only find nothing.
    if len(wanted) > ENTRY_ID_LENGTH or not re.fullmatch("[0-9a-f]+", wanted):
        raise click.BadParameter(
            f"{value!r} names no entry: an id is {ENTRY_ID_LENGTH} hexadecimal characters "
            "(0-9, a-f), as the listing shows them; give it or at least its first "
            f"{MIN_ENTRY_PREFIX}"
        )
    return wanted


def _poll_seconds(ctx: click.Context, param: click.Parameter, value: float) -> float:
    """A poll interval: a number of seconds within the bounds the API takes, from 0.01
    (no news comes faster) to an hour (a longer sleep means nothing to a barrier, and one
    of 1e12 s overflowed)."""
    from replicator.watermark.wait import MAX_POLL_INTERVAL_S, MIN_POLL_INTERVAL_S

    checked = _finite_seconds(ctx, param, value)
    if checked is not None and checked < MIN_POLL_INTERVAL_S:
        raise click.BadParameter(
            f"{value!r} is less than {MIN_POLL_INTERVAL_S:g} seconds between reads", ctx, param
        )
    if checked is not None and checked > MAX_POLL_INTERVAL_S:
        raise click.BadParameter(
            f"{value!r} is more than {MAX_POLL_INTERVAL_S:g} seconds between reads", ctx, param
        )
    return value


def _key_option(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
    from replicator.conflictlog.keys import parse_key
    from replicator.tools.commands import KEY_AS_GIVEN

    if value is None:
        return None
    # As typed, for a later check's message (a JSON key is quoted as JSON, not respelled).
    ctx.meta[KEY_AS_GIVEN] = value
    try:
        return parse_key(value)
    except KeySyntaxError as error:
        raise click.BadParameter(str(error)) from None


def _since_option(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    from replicator.conflictlog.reader import parse_since

    if value is None:
        return None
    try:
        return parse_since(value)
    except SinceSyntaxError as error:
        raise click.BadParameter(str(error)) from None


@cli.command()
@CONFIG_OPTION
@click.option(
    "--destination", "-d", default=None, help="A destination's name or table [default: all]."
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON (with every shard's part).")
@_operator_errors
def watermark(config_path: Path, destination: str | None, as_json: bool) -> None:
    """Print each destination's replication watermark (exit 1 if one has none yet, 3 if
    the status table cannot be read or the task is another source's)."""
    from replicator.watermark import commands

    _exit_with_report(lambda: commands.show(load_job(config_path), destination, as_json))


@cli.command()
@CONFIG_OPTION
@click.option(
    "--destination",
    "-d",
    required=True,
    help="The destination's name, or its table name when only one destination has it.",
)
@click.option(
    "--until",
    required=True,
    metavar="TIME",
    callback=_time_option,
    help="Wait until every change created by then is at the destination: epoch seconds "
    "(1767225600.25) or ISO 8601 with a zone (2026-01-01T00:00:00.25Z).",
)
@click.option(
    "--timeout",
    required=True,
    type=_Timeout(min=0),
    callback=_finite_seconds,
    help="Seconds to wait at most (exit 1 when they pass; inf: no limit).",
)
@click.option(
    "--since",
    metavar="TIME",
    callback=_time_option,
    default=None,
    help="Report dead-lettered changes, and changes never read, created from then to "
    "--until (exit 4) [default: --until minus 60 s].",
)
@click.option(
    "--poll",
    "poll_interval",
    type=_Number(),
    callback=_poll_seconds,
    default=0.25,
    show_default=True,
    help="Seconds between reads of the status table (0.01 to 3600).",
)
@_operator_errors
def wait(
    config_path: Path,
    destination: str,
    until: float | Decimal,
    timeout: float,
    since: float | Decimal | None,
    poll_interval: float,
) -> None:
    """Wait until DESTINATION's watermark passes --until: exit 0, 1 on timeout, 4 if a change
    created from --since to --until was dead-lettered there or never read for it (a LATEST
    start, a destination added later, trimmed data, a source table created again) or
    replicated while the watermark was off (at once while the job runs with it off), 2 for
    a wrong option, 3 if the status table cannot be read or the task is another source's,
    130/143/129 on SIGINT/SIGTERM/SIGHUP."""
    from replicator.watermark import commands
    from replicator.watermark.parts import iso
    from replicator.watermark.wait import to_epoch_us

    if since is not None and to_epoch_us(since) > to_epoch_us(until):
        raise click.BadParameter(
            f"{iso(to_epoch_us(since))} is after --until {iso(to_epoch_us(until))}: "
            "the window from --since to --until is inverted",
            param_hint="'--since'",
        )
    resolved = load_job(config_path)
    _exit_with_report(
        lambda: commands.wait(resolved, destination, until, timeout, since, poll_interval)
    )


@cli.command()
@CONFIG_OPTION
@click.option(
    "--key",
    callback=_key_option,
    metavar="K",
    help="Only this item: name=TYPE:value for every key attribute, as log lines show keys "
    "(TYPE S, N or B with base64), e.g. 'pk=S:order-1 sk=N:3'; or a JSON object in "
    'DynamoDB\'s form, e.g. \'{"pk": {"S": "order 1"}}\'.',
)
@click.option(
    "--since",
    callback=_since_option,
    metavar="T",
    help="Only what happened from T on: a duration before now (30m, 12h, 7d), epoch "
    "seconds, or an ISO-8601 date or time (UTC unless it says).",
)
@click.option(
    "--destination",
    metavar="D",
    help="Only conflicts at this destination: its name (default <region>/<table>) or "
    "table, as wait takes it, or the source's <region>/<table>.",
)
@click.option(
    "--format",
    "output",
    type=click.Choice(["table", "json"]),
    default="table",
    show_default=True,
    help="A summary and a table, or one JSON document.",
)
@click.option(
    "--limit",
    type=_WholeNumber(min=0),
    default=50,
    show_default=True,
    help="Entries listed, newest first (0: all); the summary counts every entry selected.",
)
@click.option(
    "--restore",
    "restore_id",
    metavar="ENTRY",
    callback=_entry_id_option,
    help="Write entry ENTRY's losing image back to its destination, only while the "
    "destination still holds the image that won and no later change of the item lost "
    "there too; the restore is recorded in the log.",
)
@click.option(
    "--force",
    is_flag=True,
    help="With --restore: write the losing image even if the item changed since, or a "
    "later change of it lost too.",
)
@_operator_errors
def conflicts(config_path: Path, **options: Any) -> None:
    """List and summarize the job's lost conflicts, or restore one (exit 1 if not restored)."""
    from replicator.tools import commands

    if options["restore_id"] is not None:
        _refuse_listing_options_with_restore()
    _exit_with_report(lambda: commands.conflicts(config_path, **options))


def _refuse_listing_options_with_restore() -> None:
    """--restore writes one entry back and prints one line: the options that shape a
    listing would be ignored, and an operator who typed one expects it to count."""
    context = click.get_current_context()
    listing = [
        ("destination", "--destination"),
        ("since", "--since"),
        ("output", "--format"),
        ("limit", "--limit"),
    ]
    given = [
        flag
        for name, flag in listing
        if context.get_parameter_source(name) is not ParameterSource.DEFAULT
    ]
    if given:
        raise click.UsageError(
            f"{', '.join(given)} {'is' if len(given) == 1 else 'are'} for listing, not for "
            "--restore, which takes the entry's id, and --key to find it with one Query"
        )
