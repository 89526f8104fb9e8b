"""The job file's rules that span keys: what each section takes alone, the job may not.

A destination that is the source table, a tombstone table that is one of the job's own
tables, a kinesis source under the local runtime, one file for the dead letters and the
conflict log, an extra KCL property that the rendered properties file already sets:
each check reads a validated :class:`~replicator.config.model.JobConfig` and reports
every problem at the key path it concerns, so that ``validate`` lists them all, each at
its line. :func:`cross_checks` runs them, skipping those that read a section that
failed its own validation; :func:`disk_checks` adds what only the files on disk tell.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Collection
from enum import StrEnum
from pathlib import Path
from urllib.parse import urlsplit

from replicator.config.endpoints import (
    at_aws,
    aws_endpoint_of,
    aws_queue_region,
    aws_region_problem,
    endpoint_identity,
    quoted,
    userinfo_problem,
)
from replicator.config.fields import (
    DYNAMODB_STREAM_ARN_PATTERN,
    MAX_TABLE_NAME,
    REGION_PATTERN,
    ROLE_ARN_PATTERN,
    TABLE_PATTERN,
    TASK_TABLE_SUFFIXES,
    pattern_problem,
    shown,
    shown_with_length,
)
from replicator.config.kcl_settings import (
    CREDENTIALS_PROVIDER_KEY,
    KCL_ENDPOINT_KEYS,
    KCL_ENUM_PROPERTIES,
    KCL_ENUM_VALUES,
    KCL_FIXED_PROPERTIES,
    KCL_PROPERTY_SETTINGS,
    KCL_TABLE_SUFFIXES,
    credentials_provider_problem,
    kcl_property_name,
    kcl_table,
    numeric_property_problem,
)
from replicator.config.model import (
    CONFLICT_LOG_OPTIONS,
    DEAD_LETTER_OPTIONS,
    INITIAL_POSITION_ADVICE,
    ORDERED_POLICIES,
    ConflictLogConfig,
    ConflictLogKind,
    ConflictPolicyName,
    DeadLetterConfig,
    DeadLetterKind,
    DestinationConfig,
    InitialPosition,
    JobConfig,
    RuntimeKind,
    SourceConfig,
    StreamKind,
    policy_described,
    policy_ranking,
    sqs_region,
)

Problems = list[tuple[tuple[str | int, ...], str]]


def cross_checks(
    job: JobConfig, invalid: Collection[str] = (), job_file: Path | None = None
) -> Problems:
    """Rules that span sections, each reported at the key path it concerns.

    ``invalid`` names the top-level keys that failed their own validation (and stand at
    their defaults in ``job``): the checks that read one of them are skipped, since they
    would judge a default, and every other check runs, so that a bad ``metrics.port``
    does not hide a bad ``dead_letter.path``. ``job_file``: the job file's path, which
    no file target may name."""
    problems: Problems = []
    for check, reads in _CROSS_CHECKS:
        if reads.isdisjoint(invalid):
            problems += check(job)
    if FILE_CHECK_KEYS.isdisjoint(invalid):
        problems += _file_checks(job, job_file)
    return problems


# What stands for "the account of the default credential chain" when no ARN tells which
# account that is: equal only to itself, never to an account number.
_DEFAULT_CHAIN = "the default credential chain"


def _accounts(job: JobConfig) -> Callable[[str | None], str]:
    """The account a table is reached in, from the ``role_arn`` that reaches it: the
    role's account, or, without a role, the default chain's, which is known only when a
    source without a role names it in its DynamoDB stream ARN."""
    default = _DEFAULT_CHAIN
    match = DYNAMODB_STREAM_ARN_PATTERN.match(job.source.stream.arn or "")
    if job.source.role_arn is None and match and re.fullmatch(r"\d{12}", match["account"]):
        default = match["account"]

    def account(role_arn: str | None) -> str:
        found = ROLE_ARN_PATTERN.match(role_arn or "")
        return found["account"] if found else default

    return account


def _table_place(
    settings: SourceConfig | DestinationConfig, table: str | None = None
) -> tuple[str, str | None, str]:
    """Region, endpoint (as the server it reaches, not its text) and name of ``table``
    (by default the settings' own) where ``settings`` reaches."""
    return (
        settings.region,
        endpoint_identity(settings.endpoint_url, settings.region),
        settings.table if table is None else table,
    )


def _destination_checks(job: JobConfig) -> Problems:
    """No destination is the source, repeats another, or takes another's name.

    A table is its region, name, endpoint and account: the same region and table reached
    through a role of another account is another table (a disaster-recovery copy). Where
    the account is unknown (the default chain's, beside a role's) the two may be two
    accounts, and are taken as such."""
    problems: Problems = []
    account = _accounts(job)
    seen: dict[tuple[str, str | None, str, str], int] = {}
    labels: dict[str, int] = {}
    for index, destination in enumerate(job.destinations):
        where = (*_table_place(destination), account(destination.role_arn))
        if _is_the_source(job, destination):
            problems.append((("destinations", index), "is the source table itself"))
            continue
        if where in seen:
            problems.append((("destinations", index), f"repeats destinations[{seen[where]}]"))
            continue
        seen[where] = index
        label = destination.label
        place = ("destinations", index, "name")
        if label in labels:
            other = labels[label]
            if destination.name is None and job.destinations[other].name is None:
                problems.append(
                    (
                        place,
                        f"is missing: the default name {label!r} is already that of "
                        f"destinations[{other}] (the same region and table, in another "
                        f"account or at another endpoint): {_GIVE_A_NAME}",
                    )
                )
            else:
                problems.append((place, f"{label!r} is already the name of destinations[{other}]"))
        labels.setdefault(label, index)
    named = {key for key, _ in problems}  # a name said once: shared, or another's place
    return problems + [problem for problem in _name_place_checks(job) if problem[0] not in named]


def _is_the_source(job: JobConfig, destination: DestinationConfig) -> bool:
    """Whether ``destination`` is the source table (region, name, endpoint, account)."""
    account = _accounts(job)
    return (*_table_place(destination), account(destination.role_arn)) == (
        *_table_place(job.source),
        account(job.source.role_arn),
    )


def _name_place_checks(job: JobConfig) -> Problems:
    """No destination's name is another's ``<region>/<table>``: ``--destination`` takes
    a destination's name before any ``<region>/<table>``, so that spelling (which it
    offers for a named destination) would find the named one, never the one there. A
    name that is its own ``<region>/<table>`` (the default, written out) is taken."""
    places: dict[str, int] = {}
    for index, destination in enumerate(job.destinations):
        places.setdefault(f"{destination.region}/{destination.table}", index)
    problems: Problems = []
    for index, destination in enumerate(job.destinations):
        name = destination.name
        if (
            name is None
            or name not in places
            or name == f"{destination.region}/{destination.table}"
        ):
            continue
        problems.append(
            (
                ("destinations", index, "name"),
                f"{shown(name)} is the <region>/<table> of destinations[{places[name]}], which "
                "--destination would then not find by it: give this destination another name",
            )
        )
    return problems


_GIVE_A_NAME = (
    "give each destination a name of its own (destinations[].name), which it goes by in "
    "metrics, logs, dead letters, conflict-log entries and the watermark"
)


def _source_name_checks(job: JobConfig) -> Problems:
    """An active-active job's writer of its own source table goes by the source's
    ``<region>/<table>`` in metrics and conflict-log entries, which ``restore`` tells
    apart from a destination's by that name alone: no destination may go by it (one at
    the source's region and table, in another account, does by default)."""
    if not job.writes_back:
        return []
    source_name = f"{job.source.region}/{job.source.table}"
    return [
        (
            ("destinations", index, "name"),
            (
                repr(source_name)
                if destination.name
                else f"is missing: the default name {source_name!r}"
            )
            + " is the name of the job's source table, which its writer goes by "
            f"(active_active write-back): {_GIVE_A_NAME}",
        )
        for index, destination in enumerate(job.destinations)
        # The source itself is said to be (_destination_checks): a name would not help.
        if destination.label == source_name and not _is_the_source(job, destination)
    ]


def _active_active_checks(job: JobConfig) -> Problems:
    """What write-back and tombstones need of loop prevention and the policies."""
    problems: Problems = []
    active = job.active_active
    if active.write_back or active.tombstones:
        what = "write_back" if active.write_back else "tombstones"
        # Tombstones need write-back: turning write-back off alone leaves a job refused.
        turn_off = (
            "set active_active.tombstones: false and active_active.write_back: false"
            if active.tombstones
            else "set active_active.write_back: false"
        )
        if not job.loop_prevention.origin_attribute:
            problems.append(
                (
                    ("active_active", what),
                    "needs loop_prevention.origin_attribute (an active-active job stamps "
                    "its origin, or the source's own corrections would be sent on)",
                )
            )
        overridden = [
            (index, destination.conflict.policy)
            for index, destination in enumerate(job.destinations)
            if destination.conflict is not None
            and destination.conflict.policy not in ORDERED_POLICIES
        ]
        if job.conflict.policy in ORDERED_POLICIES and overridden:
            # The job's own policy ranks: the override is what to change, named there.
            problems += [
                (
                    ("destinations", index, "conflict"),
                    f"policy {policy.value} here, but active_active.{what} needs the "
                    "last_writer_wins or version policy for the job and every destination "
                    f"(they rank images and deletes): drop this override, or {turn_off}",
                )
                for index, policy in overridden
            ]
        elif not job.ordered_everywhere:
            problems.append(
                (
                    ("active_active", what),
                    "needs the last_writer_wins or version policy for the job and every "
                    "destination (they rank images and deletes)",
                )
            )
        if job.ordered_everywhere:
            problems += [
                (
                    ("destinations", index, "conflict"),
                    f"ranks items by {policy_described(job.conflict_for(destination))} but the "
                    f"job by {policy_described(job.conflict)}: active_active.{what} compares "
                    "ranks across regions, so every destination must rank like the job "
                    f"(drop this override, or {turn_off})",
                )
                for index, destination in job.ranked_otherwise
            ]
    return problems


def _settings_read_beside_checks(job: JobConfig) -> Problems:
    """Every loop_prevention and active_active setting given is read: each of these means
    something only beside another setting, and alone would be ignored without a word, as
    an option of another kind would (see _kind_option_checks). An ``origin_value`` is what
    ``origin_attribute`` is compared with: without the attribute loop prevention is off,
    and a pair of such jobs sends every write back (docs/active-active.md, section 10).
    The tombstone table's name and retention are read only with tombstones on."""
    problems: Problems = []
    loop = job.loop_prevention
    if loop.origin_value is not None and not loop.origin_attribute:
        problems.append(
            (
                ("loop_prevention", "origin_value"),
                "needs loop_prevention.origin_attribute, which is not set here: origin_value "
                "is the value that attribute is compared with, so alone it would do nothing "
                "(loop prevention stays off: no echo is skipped, and an active-active pair "
                "of such jobs does not converge); set origin_attribute too, or remove "
                "origin_value",
            )
        )
    active = job.active_active
    if not active.tombstones:
        problems += [
            (
                ("active_active", option),
                "needs active_active.tombstones: true, which is not set here: only "
                "tombstones read it, so it would do nothing; set tombstones: true too, or "
                f"remove {option}",
            )
            for option in ("tombstone_table", "tombstone_retention_hours")
            if option in active.model_fields_set
        ]
    return problems


def _tombstones_need_write_back(job: JobConfig) -> Problems:
    if job.active_active.tombstones and job.active_active.write_back is False:
        return [
            (
                ("active_active", "tombstones"),
                "needs write_back (a stale local put after a delete is corrected in the "
                "source by the same machinery)",
            )
        ]
    return []


def _kinesis_policy_checks(job: JobConfig) -> Problems:
    """A kinesis stream's changes may come out of order: overwrite could keep an older image."""
    if job.source.stream.kind is not StreamKind.KINESIS:
        return []
    problems: Problems = []
    # The job's section decides only for the destinations without their own (write-back
    # and tombstones need an ordered policy there, which their own checks say).
    if job.conflict.policy is ConflictPolicyName.OVERWRITE and any(
        destination.conflict is None for destination in job.destinations
    ):
        given = "policy" in job.conflict.model_fields_set
        problems.append(
            (
                ("conflict", "policy"),
                ("" if given else "is overwrite, the default (the job file gives none): ")
                + "a kinesis stream may deliver an item's changes out of order; use "
                "last_writer_wins, version or custom (overwrite could keep an older image)",
            )
        )
    for index, destination in enumerate(job.destinations):
        conflict = destination.conflict
        if (
            conflict is not None
            and conflict.policy is ConflictPolicyName.OVERWRITE
            and "policy" in conflict.model_fields_set  # else _conflict_option_checks says
        ):
            problems.append(
                (
                    ("destinations", index, "conflict", "policy"),
                    "a kinesis stream may deliver an item's changes out of order; use "
                    "last_writer_wins, version or custom (overwrite could keep an older image)",
                )
            )
    return problems


def _kinesis_watermark_checks(job: JobConfig) -> Problems:
    """The watermark needs a DynamoDB stream (its shards keep the table's order): asked
    for by name with a kinesis source, it would be off without a word, and ``wait``
    refused later."""
    watermark = job.watermark
    if (
        job.source.stream.kind is StreamKind.KINESIS
        and watermark.enabled
        and "enabled" in watermark.model_fields_set
    ):
        return [
            (
                ("watermark", "enabled"),
                "the watermark needs a DynamoDB Streams source (a kinesis stream may "
                "deliver an item's changes out of order, so no time can be said to be "
                "replicated); remove the key or set it to false",
            )
        ]
    return []


# GetRecords on a DynamoDB stream takes a Limit of at most 1000 (ValidationException
# otherwise); on a Kinesis data stream, of at most 10000.
DYNAMODB_STREAMS_MAX_RECORDS = 1000


def _max_records_checks(job: JobConfig) -> Problems:
    """kcl.max_records is GetRecords' Limit in both runtimes: the local runtime's reads
    fail on a larger one (exit 3), and the KCL launcher would silently lower it."""
    records = job.kcl.max_records
    if job.source.stream.kind is StreamKind.DYNAMODB_STREAMS and (
        records > DYNAMODB_STREAMS_MAX_RECORDS
    ):
        return [
            (
                ("kcl", "max_records"),
                f"is {records}, but a DynamoDB stream returns at most "
                f"{DYNAMODB_STREAMS_MAX_RECORDS} records per GetRecords call and refuses a "
                f"larger Limit; use at most {DYNAMODB_STREAMS_MAX_RECORDS} (up to 10000 is "
                "for a kinesis source)",
            )
        ]
    return []


def _kind_option_checks(job: JobConfig) -> Problems:
    """Every option given in dead_letter and conflict_log is one its kind reads."""
    problems: Problems = []
    sections: list[tuple[str, DeadLetterConfig | ConflictLogConfig, dict[str, tuple[StrEnum, ...]]]]
    sections = [
        ("dead_letter", job.dead_letter, DEAD_LETTER_OPTIONS),
        ("conflict_log", job.conflict_log, CONFLICT_LOG_OPTIONS),
    ]
    for name, section, options in sections:
        for option, kinds in options.items():
            if option in section.model_fields_set and section.kind not in kinds:
                problems.append(
                    (
                        (name, option),
                        f"belongs to kind {' or '.join(kind.value for kind in kinds)}, but "
                        f"{name}.kind is {section.kind.value}, which does not read it: "
                        "remove it, or set the kind it belongs to",
                    )
                )
    return problems


# The conflict settings each policy reads: any other one given is refused.
_CONFLICT_OPTIONS: dict[str, tuple[ConflictPolicyName, ...]] = {
    "timestamp_attribute": (ConflictPolicyName.LAST_WRITER_WINS,),
    "version_attribute": (ConflictPolicyName.VERSION,),
    "resolver": (ConflictPolicyName.CUSTOM,),
    "max_attempts": (ConflictPolicyName.CUSTOM,),
}


def _conflict_option_checks(job: JobConfig) -> Problems:
    """Every setting given in a conflict section is one its policy reads. A destination's
    ``conflict: {timestamp_attribute: t}`` replaced the job's section whole, policy
    included: that destination was written with overwrite, unconditionally, with only a
    warning; a setting of another policy beside the one chosen is as likely a mix-up."""
    problems: Problems = []
    for (where, section), (place, _) in zip(
        job.conflict_sections, job.conflict_settings, strict=True
    ):
        if (
            where != ("conflict",)
            and not section.model_fields_set - {"policy"}
            and ("policy" not in section.model_fields_set)
        ):
            problems.append(
                (
                    where,
                    "gives no policy: a destination's conflict section replaces the job's "
                    "whole conflict section, its policy included, so this destination would "
                    f"be written with {section.policy.value}, the default; give its policy "
                    f"(policy: {section.policy.value} to mean that), or remove the section to "
                    "use the job's",
                )
            )
            continue
        for option, policies in _CONFLICT_OPTIONS.items():
            if option not in section.model_fields_set or getattr(section, option) is None:
                continue
            if section.policy in policies:
                continue
            note = ""
            if "policy" in section.model_fields_set:
                chosen = f"{place}.policy is {section.policy.value}"
            else:
                chosen = f"{place} gives no policy, so it is {section.policy.value}, the default"
                if where != ("conflict",):
                    note = (
                        " (a destination's conflict section replaces the job's whole "
                        "conflict section, its policy included)"
                    )
            problems.append(
                (
                    (*where, option),
                    f"is read only by policy {' or '.join(p.value for p in policies)}, but "
                    f"{chosen}, which does not read it{note}: remove it, or set the policy "
                    "it belongs to",
                )
            )
    return problems


def _kcl_checks(job: JobConfig) -> Problems:
    """kcl.extra_properties the rendered file already sets, and, for the properties not
    refused already, what else the KCL would take but the job cannot work with: under
    any runtime, since ``replicator properties`` prints them for any, and a job moves
    between runtimes."""
    refused = _rendered_property_problems(job)
    problems: Problems = [(("kcl", "extra_properties", key), text) for key, text in refused.items()]
    return problems + _kcl_property_checks(job, refused)


def _rendered_property_problems(job: JobConfig) -> dict[str, str]:
    """The extra properties that the properties file rendered for this job already sets,
    as `replicator run` renders it (with the stream ARN it looks up), each with why it is
    refused: Java properties keep the last of two values, so an extra one would silently
    replace the job's. The set comes from the templates themselves, so that a key added
    to one is refused without a list here to keep in step; a default the template marks
    replaceable (the credentials provider, metricsLevel) is not refused. Two extra keys
    the KCL reads as one property (AWSCredentialsProvider in two casings) are refused
    too: which of them wins is not defined."""
    extra = job.kcl.extra_properties
    if not extra:
        return {}
    from replicator.runtime.kcl.properties import rendered_settings

    template, settings = rendered_settings(job)
    problems: dict[str, str] = {}
    seen: dict[str, str] = {}
    for key in extra:
        name = kcl_property_name(key)
        written = settings.get(name)
        if written is not None:
            read_as = "" if written == key else f" (the KCL reads it as {written})"
            if written in KCL_PROPERTY_SETTINGS:
                problems[key] = (
                    f"is written from the job file{read_as}, set "
                    f"{KCL_PROPERTY_SETTINGS[written]} instead"
                )
            elif written in KCL_FIXED_PROPERTIES:
                problems[key] = (
                    f"is written by the replicator{read_as} and cannot be changed: "
                    f"{KCL_FIXED_PROPERTIES[written]}"
                )
            else:
                problems[key] = (
                    f"is set by the KCL properties template {template}{read_as}; a second "
                    "value would silently replace it"
                )
        elif name in seen:
            problems[key] = (
                f"the KCL reads it as the same property as kcl.extra_properties.{seen[name]} "
                "(it matches AWSCredentialsProvider keys whatever their case), and which "
                "of the two it takes is not defined: keep one"
            )
        seen.setdefault(name, key)
    return problems


def _origin_attribute_checks(job: JobConfig) -> list[tuple[tuple[str | int, ...], str]]:
    """The attribute that ranks images cannot also be the origin stamp: loop prevention
    would read every image's timestamp as a region name (and never find its own), and
    the order would compare region names as times."""
    origin = job.loop_prevention.origin_attribute
    if not origin:
        return []
    problems: list[tuple[tuple[str | int, ...], str]] = []
    for place, conflict in job.conflict_sections:
        if conflict.policy not in ORDERED_POLICIES:
            continue
        policy, attribute = policy_ranking(conflict)
        if attribute == origin:
            name = (
                "version_attribute"
                if policy is ConflictPolicyName.VERSION
                else "timestamp_attribute"
            )
            problems.append(
                (
                    (*place, name),
                    f"is {attribute!r}, which is also loop_prevention.origin_attribute: the "
                    "attribute that ranks images and the one that stamps their region must "
                    "be two attributes",
                )
            )
    return problems


def _task(job: JobConfig) -> str:
    """The job's task name, given or derived."""
    from replicator.config.task_name import default_task_name

    return job.task_name or default_task_name(job)


def _file_patterns(job: JobConfig) -> list[tuple[tuple[str | int, ...], str, str]]:
    """The files the job appends to: each key, what it is, and its ``{task_name}`` pattern."""
    files: list[tuple[tuple[str | int, ...], str, str]] = []
    if job.dead_letter.kind is DeadLetterKind.FILE:
        files.append((("dead_letter", "path"), "the dead-letter file", job.dead_letter.path))
    if job.conflict_log.kind is ConflictLogKind.FILE:
        files.append((("conflict_log", "path"), "the conflict log", job.conflict_log.path))
    return files


def _task_patterns(job: JobConfig) -> list[tuple[tuple[str | int, ...], str, bool]]:
    """The ``{task_name}`` patterns of the files and table the job uses: each key, its
    pattern, and whether it names a table."""
    patterns = [(where, pattern, False) for where, _, pattern in _file_patterns(job)]
    if job.conflict_log.kind is ConflictLogKind.DYNAMODB:
        patterns.append((("conflict_log", "table"), job.conflict_log.table, True))
    return patterns


def _pattern_syntax_checks(section: str) -> Callable[[JobConfig], Problems]:
    """The check of ``section``'s patterns' own faults, which need no task name (nor the
    other section): said beside a source's or a destination's problem, not after it is
    fixed."""

    def check(job: JobConfig) -> list[tuple[tuple[str | int, ...], str]]:
        problems: list[tuple[tuple[str | int, ...], str]] = []
        for where, pattern, _ in _task_patterns(job):
            what = pattern_problem(pattern, "task_name") if where[0] == section else None
            if what:
                problems.append(
                    (where, f"may use only {{task_name}} (and {{{{ }}}} for a brace): {what}")
                )
        return problems

    return check


def _task_pattern_checks(job: JobConfig) -> list[tuple[tuple[str | int, ...], str]]:
    """The names made from ``{task_name}`` patterns (the files and table the job uses);
    a pattern with a fault of its own is :func:`_pattern_syntax_checks`' to name."""
    task = _task(job)
    problems: list[tuple[tuple[str | int, ...], str]] = []
    for where, pattern, is_table in _task_patterns(job):
        if pattern_problem(pattern, "task_name"):
            continue
        name = pattern.format(task_name=task)
        if is_table and not TABLE_PATTERN.fullmatch(name):
            problems.append(
                (
                    where,
                    f"gives {shown(name)} for task {shown(task)}, which is not a DynamoDB "
                    "table name "
                    "(3-255 characters of letters, digits, _ . -)",
                )
            )
    return problems


def _stream_arn_checks(job: JobConfig) -> list[tuple[tuple[str | int, ...], str]]:
    """A DynamoDB stream ARN names its table and region in its text: they must be the
    source's (DescribeStream at run checks that the stream exists)."""
    source = job.source
    arn = source.stream.arn
    if not arn:
        return []
    where: tuple[str | int, ...] = ("source", "stream", "arn")
    if source.stream.kind is StreamKind.KINESIS:
        return _kinesis_arn_checks(arn, source.region, where)
    match = DYNAMODB_STREAM_ARN_PATTERN.fullmatch(arn)
    if match is None:
        hint = (
            "; for a Kinesis data stream set source.stream.kind: kinesis"
            if ":kinesis:" in arn
            else ""
        )
        return [
            (
                where,
                "expected a DynamoDB stream ARN such as arn:aws:dynamodb:us-east-1:"
                f"123456789012:table/{source.table}/stream/2026-01-01T00:00:00.000{hint}, "
                f"got {shown(arn)}",
            )
        ]
    problems: list[tuple[tuple[str | int, ...], str]] = []
    table, region = match["table"], match["region"]
    if table != source.table:
        problems.append(
            (
                where,
                f"is a stream of table {shown(table)}, but source.table is {source.table!r}: a "
                "stream carries only its own table's changes; name the source table's "
                "stream, or leave stream.arn out to use the table's latest",
            )
        )
    # A local emulator's ARNs may carry a region of its own (DynamoDB Local: ddblocal).
    if region != source.region and REGION_PATTERN.fullmatch(region):
        problems.append(
            (
                where,
                f"is a stream in region {region}, but source.region is {source.region}: "
                "the stream must be read in its table's region",
            )
        )
    return problems


def _kinesis_arn_checks(
    arn: str, source_region: str, where: tuple[str | int, ...]
) -> list[tuple[tuple[str | int, ...], str]]:
    """DynamoDB streams a table's changes only to a Kinesis data stream in the table's own
    region, and the KCL reads the stream's name in source.region: an ARN of another
    region names a stream that cannot carry the table's changes (the name, not the ARN,
    is what would be read). The ARN's text was checked by StreamConfig."""
    region = arn.split(":")[3]
    if region == source_region or not REGION_PATTERN.fullmatch(region):
        return []
    return [
        (
            where,
            f"is a Kinesis data stream in region {region}, but source.region is "
            f"{source_region}: DynamoDB streams a table's changes only to a Kinesis data "
            "stream in the table's region, and the KCL reads the stream in source.region",
        )
    ]


def _runtime_checks(job: JobConfig) -> list[tuple[tuple[str | int, ...], str]]:
    """Settings that the job's runtime cannot work with (``run`` would refuse them)."""
    problems: list[tuple[tuple[str | int, ...], str]] = []
    if job.runtime is RuntimeKind.KCL and job.source.role_arn:
        # The daemon reads the stream and keeps its lease table with the host's own
        # credentials; only the processors (destinations) assume roles.
        problems.append(
            (
                ("source", "role_arn"),
                "is not supported by runtime kcl (the KCL reads the source with the host's "
                "own credentials); run the workers with credentials of the source account "
                "and drop source.role_arn, or use runtime: local",
            )
        )
    if job.runtime is RuntimeKind.LOCAL and job.source.stream.kind is StreamKind.KINESIS:
        problems.append(
            (
                ("source", "stream", "kind"),
                "kinesis is not supported by runtime local, which reads DynamoDB Streams; "
                "a kinesis source needs runtime: kcl",
            )
        )
    return problems


def _tombstone_table_checks(job: JobConfig) -> list[tuple[tuple[str | int, ...], str]]:
    """The tombstone table pattern, formatted with every table the job formats it with
    (the source's and each destination's), must give a DynamoDB table name, and with
    tombstones on never one of the job's own tables: a user table, or a table the job
    keeps for itself (lease, watermark, backfill, KCL, conflict log), whose items the
    tombstone writes would mix with (or which has another key)."""
    where: tuple[str | int, ...] = ("active_active", "tombstone_table")
    tables = _tombstone_places(job)
    if not job.active_active.tombstones:
        return []  # no tombstone table: a one-way job's long table name is no problem
    for _, table in tables:
        name = job.tombstone_table(table)
        if not TABLE_PATTERN.fullmatch(name):
            shorter = (
                ": set a shorter active_active.tombstone_table pattern"
                if len(name) > MAX_TABLE_NAME
                else ""
            )
            return [
                (
                    where,
                    f"gives {shown_with_length(name)} for the table {shown(table)}, "
                    "which is not a DynamoDB table name (3-255 characters of letters, "
                    f"digits, _ . -){shorter}",
                )
            ]
    own = _own_tables(job)
    for region, table in tables:
        name = job.tombstone_table(table)
        clash = own.get((region, name))
        if clash is not None:
            return [
                (
                    where,
                    f"gives {shown(name)} in {region} for the table {shown(table)}, which is "
                    "one of the "
                    f"job's own tables ({clash}): "
                    "choose a pattern (or a task_name) that gives the tombstones a table "
                    "of their own",
                )
            ]
    return []


def _tombstone_places(job: JobConfig) -> list[tuple[str, str]]:
    """(region, table) of every table a tombstone table is kept beside: the source's and
    each destination's."""
    return [(job.source.region, job.source.table)] + [(d.region, d.table) for d in job.destinations]


def _own_tables(job: JobConfig, *, conflict_log: bool = True) -> dict[tuple[str, str], str]:
    """Every table the job reads or writes, by (region, name): what each one is
    (``conflict_log``: the conflict log's table among them)."""
    task = _task(job)
    source = job.source.region
    own = {(source, task): "its lease table, named task_name"}
    for suffix in TASK_TABLE_SUFFIXES:
        if suffix == "-watermark":
            for destination in job.destinations:
                own[(destination.region, task + suffix)] = "its watermark table"
        else:
            own[(source, task + suffix)] = f"its {suffix[1:]} table"
    log = job.conflict_log
    if (
        conflict_log
        and log.kind is ConflictLogKind.DYNAMODB
        and not pattern_problem(log.table, "task_name")
    ):
        own[(log.region or source, log.table.format(task_name=task))] = (
            "its conflict log, conflict_log.table"
        )
    for index, destination in reversed(list(enumerate(job.destinations))):
        own[(destination.region, destination.table)] = f"the table of destinations[{index}]"
    own[(source, job.source.table)] = "the source table"
    return own


def _task_table_checks(job: JobConfig) -> Problems:
    """The tables named after the task (the lease table and the KCL's two and a
    backfill's progress table in the source's region, the watermark's status table in
    each destination's) are the replicator's own: one that is the source or a
    destination table (same region and endpoint) would get leases or parts written
    among the application's items, or be refused as having other keys only at start."""
    task = _task(job)
    source = job.source
    users: dict[tuple[str, str | None, str], str] = {}
    for index, destination in reversed(list(enumerate(job.destinations))):
        users[_table_place(destination)] = f"the table of destinations[{index}]"
    users[_table_place(source)] = "the source table"
    own = [(_table_place(source, task), "lease table")]
    for suffix in TASK_TABLE_SUFFIXES:
        if suffix == "-watermark":
            own += [
                (_table_place(d, task + suffix), "watermark status table") for d in job.destinations
            ]
        else:
            own.append((_table_place(source, task + suffix), f"{suffix[1:]} table"))
    for place, what in own:
        clash = users.get(place)
        if clash is not None:
            region, _, name = place
            return [
                (
                    ("task_name",),
                    f"{shown(task)} names the job's {what} {shown(name)} in {region}, "
                    f"which is {clash}: "
                    "the replicator keeps its own items in that table; give the job a "
                    "task_name that names none of its tables",
                )
            ]
    return []


def _conflict_log_table_checks(job: JobConfig) -> Problems:
    """A conflict log of kind dynamodb has a table of its own: one of the job's own tables
    (the source, a destination, the lease table, a watermark, backfill or KCL table)
    would get the entries as items among the application's (or the replicator's) and
    its TTL turned on, and ``conflicts`` would list its items as unreadable entries.
    Tables are compared as the tombstone tables are, by region and name. A tombstone
    table that is the log's is reported at active_active.tombstone_table."""
    log = job.conflict_log
    if log.kind is not ConflictLogKind.DYNAMODB or pattern_problem(log.table, "task_name"):
        return []
    name = log.table.format(task_name=_task(job))
    region = log.region or job.source.region
    clash = _own_tables(job, conflict_log=False).get((region, name))
    if clash is None:
        return []
    return [
        (
            ("conflict_log", "table"),
            f"gives {shown(name)} in {region}, which is one of the job's own tables ({clash}): "
            "the entries would be written as items of that table, and its TTL turned on; "
            "give the conflict log a table of its own (the default is "
            "{task_name}-conflicts)",
        )
    ]


# An SQS queue URL, as AWS and the emulators give them: http(s)://host[:port]/<account
# id: 12 digits>/<queue name: 1 to 80 letters, digits, - and _; .fifo for a FIFO queue>.
_QUEUE_URL = re.compile(r"https?://[^/\s?#]+/\d{12}/[A-Za-z0-9_-]{1,80}(?:\.fifo)?", re.I)


def _queue_url_checks(job: JobConfig) -> Problems:
    """A queue URL that is not one (a typo, a queue's name or ARN) names no queue: the
    first dead letter would stop the worker, every conflict-log entry would be dropped.

    A FIFO queue takes only messages with a MessageGroupId, which the dead letters and
    the conflict log do not send: every message would be refused (MissingParameter), a
    dead letter stopping the worker and an entry counted as dropped. A FIFO queue's
    name, the last part of its URL, ends in ``.fifo``."""
    problems: Problems = []
    targets: list[tuple[str, DeadLetterConfig | ConflictLogConfig, str]] = []
    if job.dead_letter.kind is DeadLetterKind.SQS:
        targets.append(("dead_letter", job.dead_letter, "dead letter"))
    if job.conflict_log.kind is ConflictLogKind.SQS:
        targets.append(("conflict_log", job.conflict_log, "conflict-log entry"))
    for section, settings, what in targets:
        url, endpoint_url = settings.queue_url, settings.endpoint_url
        region = sqs_region(settings, job.source.region)
        named_region = aws_queue_region(url) if url else None
        problem = userinfo_problem(url) if url else None
        if url and problem:
            # Refused as an endpoint_url with them is: the form has no place for them.
            problems.append(
                (
                    (section, "queue_url"),
                    f"expected an SQS queue URL, http(s)://host[:port]/<account id, 12 "
                    f"digits>/<queue name>: {problem}, got {quoted(url)}",
                )
            )
        elif url and not _QUEUE_URL.fullmatch(url):
            problems.append(
                (
                    (section, "queue_url"),
                    f"{shown(url)} is not an SQS queue URL, which has the form "
                    "https://sqs.<region>.amazonaws.com/<account id, 12 digits>/<queue name> "
                    "(or the same path after the endpoint_url of an SQS-compatible "
                    "endpoint); give the QueueUrl that aws sqs get-queue-url prints",
                )
            )
        elif url and url.lower().endswith(".fifo"):
            problems.append(
                (
                    (section, "queue_url"),
                    f"{shown(url)} is a FIFO queue (its name ends in .fifo), which refuses every "
                    f"message sent without a MessageGroupId, as each {what} is; "
                    "FIFO queues are not supported: give a standard queue",
                )
            )
        elif url and endpoint_url is None and not at_aws(url):
            sent_to = _aws_sqs_endpoint_for(url, region)
            if sent_to is not None:
                problems.append(
                    (
                        (section, "queue_url"),
                        f"{shown(url)} is not at AWS's SQS host, and {section}.endpoint_url is "
                        f"not set: every request about it would go to {sent_to}, AWS's own "
                        f"SQS endpoint in {region}, not to the server in the URL; give "
                        f"{section}.endpoint_url, the endpoint that serves this queue",
                    )
                )
        elif url and endpoint_url is None and named_region not in (None, region):
            problems.append(
                (
                    (section, "region"),
                    f"is {region}, but {section}.queue_url's queue is in "
                    f"{named_region} (its host says so): SQS answers about a queue "
                    f"only in the queue's region, and would say {shown(url)} does not exist; "
                    "leave region out (the queue URL's region is taken) or give the queue's",
                )
            )
    return problems


def _inherited_region_checks(job: JobConfig) -> Problems:
    """An AWS endpoint in a section that gives no ``region`` is checked against the
    region the section takes, the source's (a section's own ``region`` is checked at
    its key, with the endpoint)."""
    problems: Problems = []
    for section, settings in (("dead_letter", job.dead_letter), ("conflict_log", job.conflict_log)):
        if settings.region is not None or settings.endpoint_url is None:
            continue
        whose = f"the region {section} takes, source.region (it gives none),"
        problem = aws_region_problem(settings.endpoint_url, job.source.region, whose)
        if problem is not None:
            problems.append(
                ((section, "endpoint_url"), f"{problem}, got {quoted(settings.endpoint_url)}")
            )
    return problems


def _aws_sqs_endpoint_for(url: str, region: str) -> str | None:
    """AWS's SQS endpoint, where a section without an ``endpoint_url`` sends its requests
    about queue ``url`` (botocore sends them to the client's endpoint, whatever host the
    URL names), when the URL names another server: a queue of an emulator or a proxy
    that the requests would never reach. None when the URL is at an AWS host (the client
    is made in the region it names: ``sqs_region``), or when an endpoint comes from
    ``AWS_ENDPOINT_URL_SQS``, ``AWS_ENDPOINT_URL`` or the AWS config file, which the job
    cannot see but botocore uses."""
    return None if at_aws(url) else aws_endpoint_of("sqs", region)


def _queue_identity(
    url: str, region: str, endpoint_url: str | None
) -> tuple[str, str | None, str, str]:
    """The queue a (valid) queue URL names where a section reaches it: the region, the
    endpoint (as the server it reaches, None for AWS's own), the account and the name.
    Without an endpoint_url an AWS host in the URL says the region; an endpoint_url that
    is AWS's own SQS endpoint (``https://sqs.<region>.amazonaws.com``, default port) is
    no endpoint in the region it names, where the SDK would send the requests too.
    Nothing is looked up, so two spellings of one emulator's host stay two places."""
    parts = urlsplit(url)
    account, name = parts.path.strip("/").split("/")
    if endpoint_url is not None:
        endpoint = urlsplit(endpoint_url)
        scheme = endpoint.scheme.lower()
        default_port = {"http": 80, "https": 443}.get(scheme)
        aws = aws_queue_region(endpoint_url)
        if aws is None or (endpoint.port or default_port) != default_port:
            return (region, endpoint_identity(endpoint_url, region), account, name)
        return (aws, None, account, name)
    return (aws_queue_region(url) or region, None, account, name)


def _shared_queue_checks(job: JobConfig) -> Problems:
    """The conflict log and the dead letters are never one queue: ``redrive`` would read
    every entry as an unreadable letter (kept, so every redrive exits 1), and
    ``conflicts`` every letter as an unreadable entry (hiding it from ``redrive`` for its
    visibility timeout). Queues are compared by region, endpoint, account and name, so
    the same URL spelt with another case or the default port is the same queue."""
    letters, log = job.dead_letter, job.conflict_log
    if letters.kind is not DeadLetterKind.SQS or log.kind is not ConflictLogKind.SQS:
        return []
    urls = (letters.queue_url or "", log.queue_url or "")
    if not all(_QUEUE_URL.fullmatch(url) for url in urls):
        return []  # reported by _queue_url_checks
    source = job.source.region
    letters_queue = _queue_identity(urls[0], letters.region or source, letters.endpoint_url)
    if letters_queue != _queue_identity(urls[1], log.region or source, log.endpoint_url):
        return []
    return [
        (
            ("conflict_log", "queue_url"),
            f"gives {urls[1]!r}, which is also the dead-letter queue (dead_letter.queue_url: "
            f"{urls[0]!r}): conflict-log entries and dead letters would be mixed in one "
            "queue, each read as unreadable messages of the other (every redrive would exit "
            "1, conflicts warn about every letter); give the conflict log a queue of its own",
        )
    ]


def _job_files(job: JobConfig) -> list[tuple[tuple[str | int, ...], str, str]]:
    """The files the job appends to, each with its key, what it is and its path as the
    runtime makes it (``{task_name}`` filled in, relative to the working directory)."""
    task = _task(job)
    return [
        (where, what, pattern.format(task_name=task))
        for where, what, pattern in _file_patterns(job)
        if not pattern_problem(pattern, "task_name")
    ]


def _same_file(one: str, other: str) -> bool:
    """Whether two paths (relative ones to the working directory) name one file: the
    same text once normalized, through symbolic links, or one file by two names."""
    if os.path.realpath(one) == os.path.realpath(other):
        return True
    try:
        return os.path.samefile(one, other)
    except OSError:  # one of them does not exist (yet): only a name can tell
        return False


def _file_checks(job: JobConfig, job_file: Path | None) -> Problems:
    """No two of the job's files are one: the conflict log in the dead-letter file would
    make ``redrive`` read its entries as unreadable letters (and ``conflicts`` the
    letters as unreadable entries), and either in the job file would append JSON lines
    to it."""
    files = _job_files(job)
    problems: Problems = []
    for index, (where, what, path) in enumerate(files):
        for _, earlier_what, earlier in files[:index]:
            if _same_file(path, earlier):
                problems.append(
                    (
                        where,
                        f"gives {path!r}, which is also {earlier_what} ({earlier!r}): "
                        f"{what} and {earlier_what} would be mixed in one file, each read as "
                        f"unreadable lines of the other; give {what} a file of its own",
                    )
                )
        if job_file is not None and _same_file(path, str(job_file)):
            problems.append(
                (
                    where,
                    f"gives {path!r}, which is the job file itself: {what} would append "
                    "its lines to it; give it a file of its own",
                )
            )
    return problems


def disk_checks(job: JobConfig, *, directories_only: bool = False) -> Problems:
    """What only the files on disk tell (``validate``, in the working directory that
    ``run`` will use): a file target that names an existing directory, or (unless
    ``directories_only``) something else that is not a regular file (a FIFO, which
    opening would wait on for ever, ``/dev/null``, which keeps nothing) or a path no
    file can have (a name too long, a directory to make where a file is), each of which
    ``run`` refuses at start."""
    from replicator.appendfile import dangling_link, file_in_the_way, not_a_regular_file, unusable

    problems: Problems = []
    for where, what, path in _job_files(job):
        kind = None if directories_only else not_a_regular_file(path)
        problem = None if directories_only else unusable(path) or dangling_link(Path(path))
        blocking = None if directories_only else file_in_the_way(path)
        if blocking is not None:
            shown = os.path.abspath(path)
            problems.append(
                (
                    where,
                    f"{what} {shown} cannot be written: {os.path.abspath(blocking)} is a file, "
                    f"so the directory {os.path.dirname(shown)} cannot be created",
                )
            )
        elif problem is not None:
            problems.append((where, f"{what} {os.path.abspath(path)} cannot be written: {problem}"))
        elif kind is not None and kind != "a directory":
            problems.append(
                (
                    where,
                    f"{what} {os.path.abspath(path)} is {kind}, not a regular file: "
                    f"{'.'.join(map(str, where))} must name a file of its own",
                )
            )
        elif os.path.isdir(path):
            shown = os.path.abspath(path)
            problems.append(
                (
                    where,
                    f"{what} {shown} is a directory: {'.'.join(map(str, where))} must name "
                    f"a file (such as {os.path.join(path, '{task_name}.jsonl')})",
                )
            )
    return problems


def _start_time_problem(value: str, dynamodb: bool) -> str:
    """Why initialPositionInStreamExtended is refused, quoting what was written: the KCL
    reads it as a time (seconds since 1970) to start new leases at, AT_TIMESTAMP, and
    fails on anything else (a position such as LATEST is kcl.initial_position's)."""
    position = value.strip().upper()
    hint = (
        f"; {position} is a position, not a time: set kcl.initial_position: {position}"
        if position in InitialPosition.__members__
        else ""
    )
    why = (
        "which a DynamoDB stream does not support: the DynamoDB Streams Kinesis Adapter "
        "starts new leases only at TRIM_HORIZON or LATEST (kcl.initial_position)"
        if dynamodb
        # It sets the very field kcl.initial_position's initialPositionInStream sets, and
        # the KCL applies the two in no fixed order (a hash map's): the start would be
        # either, by chance.
        else "which is not supported for a kinesis source: it and kcl.initial_position set "
        "the same start position, and the KCL applies them in no fixed order; "
        f"{INITIAL_POSITION_ADVICE} (kcl.initial_position)"
    )
    return (
        f"is {shown(value)}: the KCL reads this property as a time (seconds since 1970) to "
        f"start new leases at (AT_TIMESTAMP), {why}{hint}"
    )


def _kcl_property_checks(
    job: JobConfig, refused: Collection[str]
) -> list[tuple[tuple[str | int, ...], str]]:
    """kcl.extra_properties that the KCL would take but the job cannot work with (those
    ``refused`` already aside)."""
    extra = {key: value for key, value in job.kcl.extra_properties.items() if key not in refused}
    problems = ((key, kcl_setting_problem(job, key, value)) for key, value in extra.items())
    return [(("kcl", "extra_properties", key), text) for key, text in problems if text]


def kcl_setting_problem(job: JobConfig, key: str, value: str) -> str | None:
    """Why the KCL would take ``key = value`` but the job cannot work with it (None if
    it can): the same whether kcl.extra_properties or a properties template sets it."""
    dynamodb = job.source.stream.kind is StreamKind.DYNAMODB_STREAMS
    if key in KCL_ENUM_PROPERTIES and value != value.strip():
        return (
            f"{shown(value)} has blanks around it, which the KCL reads as part of the name of "
            f"its constant ({value.upper()!r} is none): write {value.strip()!r}"
        )
    if key in KCL_ENUM_VALUES and value.upper() not in KCL_ENUM_VALUES[key]:
        return (
            f"{shown(value)} is none of the values the KCL takes for {key}: "
            f"{', '.join(KCL_ENUM_VALUES[key])} (in any case)"
        )
    if key == "initialPositionInStream":
        if dynamodb and value.strip().upper() == "AT_TIMESTAMP":
            return (
                "AT_TIMESTAMP is not supported for a DynamoDB stream: the DynamoDB Streams "
                "Kinesis Adapter starts new leases only at TRIM_HORIZON or LATEST "
                "(kcl.initial_position)"
            )
        return None
    if key == "initialPositionInStreamExtended":
        return _start_time_problem(value, dynamodb)
    if key == "metricsLevel":
        level = value.strip().upper()
        if level != "NONE" and job.kcl_endpoint_override():
            extra = job.kcl.extra_properties
            given = [f"kcl.extra_properties.{k}" for k in KCL_ENDPOINT_KEYS if k in extra]
            named = "source.endpoint_url" if job.source.endpoint_url else " and ".join(given)
            return (
                f"{level} would make the KCL publish its metrics to CloudWatch in AWS while "
                f"the job reads a local endpoint ({named}); leave metricsLevel at "
                "NONE (the replicator serves its own metrics on /metrics)"
            )
        return None
    if key in KCL_TABLE_SUFFIXES:
        return _kcl_table_problem(job, key, value)
    problem = numeric_property_problem(key, value)
    if problem is None and key.lower().startswith(CREDENTIALS_PROVIDER_KEY):
        problem = credentials_provider_problem(value)
    return problem


def _kcl_table_problem(job: JobConfig, key: str, name: str) -> str | None:
    """A KCL table moved by name must still be a table of its own: the KCL writes its
    coordination (leader lock, migration state) or worker metrics there, and in any
    other of the job's tables (the lease table, the source, the other KCL table) its
    items have another key, so the scheduler retries its start for ever, reading no
    shard. The KCL takes the name as written, blanks around it included."""
    if name != name.strip() and TABLE_PATTERN.fullmatch(name.strip()):
        return (
            f"{shown(name)} has blanks around it, which the KCL keeps in the table's name "
            f"(no DynamoDB table name): write {name.strip()!r}"
        )
    if not TABLE_PATTERN.fullmatch(name):
        return (
            f"{shown(name)} is not a DynamoDB table name (3-255 characters of letters, "
            "digits, _ . -): the KCL could not create its table"
        )
    task = _task(job)
    source = job.source.region
    default = task + KCL_TABLE_SUFFIXES[key]
    own = _own_tables(job)
    if job.active_active.tombstones:
        for region, table in _tombstone_places(job):
            own.setdefault((region, job.tombstone_table(table)), "a tombstone table of the job")
    for other, suffix in KCL_TABLE_SUFFIXES.items():
        if other != key:
            # Its default name stays the job's even when it is moved: an earlier run may
            # have left that table, holding the other table's items.
            named = kcl_table(job.kcl.extra_properties, task, other)
            if named != task + suffix:
                own[(source, task + suffix)] = (
                    f"the default name of the KCL's table of {other}, which an earlier run "
                    "may have left holding that table's items"
                )
            own[(source, named)] = f"the KCL's table of {other}"
    clash = own.get((source, name))
    if clash is None or name == default:
        return None
    return (
        f"{shown(name)} names a table the job already uses in {source}, {clash}: the KCL "
        "keeps items of its own key there "
        f"and would retry its start for ever; leave {key} out (the KCL then uses "
        f"{default!r}) or name a table the job has no other use for"
    )


# Every cross-field check, with the top-level keys it reads (a derived task name reads
# the source and the destinations): see cross_checks.
_TASK = frozenset({"task_name", "source", "destinations"})
_CROSS_CHECKS: tuple[tuple[Callable[[JobConfig], Problems], frozenset[str]], ...] = (
    (_destination_checks, frozenset({"source", "destinations"})),
    (
        _source_name_checks,
        frozenset({"source", "destinations", "active_active", "loop_prevention", "conflict"}),
    ),
    (_pattern_syntax_checks("dead_letter"), frozenset({"dead_letter"})),
    (_pattern_syntax_checks("conflict_log"), frozenset({"conflict_log"})),
    (_task_pattern_checks, _TASK | {"dead_letter", "conflict_log"}),
    (_runtime_checks, frozenset({"runtime", "source"})),
    (_stream_arn_checks, frozenset({"source"})),
    (_tombstone_table_checks, _TASK | {"active_active", "conflict_log"}),
    (
        _active_active_checks,
        frozenset({"active_active", "loop_prevention", "conflict", "destinations"}),
    ),
    (_origin_attribute_checks, frozenset({"loop_prevention", "conflict", "destinations"})),
    (_tombstones_need_write_back, frozenset({"active_active"})),
    (_settings_read_beside_checks, frozenset({"loop_prevention", "active_active"})),
    (_kcl_checks, frozenset({"runtime", "kcl", "source"})),
    (_kinesis_policy_checks, frozenset({"source", "conflict", "destinations"})),
    (_kinesis_watermark_checks, frozenset({"source", "watermark"})),
    (_max_records_checks, frozenset({"source", "kcl"})),
    (_kind_option_checks, frozenset({"dead_letter", "conflict_log"})),
    (_conflict_option_checks, frozenset({"conflict", "destinations"})),
    (_conflict_log_table_checks, _TASK | {"conflict_log"}),
    (_queue_url_checks, frozenset({"dead_letter", "conflict_log"})),
    (_inherited_region_checks, frozenset({"dead_letter", "conflict_log", "source"})),
    (_shared_queue_checks, frozenset({"dead_letter", "conflict_log", "source"})),
    (_task_table_checks, _TASK),
)
# The checks that read the files the job names, with the keys they read.
FILE_CHECK_KEYS = _TASK | {"dead_letter", "conflict_log"}
