"""``replicator verify`` against a moto server over HTTP: each kind of difference, re-checks,
sampling, repair through the conflict policy, and the exit codes."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from replicator.config.loader import load_job
from replicator.demo.workload import demo_item
from replicator.exceptions import DestinationUnavailable, OperatorError
from replicator.items import Item
from replicator.rules import OrderedRule, rule_for
from replicator.tombstones.model import tombstone_of
from replicator.tombstones.setup import prepare as prepare_tombstones
from replicator.tombstones.table import TombstoneTable
from replicator.tools import snapshot
from replicator.tools.compare import compare
from replicator.tools.futures import INTERRUPT_GRACE_S
from replicator.tools.tables import TTL_HORIZON_S, expired_by_ttl
from replicator.tools.verify import Finding, Verify, VerifyHooks, VerifyOptions, VerifyReport
from tests.config.test_config import forget_modules
from tests.support.cli import in_process, replicator
from tests.support.e2e import Job, wait_until
from tests.support.faults.proxy import Fault, FaultProxy, Mode
from tests.support.tools import interrupted_once, run_within

LWW = "conflict: {policy: last_writer_wins, timestamp_attribute: updated_at}"


@pytest.fixture
def job(moto_endpoint: str, unique: Any, tmp_path: Path) -> Job:
    return Job(moto_endpoint, unique("verify"), tmp_path)


def replicated(job: Job, count: int, *, to: tuple[int, ...] = (0, 1)) -> list[Item]:
    """``count`` source items, copied as they are to the destinations numbered in ``to``."""
    rng = random.Random(3)
    items = [demo_item(rng, f"c{index % 9}", index, "us-east-1") for index in range(count)]
    destinations = job.destination_clients()
    for item in items:
        job.source.put_item(TableName=job.source_table, Item=item)
        for number in to:
            ddb, table = destinations[number]
            ddb.put_item(TableName=table, Item=item)
    return items


def key(item: Item) -> Item:
    return {"pk": item["pk"], "sk": item["sk"]}


def cli(job: Job, *args: str) -> subprocess.CompletedProcess[str]:
    """``replicator verify --config JOB ARGS`` run in this process: see
    :func:`test_hand_made_differences_are_reported_precisely_and_repair_brings_back_equality`."""
    return in_process("verify", "--config", str(job.path), *args)


def verify(job: Job, hooks: VerifyHooks | None = None, **options: Any) -> VerifyReport:
    options.setdefault("recheck_pause_s", 0.1)
    return Verify(load_job(job.path), VerifyOptions(**options), hooks=hooks).run()


def test_hand_made_differences_are_reported_precisely_and_repair_brings_back_equality(
    job: Job,
) -> None:
    items = replicated(job, 40)
    (eu, eu_table), (ap, ap_table) = job.destination_clients()
    eu.delete_item(TableName=eu_table, Key=key(items[1]))
    eu.put_item(TableName=eu_table, Item={"pk": {"S": "zz"}, "sk": {"N": "7"}, "x": {"S": "?"}})
    eu.update_item(
        TableName=eu_table,
        Key=key(items[2]),
        UpdateExpression="SET #n = :n",
        ExpressionAttributeNames={"#n": "name"},
        ExpressionAttributeValues={":n": {"S": "mallory"}},
    )
    eu.update_item(
        TableName=eu_table,
        Key=key(items[3]),
        UpdateExpression="SET price = :p REMOVE note",
        ExpressionAttributeValues={":p": {"N": "0.01"}},
    )
    ap.update_item(
        TableName=ap_table,
        Key=key(items[4]),
        UpdateExpression="SET tags = :t",
        ExpressionAttributeValues={":t": {"SS": ["altered"]}},
    )

    # This verify as a process of its own, as an operator runs it; the others in this
    # process (cli): each runs to its end by itself and is checked by its exit status,
    # output and tables. Signals are sent to a process of its own
    # (test_repair_stuck_on_a_throttled_destination_stops_on_the_second_signal).
    found = replicator("verify", "--config", str(job.path), "--recheck-pause", "0.1")

    assert found.returncode == 1, found.stderr
    lines = found.stdout.splitlines()
    assert lines[0].startswith(f"verify us-east-1/{job.source_table}: 5 differences")
    assert f"eu-west-1/{job.name}-eu: scanned 40 items, 4 differences" in lines
    assert f"ap-southeast-2/{job.name}-ap: scanned 40 items, 1 difference" in lines
    assert "  missing   pk=S:c1 sk=N:1" in lines
    assert "  extra     pk=S:zz sk=N:7" in lines
    assert "  different pk=S:c2 sk=N:2  attributes: name" in lines
    assert "  different pk=S:c3 sk=N:3  attributes: note, price" in lines
    assert "  different pk=S:c4 sk=N:4  attributes: tags" in lines

    as_json = cli(job, "--json", "--recheck", "1")
    assert as_json.returncode == 1
    report = json.loads(as_json.stdout)
    assert report["equal"] is False
    eu_report = report["destinations"][f"eu-west-1/{job.name}-eu"]
    assert sorted(
        (d["kind"], d["key"]["pk"]["S"], d.get("attributes", [])) for d in eu_report["differences"]
    ) == [
        ("different", "c2", ["name"]),
        ("different", "c3", ["note", "price"]),
        ("extra", "zz", []),
        ("missing", "c1", []),
    ]

    repaired = cli(job, "--repair", "--recheck-pause", "0.1")
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    assert repaired.stdout.count("-> repaired") == 5
    assert f"eu-west-1/{job.name}-eu: scanned 40 items, equal after repair (4 repaired)" in (
        repaired.stdout.splitlines()
    )

    again = cli(job)
    assert again.returncode == 0, again.stdout
    assert job.converged()


def ttl_items(now: float) -> dict[str, Item]:
    """Items only at a destination, by what their ``expires`` (the source's TTL
    attribute) holds. DynamoDB's TTL deletes an item whose expiry is a number of epoch
    seconds in the past, and no more than five years in the past: the first two only."""

    def item(pk: str, expires: dict[str, str] | None = None) -> Item:
        found: Item = {"pk": {"S": pk}, "sk": {"N": "1"}, "x": {"S": "?"}}
        if expires is not None:
            found["expires"] = expires
        return found

    five_years_ago = int(now) - 5 * 365 * 86_400
    return {
        "expired": item("archived-expired", expires={"N": str(int(now) - 3600)}),
        "expired, a fraction": item("fraction-expired", expires={"N": f"{int(now) - 7200}.5"}),
        "future": item("expires-later", expires={"N": str(int(now) + 86_400)}),
        "none": item("no-expiry"),
        "not a number": item("expiry-as-text", expires={"S": str(int(now) - 3600)}),
        "zero": item("expiry-zero", expires={"N": "0"}),
        "negative": item("expiry-negative", expires={"N": "-5"}),
        "1.5": item("expiry-one-and-a-half", expires={"N": "1.5"}),
        "over five years ago": item(
            "expiry-too-old", expires={"N": str(five_years_ago - 86_400 * 3)}
        ),
    }


KEPT_BECAUSE = "expired at the source (expires in the past five years), ttl_deletes: skip"
NOT_EXPIRED = [
    "expires-later",
    "expiry-as-text",
    "expiry-negative",
    "expiry-one-and-a-half",
    "expiry-too-old",
    "expiry-zero",
    "no-expiry",
]


def test_under_ttl_deletes_skip_an_item_the_sources_ttl_deleted_is_kept_not_extra(
    job: Job,
) -> None:
    """The source's TTL deleted the item and the job skipped that delete, on purpose:
    verify counts it apart, its exit status ignores it and --repair leaves it. An extra
    item whose TTL attribute is not a time DynamoDB's TTL acts on (0, a negative number,
    one more than five years in the past, the future, not a number) is still a
    difference: the source's TTL never deleted it."""
    job.path.write_text(
        job.path.read_text().replace(LWW, "conflict: {policy: overwrite}") + "ttl_deletes: skip\n"
    )
    job.source.update_time_to_live(
        TableName=job.source_table,
        TimeToLiveSpecification={"Enabled": True, "AttributeName": "expires"},
    )
    (eu, eu_table), _ = job.destination_clients()
    at_eu = ttl_items(time.time())
    for item in at_eu.values():
        eu.put_item(TableName=eu_table, Item=item)
    eu_label = f"eu-west-1/{job.name}-eu"

    found = cli(job, "--recheck-pause", "0.1")

    assert found.returncode == 1, found.stderr
    lines = found.stdout.splitlines()
    assert f"{eu_label}: scanned 9 items, 7 differences; 2 kept: {KEPT_BECAUSE}" in lines
    for pk in NOT_EXPIRED:
        assert f"  extra     pk=S:{pk} sk=N:1" in lines
    assert "archived-expired" not in found.stdout
    assert "fraction-expired" not in found.stdout

    repaired = cli(job, "--repair", "--json", "--recheck-pause", "0.1")

    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    report = json.loads(repaired.stdout)
    eu_report = report["destinations"][eu_label]
    assert (eu_report["equal"], eu_report["kept"]) == (True, 2)
    assert sorted(d["key"]["pk"]["S"] for d in eu_report["differences"]) == NOT_EXPIRED
    assert {d["repair"] for d in eu_report["differences"]} == {"repaired"}
    assert report["kept_because"] == KEPT_BECAUSE
    left = eu.scan(TableName=eu_table, ConsistentRead=True)["Items"]
    assert sorted(left, key=lambda item: item["pk"]["S"]) == [
        at_eu["expired"],
        at_eu["expired, a fraction"],
    ]

    again = cli(job, "--recheck-pause", "0.1")

    assert again.returncode == 0, again.stdout + again.stderr
    assert (
        f"{eu_label}: scanned 2 items, equal; 2 kept: {KEPT_BECAUSE}" in again.stdout.splitlines()
    )


@pytest.mark.parametrize("setting", ["ttl_deletes: replicate", "ttl off at the source"])
def test_an_expired_item_only_at_a_destination_is_extra_unless_the_job_skips_ttl_deletes(
    job: Job, setting: str
) -> None:
    if setting == "ttl_deletes: replicate":
        job.path.write_text(job.path.read_text() + "ttl_deletes: replicate\n")
        job.source.update_time_to_live(
            TableName=job.source_table,
            TimeToLiveSpecification={"Enabled": True, "AttributeName": "expires"},
        )
    else:
        job.path.write_text(job.path.read_text() + "ttl_deletes: skip\n")
    (eu, eu_table), _ = job.destination_clients()
    eu.put_item(TableName=eu_table, Item=ttl_items(time.time())["expired"])

    report = verify(job)

    assert [(f.kind, f.keys["pk"]["S"]) for f in report.findings] == [("extra", "archived-expired")]
    assert (report.kept, report.exit_code) == ({}, 1)
    assert "kept" not in report.text()


def test_keys_that_hold_blanks_or_control_characters_are_shown_quoted_on_one_line(
    job: Job,
) -> None:
    (eu, eu_table), _ = job.destination_clients()
    for pk in ("line\nbreak", " ", "tab\tand\x00nul", "plain"):
        eu.put_item(TableName=eu_table, Item={"pk": {"S": pk}, "sk": {"N": "1"}})

    found = cli(job, "--recheck", "1")

    assert found.returncode == 1, found.stderr
    lines = found.stdout.splitlines()
    mine = lines[lines.index(f"eu-west-1/{job.name}-eu: scanned 4 items, 4 differences") + 1 :]
    assert mine[:4] == [
        '  extra     pk=S:" " sk=N:1',
        '  extra     pk=S:"line\\nbreak" sk=N:1',
        '  extra     pk=S:"tab\\tand\\u0000nul" sk=N:1',
        "  extra     pk=S:plain sk=N:1",
    ]
    assert len(lines) == 7  # the header, two destinations' lines, four findings


def test_attribute_names_and_ranking_values_in_the_text_report_cannot_add_a_line(
    job: Job,
) -> None:
    """Names and values are data, as keys are: each is shown as one token, quoted when
    it is not a plain one, so every entry of the report is one line with one reading."""
    items = replicated(job, 2)
    eu, eu_table = job.destination_clients()[0]
    eu.put_item(TableName=eu_table, Item={**items[0], "a, b": {"S": "1"}, "evil\nname": {"S": "2"}})
    forged = "2027\n  missing   pk=S:fake sk=N:1"
    for ddb, table in [(job.source, job.source_table), job.destination_clients()[1]]:
        ddb.put_item(TableName=table, Item={**items[1], "updated_at": {"S": forged}})
    eu.put_item(TableName=eu_table, Item={**items[1], "updated_at": {"S": "9999"}})

    as_json = cli(job, "--json", "--recheck", "1")
    found = cli(job, "--recheck", "1", "--repair")

    differences = json.loads(as_json.stdout)["destinations"][f"eu-west-1/{job.name}-eu"]
    assert [d["attributes"] for d in differences["differences"]] == [
        ["a, b", "evil\nname"],
        ["updated_at"],
    ]
    assert found.returncode == 1, found.stderr
    # The counts say what was repaired, beside what is left: "1 difference" over two
    # lines read as what was found.
    assert found.stdout.splitlines()[0].startswith(
        f"verify us-east-1/{job.source_table}: 1 difference left (1 repaired; scanned 2 "
    )
    assert found.stdout.splitlines()[1:] == [
        f"eu-west-1/{job.name}-eu: scanned 2 items, 1 difference left (1 repaired)",
        '  different pk=S:c0 sk=N:0  attributes: "a, b", "evil\\nname"  -> repaired',
        "  different pk=S:c1 sk=N:1  attributes: updated_at  -> refused: last_writer_wins: "
        "the destination's item (updated_at=9999) ranks above the put's image "
        '(updated_at="2027\\n  missing   pk=S:fake sk=N:1")',
        f"ap-southeast-2/{job.name}-ap: scanned 2 items, equal",
    ]


def test_repair_goes_through_the_policy_and_reports_what_it_refused(job: Job) -> None:
    items = replicated(job, 6)
    (eu, eu_table), _ = job.destination_clients()
    newer = {**items[0], "updated_at": {"N": "99999999999999"}, "name": {"S": "newer"}}
    eu.put_item(TableName=eu_table, Item=newer)

    report = verify(job, repair=True)

    assert report.exit_code == 1
    (finding,) = report.findings
    assert (finding.kind, finding.attributes, finding.repair) == (
        "different",
        ["name", "updated_at"],
        "refused",
    )
    assert finding.detail is not None
    assert "ranks above" in finding.detail
    assert eu.get_item(TableName=eu_table, Key=key(items[0]), ConsistentRead=True)["Item"] == newer


def test_repair_run_again_stores_no_second_letter_for_an_item_that_cannot_be_written(
    job: Job,
) -> None:
    """A source item whose ordering attribute is not a number cannot be written under
    ``last_writer_wins``: each repair dead-letters it. A repair run again (a scheduled
    ``verify --repair``) stored another letter per destination each time, every copy
    alike but for the time its record was made, and each redrive then failed them all."""
    items = replicated(job, 2)
    unwritable = {**items[0], "pk": {"S": "bad"}, "updated_at": {"BOOL": True}}
    job.source.put_item(TableName=job.source_table, Item=unwritable)

    for _ in range(3):
        result = cli(job, "--repair", "--recheck", "1", "--recheck-pause", "0.1")
        assert result.returncode == 1, result.stdout + result.stderr
        assert result.stdout.count("-> dead_lettered") == 2, result.stdout
    letters = [json.loads(line) for line in job.dead_letters.read_text().splitlines()]
    assert sorted(letter["destination"] for letter in letters) == sorted(
        f"{region}/{table}" for region, table in job.destinations
    ), letters
    assert {letter["shard_id"] for letter in letters} == {"repair"}


def test_repair_under_overwrite_replaces_a_stale_item_and_deletes_an_extra_one(job: Job) -> None:
    job.path.write_text(job.path.read_text().replace(LWW, "conflict: {policy: overwrite}"))
    items = replicated(job, 6)
    (eu, eu_table), _ = job.destination_clients()
    stale = {**items[0], "name": {"S": "stale"}}
    eu.put_item(TableName=eu_table, Item=stale)
    extra = {"pk": {"S": "zz"}, "sk": {"N": "1"}}
    eu.put_item(TableName=eu_table, Item=extra)

    report = verify(job, repair=True)

    assert report.exit_code == 0
    assert sorted((f.kind, f.repair) for f in report.findings) == [
        ("different", "repaired"),
        ("extra", "repaired"),
    ]
    assert job.converged()


def test_a_difference_that_replication_closes_meanwhile_is_not_reported(job: Job) -> None:
    items = replicated(job, 10)
    (eu, eu_table), _ = job.destination_clients()
    eu.delete_item(TableName=eu_table, Key=key(items[5]))

    def replicator_catches_up() -> None:
        eu.put_item(TableName=eu_table, Item=items[5])

    report = verify(job, VerifyHooks(scanned=replicator_catches_up))

    assert report.rechecked == 1
    assert report.findings == []
    assert report.exit_code == 0


def test_sample_checks_n_items_of_each_table(job: Job) -> None:
    replicated(job, 60, to=(0,))
    (_, _), (ap, ap_table) = job.destination_clients()
    for index in range(60):  # the second destination holds only items the source lacks
        ap.put_item(TableName=ap_table, Item={"pk": {"S": f"other{index}"}, "sk": {"N": "0"}})

    report = verify(job, sample=10, recheck=1)

    assert report.sampled
    assert report.source_items == 10
    eu_label, ap_label = report.destinations
    assert report.destination_items == {eu_label: 10, ap_label: 10}
    assert not [f for f in report.findings if f.destination == eu_label]
    kinds = sorted(f.kind for f in report.findings if f.destination == ap_label)
    assert kinds == ["extra"] * 10 + ["missing"] * 10
    assert "sampled 10 source items" in report.text()


def test_one_item_is_counted_as_one_item(job: Job) -> None:
    replicated(job, 1, to=(0,))
    result = cli(job)
    assert result.returncode == 1, result.stderr  # missing at the second destination
    assert "scanned 1 source item;" in result.stdout, result.stdout
    assert ": scanned 1 item, equal" in result.stdout, result.stdout
    assert ": scanned 0 items, 1 difference" in result.stdout, result.stdout


def test_exit_codes_for_a_bad_job_file_and_a_missing_table(job: Job, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("source: {region: nowhere, table: t}\n")
    invalid = in_process("verify", "--config", str(bad))
    assert invalid.returncode == 2
    assert "region" in invalid.stderr

    (eu, eu_table), _ = job.destination_clients()
    eu.delete_table(TableName=eu_table)
    missing = cli(job)
    assert missing.returncode == 3
    # The table named once, then where it was looked for.
    expected = f"table eu-west-1/{eu_table}: not found at {job.endpoint} (eu-west-1) ("
    assert expected in missing.stderr, missing.stderr


@pytest.mark.parametrize(
    ("label", "named"),
    [
        ("denied", "destination denied (table ap-southeast-2/{table})"),
        (
            "backup ap-southeast-2/{table}",
            "destination backup ap-southeast-2/{table} (table ap-southeast-2/{table})",
        ),
        ("ap-southeast-2/{table}", "table ap-southeast-2/{table}"),
        ("source ap-southeast-2/{table}", "table source ap-southeast-2/{table}"),
    ],
)
def test_a_missing_table_of_a_named_destination_is_named_by_its_name_and_table(
    moto_endpoint: str, unique: Any, label: str, named: str
) -> None:
    """A destination's ``name`` is no table: the commands said "table denied" of a
    destination named ``denied`` whose table is another, as ``run`` does not."""
    from replicator.exceptions import EnvironmentProblem
    from replicator.tools.tables import TableRef, describe
    from tests.support.aws import client

    table = unique("gone")
    ref = TableRef(
        label=label.format(table=table),
        region="ap-southeast-2",
        table=table,
        endpoint_url=moto_endpoint,
        client=client("dynamodb", "ap-southeast-2", moto_endpoint),
    )
    with pytest.raises(EnvironmentProblem) as raised:
        describe(ref)
    assert str(raised.value).startswith(f"{named.format(table=table)}: not found at "), str(
        raised.value
    )


BIG_1 = "1" + "0" * 36 + "1"  # 38 significant digits
BIG_2 = "1" + "0" * 36 + "2"  # the same but for the 38th digit


def test_compare_tells_apart_numbers_that_differ_in_the_38th_digit() -> None:
    first = {"pk": {"S": "a"}, "sk": {"N": BIG_1}, "amount": {"N": BIG_1}}
    second = {"pk": {"S": "a"}, "sk": {"N": BIG_2}, "amount": {"N": BIG_1}}
    changed = {**first, "amount": {"N": BIG_2}}
    differences = compare([first, second], [changed], ["pk", "sk"])
    assert sorted((d.kind, d.key, d.attributes) for d in differences) == [
        ("different", (("pk", "S", "a"), ("sk", "N", BIG_1)), ["amount"]),
        ("missing", (("pk", "S", "a"), ("sk", "N", BIG_2)), []),
    ]
    # equal numbers in other spellings are still equal
    respelt = {**first, "sk": {"N": BIG_1 + ".000"}, "amount": {"N": "1.0" + "0" * 35 + "1E37"}}
    assert compare([first], [respelt], ["pk", "sk"]) == []


def test_verify_finds_a_missing_38_digit_key_and_a_38th_digit_difference(job: Job) -> None:
    items = [
        {"pk": {"S": "big"}, "sk": {"N": number}, "amount": {"N": BIG_1}}
        for number in (BIG_1, BIG_2)
    ]
    destinations = job.destination_clients()
    for item in items:
        job.source.put_item(TableName=job.source_table, Item=item)
        for ddb, table in destinations:
            ddb.put_item(TableName=table, Item=item)
    (eu, eu_table), (ap, ap_table) = destinations
    eu.delete_item(TableName=eu_table, Key=key(items[1]))
    ap.put_item(TableName=ap_table, Item={**items[0], "amount": {"N": BIG_2}})

    report = verify(job, recheck=1)

    eu_label, ap_label = report.destinations
    assert report.source_items == 2
    found = sorted(
        (f.destination, f.kind, f.keys["sk"]["N"], f.attributes) for f in report.findings
    )
    assert found == [
        (ap_label, "different", BIG_1, ["amount"]),
        (eu_label, "missing", BIG_2, []),
    ]
    assert report.exit_code == 1


def test_with_tombstones_an_item_deleted_at_the_destination_is_deleted_at_the_source(
    job: Job,
) -> None:
    """Active-active with tombstones: an item absent at a destination because a delete
    there ranks above the source's copy is not copied back (that would resurrect it): it
    is reported as ``deleted`` and repaired by deleting it at the source. An item the
    source deleted (a tombstone there outranks the destination's copy) stays ``extra``,
    the delete named, and is deleted at the destination."""
    job.extra = (
        "loop_prevention: {origin_attribute: origin_region}\nactive_active: {tombstones: true}\n"
    )
    job.write()
    resolved = load_job(job.path)
    prepare_tombstones(resolved)
    items = replicated(job, 6)
    rule = rule_for(resolved.job.conflict, "origin_region")
    assert isinstance(rule, OrderedRule)

    def delete_with_tombstone(ddb: Any, table: str, item: Item, region: str) -> None:
        ddb.delete_item(TableName=table, Key=key(item))
        tombstone = tombstone_of(
            item,
            key(item),
            rule.fields,
            deleted_in=region,
            written_by=region,
            deleted_at_ms=1,
            expires_at=int(time.time()) + 3600,
        )
        TombstoneTable(ddb, f"{table}-tombstones", region, 3600).record(tombstone)

    for ddb, table in job.destination_clients():  # deleted in both other regions
        delete_with_tombstone(ddb, table, items[0], "eu-west-1")
    delete_with_tombstone(job.source, job.source_table, items[1], "us-east-1")

    report = verify(job)
    kinds = sorted((f.kind, f.keys["sk"]["N"], f.detail or "") for f in report.findings)
    assert [(kind, sk) for kind, sk, _ in kinds] == [
        ("deleted", "0"),
        ("deleted", "0"),
        ("extra", "1"),
        ("extra", "1"),
    ]
    assert all("a delete in us-east-1" in detail for kind, _, detail in kinds if kind == "extra")
    assert "  deleted   pk=S:c0 sk=N:0" in report.text().splitlines()
    # The report an operator reads before repairing names the delete too, as text
    # and in --json, not only a --repair's outcome does.
    extra_detail = next(detail for kind, _, detail in kinds if kind == "extra")
    as_text = cli(job, "--recheck", "1", "--recheck-pause", "0.1")
    assert as_text.returncode == 1, as_text.stderr
    assert f"  extra     pk=S:c1 sk=N:1  ({extra_detail})" in as_text.stdout.splitlines()
    as_json = cli(job, "--json", "--recheck", "1", "--recheck-pause", "0.1")
    differences = [
        difference
        for destination in json.loads(as_json.stdout)["destinations"].values()
        for difference in destination["differences"]
        if difference["kind"] == "extra"
    ]
    assert len(differences) == 2
    assert all(difference["detail"] == extra_detail for difference in differences)
    assert all("repair" not in difference for difference in differences)

    repaired = verify(job, repair=True)
    assert repaired.equal, repaired.text()
    gone = key(items[0])
    assert "Item" not in job.source.get_item(TableName=job.source_table, Key=gone)
    for ddb, table in job.destination_clients():
        assert "Item" not in ddb.get_item(TableName=table, Key=gone)
        assert "Item" not in ddb.get_item(TableName=table, Key=key(items[1]))
    assert verify(job).equal


@pytest.mark.parametrize("tombstones", [False, True])
def test_an_extra_item_another_region_wrote_is_left_by_repair_in_an_active_active_job(
    job: Job, tombstones: bool
) -> None:
    """Active-active: an item written at the destination that has not reached the source
    yet (the reverse job lags or is stopped) looks ``extra``. A repair that deleted it
    had that delete replicated back as the region's own: the write was gone from both
    regions for good, reported as "equal after repair". An extra item stamped by another
    region, or not stamped at all, is left and reported (exit 1); one the source stamped
    (written there, its delete lost) is deleted as before."""
    job.extra = "loop_prevention: {origin_attribute: origin_region}\n" + (
        "active_active: {tombstones: true}\n" if tombstones else ""
    )
    job.write()
    if tombstones:
        prepare_tombstones(load_job(job.path))
    replicated(job, 3)
    rng = random.Random(5)
    (eu, eu_table), _ = job.destination_clients()
    theirs = demo_item(rng, "theirs", 1, "eu-west-1")
    unstamped = {name: value for name, value in demo_item(rng, "bare", 2, "eu-west-1").items()}
    del unstamped["origin_region"]
    ours = demo_item(rng, "ours", 3, "us-east-1")
    deleted_here = demo_item(rng, "deleted", 4, "eu-west-1")
    for made in (theirs, unstamped, ours, deleted_here):
        eu.put_item(TableName=eu_table, Item=made)
    if tombstones:  # a delete at the source that ranks above eu's image decides
        rule = rule_for(load_job(job.path).job.conflict, "origin_region")
        assert isinstance(rule, OrderedRule)
        later = {**deleted_here, "updated_at": {"N": "99999999999999"}}
        row = tombstone_of(
            later,
            key(later),
            rule.fields,
            deleted_in="us-east-1",
            written_by="us-east-1",
            deleted_at_ms=1,
            expires_at=int(time.time()) + 3600,
        )
        TombstoneTable(job.source, f"{job.source_table}-tombstones", "us-east-1", 3600).record(row)

    plain = cli(job, "--recheck", "1", "--recheck-pause", "0.1")
    assert plain.returncode == 1, plain.stderr
    assert (
        "  extra     pk=S:theirs sk=N:1  (written with origin_region=eu-west-1, not us-east-1"
        in (plain.stdout)
    ), plain.stdout

    repaired = cli(job, "--repair", "--recheck", "1", "--recheck-pause", "0.1")
    assert repaired.returncode == 1, repaired.stdout + repaired.stderr
    lines = repaired.stdout.splitlines()
    assert any(
        line.startswith(
            "  extra     pk=S:theirs sk=N:1  -> refused: written with origin_region=eu-west-1, "
            "not us-east-1: another region's write the source has not received yet (its job "
            "lags, is stopped, dead-lettered it or does not list us-east-1 among its "
            "destinations)"
        )
        and "--repair leaves it" in line
        and line.endswith(
            "--delete-extra-written-elsewhere deletes it), unless that region's job does not "
            "list us-east-1 among its destinations (its log warns 'no destination of this job "
            "is in'): add it there instead, and repair from that job"
        )
        for line in lines
    ), repaired.stdout
    assert any(
        line.startswith(
            "  extra     pk=S:bare sk=N:2  -> refused: written with origin_region=(absent), "
            "unstamped, so either another region's write the source has not received yet "
            "or one the source wrote and deleted whose delete never arrived;"
        )
        for line in lines
    ), repaired.stdout
    assert "  extra     pk=S:ours sk=N:3  -> repaired" in lines, repaired.stdout
    if tombstones:
        assert any(
            line.startswith("  extra     pk=S:deleted sk=N:4  -> repaired: a delete in us-east-1")
            for line in lines
        ), repaired.stdout
        assert "Item" not in eu.get_item(TableName=eu_table, Key=key(deleted_here))
    else:
        assert "  extra     pk=S:deleted sk=N:4  -> refused: written with" in repaired.stdout
    as_json = cli(job, "--json", "--recheck", "1", "--recheck-pause", "0.1")
    left = {
        difference["key"]["pk"]["S"]
        for difference in json.loads(as_json.stdout)["destinations"][f"eu-west-1/{eu_table}"][
            "differences"
        ]
        if difference.get("written_elsewhere")
    }
    assert left == {"theirs", "bare"} | (set() if tombstones else {"deleted"}), as_json.stdout
    assert eu.get_item(TableName=eu_table, Key=key(theirs), ConsistentRead=True)["Item"] == theirs
    assert eu.get_item(TableName=eu_table, Key=key(unstamped), ConsistentRead=True)["Item"] == (
        unstamped
    )
    assert "Item" not in eu.get_item(TableName=eu_table, Key=key(ours), ConsistentRead=True)

    # Once the write has reached the source, they are equal; an item still extra then
    # was deleted at the source, and the operator deletes it on purpose.
    alone = cli(job, "--delete-extra-written-elsewhere")
    assert alone.returncode == 2 and "only with --repair" in alone.stderr, alone.stderr
    job.source.put_item(TableName=job.source_table, Item=theirs)
    _, (ap, ap_table) = job.destination_clients()
    ap.put_item(TableName=ap_table, Item=theirs)
    forced = cli(
        job, "--repair", "--delete-extra-written-elsewhere", "--recheck", "1",
        "--recheck-pause", "0.1",
    )  # fmt: skip
    assert forced.returncode == 0, forced.stdout + forced.stderr
    assert (
        "  extra     pk=S:bare sk=N:2  -> repaired: written with origin_region=(absent) "
        "(--delete-extra-written-elsewhere)"
    ) in forced.stdout.splitlines(), forced.stdout
    assert "Item" not in eu.get_item(TableName=eu_table, Key=key(unstamped), ConsistentRead=True)
    assert eu.get_item(TableName=eu_table, Key=key(theirs), ConsistentRead=True)["Item"] == theirs
    assert cli(job, "--recheck", "1", "--recheck-pause", "0.1").returncode == 0


def test_a_repaired_or_left_item_that_changed_kind_since_says_so(
    job: Job, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a repair's outcome says of an item is of the item it read: one that changed
    kind before the reading that confirms it (written meanwhile at the source) read "still
    missing" for an item reported ``extra``, or kept a detail of the item first read."""
    job.extra = "loop_prevention: {origin_attribute: origin_region}\n"
    job.write()
    replicated(job, 2)
    rng = random.Random(7)
    (eu, eu_table), _ = job.destination_clients()
    theirs = demo_item(rng, "theirs", 1, "eu-west-1")  # left: another region's write
    eu.put_item(TableName=eu_table, Item=theirs)
    gone = demo_item(rng, "gone", 2, "us-east-1")  # missing at ap: copied there
    job.source.put_item(TableName=job.source_table, Item=gone)
    eu.put_item(TableName=eu_table, Item=gone)
    confirm = Verify._confirm

    def meanwhile(self: Verify, findings: list[Finding], key_names: list[str]) -> None:
        job.source.put_item(TableName=job.source_table, Item={**theirs, "name": {"S": "new"}})
        job.source.delete_item(TableName=job.source_table, Key=key(gone))
        confirm(self, findings, key_names)

    monkeypatch.setattr(Verify, "_confirm", meanwhile)
    report = verify(job, repair=True)
    lines = report.text().splitlines()
    assert any(
        line.startswith("  extra     pk=S:theirs sk=N:1  -> refused: written with")
        and line.endswith("; now different when read again")
        for line in lines
    ), lines
    assert "  missing   pk=S:gone sk=N:2  -> unresolved: now extra when read again" in lines, lines


def test_repair_stuck_on_a_throttled_destination_stops_on_the_second_signal(
    moto_endpoint: str, unique: Any, tmp_path: Path
) -> None:
    name = unique("verify")
    job = Job(moto_endpoint, name, tmp_path, destinations=[("eu-west-1", f"{name}-eu")])
    replicated(job, 3, to=())
    proxy = FaultProxy(moto_endpoint).start()
    try:
        # Every repair write is throttled, and retried without end until interrupted.
        proxy.set(Mode(Fault.THROTTLE, operations=frozenset({"PutItem"})))
        job.path.write_text(
            job.path.read_text().replace(
                f"table: {job.name}-eu, endpoint_url: '{moto_endpoint}'",
                f"table: {job.name}-eu, endpoint_url: '{proxy.url}'",
            )
        )
        process = subprocess.Popen(
            [
                *(sys.executable, "-m", "replicator", "verify", "--config", str(job.path)),
                *("--repair", "--recheck", "1", "--recheck-pause", "0"),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        wait_until(lambda: proxy.counts("PutItem")["throttled"] >= 6, 30, "repair writes retried")
        process.send_signal(signal.SIGTERM)
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=15)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
        proxy.stop()
    assert process.returncode == 1, err
    assert "verify --repair interrupted: 0 of 3 repair writes made" in err
    assert out == ""


@pytest.mark.parametrize("command", ["backfill", "verify"])
@pytest.mark.parametrize("rate", ["inf", "nan", "1e-300", "0.009"])
def test_a_read_rate_that_is_not_a_usable_number_is_a_usage_error(
    command: str, rate: str, tmp_path: Path
) -> None:
    from click.testing import CliRunner

    from replicator.cli import cli as main

    result = CliRunner().invoke(
        main, [command, "--config", str(tmp_path / "job.yaml"), "--read-rate", rate]
    )
    assert result.exit_code == 2, result.output
    assert (
        f"Invalid value for '--read-rate': {float(rate)} is not 0 (unlimited) or a finite "
        "number of items per second of at least 0.01"
    ) in result.output


@pytest.mark.parametrize(
    ("pause", "why"),
    [
        ("inf", "inf is not in the range 0<=x<=3600.0."),
        ("1e10", "10000000000.0 is not in the range 0<=x<=3600.0."),
        ("nan", "nan is not a finite number"),
    ],
)
def test_a_recheck_pause_that_no_wait_can_take_is_a_usage_error(
    job: Job, pause: str, why: str
) -> None:
    items = replicated(job, 3)
    eu, eu_table = job.destination_clients()[0]
    eu.delete_item(TableName=eu_table, Key=key(items[0]))  # a difference: re-checks pause

    found = cli(job, "--recheck-pause", pause)

    assert found.returncode == 2, found.stderr
    assert found.stdout == ""
    assert found.stderr.splitlines()[-1] == f"Error: Invalid value for '--recheck-pause': {why}"


def test_an_error_page_in_place_of_an_aws_answer_is_one_short_line(job: Job) -> None:
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from threading import Thread

    from botocore.exceptions import ClientError

    from replicator.writers.refusals import describe_refusal

    page = "<!doctype html>\n<html lang=en>\n<title>404 Not Found</title>\n<p>" + "x" * 500
    error = ClientError({"Error": {"Code": "404", "Message": page}}, "PutItem")
    assert describe_refusal(error) == "404: 404 Not Found " + "x" * 185 + "\u2026"

    class NotAws(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = page.encode()
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            self.send_response(404)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), NotAws)
    Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        job.path.write_text(job.path.read_text().replace(job.endpoint, url, 1))
        result = cli(job)
    finally:
        server.shutdown()
    assert result.returncode == 3, result.stderr
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"replicator: table source us-east-1/{job.source_table}: 404: 404 ")
    assert url in line and "<" not in line and len(line) < 400


def test_sample_logs_its_progress(job: Job) -> None:
    from structlog.testing import capture_logs

    replicated(job, 30)
    with capture_logs() as logs:
        report = verify(job, sample=5)

    assert report.equal
    lines = [line for line in logs if line["event"] == "verify sample"]
    assert lines, logs
    assert (lines[-1]["items"], lines[-1]["of_about"]) == (15, 15)  # 5 of each of 3 tables


def test_a_scans_progress_counts_every_tables_items_and_says_how_many_tables(job: Job) -> None:
    """The line said ``items: 90`` beside a summary of 30 source items scanned."""
    from structlog.testing import capture_logs

    replicated(job, 30)
    with capture_logs() as logs:
        report = verify(job)

    assert report.equal
    lines = [line for line in logs if line["event"] == "verify scan"]
    assert lines, logs
    assert (lines[-1]["items"], lines[-1]["tables"]) == (30 * 3, 3)  # the last, at the end


def test_an_aws_error_names_the_jobs_endpoints(job: Job) -> None:
    from botocore.exceptions import ClientError

    from replicator.exceptions import EnvironmentProblem
    from replicator.tools.commands import aws_failures

    error = ClientError({"Error": {"Code": "InternalServerError", "Message": "x"}}, "Scan")
    with pytest.raises(EnvironmentProblem) as raised, aws_failures("verify t", load_job(job.path)):
        raise error
    assert str(raised.value) == (
        f"verify t: InternalServerError: x (at {job.endpoint} (us-east-1) or {job.endpoint} "
        f"(eu-west-1) or {job.endpoint} (ap-southeast-2)), still after the SDK's retries; it "
        "is throttled or failing for now: try again once it answers (a job already running "
        "retries such answers without limit)"
    )


@pytest.mark.parametrize("deleted", ["destination", "source"])
def test_a_table_deleted_while_verify_reads_it_is_named(job: Job, deleted: str) -> None:
    """A table deleted after the scans, before the re-check: the error names that table
    and its endpoint, as backfill names its destination, where it said "not found at"
    every endpoint of the job (DynamoDB's message names no table)."""
    from replicator.exceptions import EnvironmentProblem
    from replicator.tools.commands import aws_failures

    items = replicated(job, 5)
    (eu, eu_table), _ = job.destination_clients()
    eu.delete_item(TableName=eu_table, Key=key(items[0]))  # a difference to re-check
    if deleted == "destination":
        ddb, table, label, region = eu, eu_table, f"eu-west-1/{eu_table}", "eu-west-1"
    else:
        ddb, table = job.source, job.source_table
        label, region = f"source us-east-1/{table}", "us-east-1"

    hooks = VerifyHooks(scanned=lambda: ddb.delete_table(TableName=table))
    with pytest.raises(EnvironmentProblem) as raised, aws_failures("verify t", load_job(job.path)):
        verify(job, hooks)

    message = str(raised.value)
    assert message.startswith(f"table {label}: not found at {job.endpoint} ({region}) ("), message
    assert " or " not in message


def _fill(ddb: Any, table: str, items: list[Item]) -> None:
    for start in range(0, len(items), 25):
        unprocessed = {table: [{"PutRequest": {"Item": i}} for i in items[start : start + 25]]}
        while unprocessed:
            unprocessed = ddb.batch_write_item(RequestItems=unprocessed)["UnprocessedItems"]


def test_sample_of_a_table_with_few_partition_keys_reaches_n_items_and_finds_differences(
    job: Job,
) -> None:
    """4 partition keys of 250 items: a scan segment holds all of a partition key or none
    of it, so reading the first keys of segments saw only the lowest sort keys."""
    source = [
        {"pk": {"S": f"tenant{t}"}, "sk": {"N": str(n)}, "v": {"S": "a"}}
        for t in range(4)
        for n in range(250)
    ]
    _fill(job.source, job.source_table, source)
    changed = [
        {**i, "v": {"S": "b"}} if int(i["sk"]["N"]) >= 10 and int(i["sk"]["N"]) % 2 == 0 else i
        for i in source
    ]
    for ddb, table in job.destination_clients():
        _fill(ddb, table, changed)

    result = cli(job, "--sample", "200", "--recheck", "1")

    assert result.returncode == 1, result.stdout + result.stderr
    first = result.stdout.splitlines()[0]
    assert "sampled 200 source items of 1000 read" in first, result.stdout
    assert "different" in result.stdout


def test_a_sample_larger_than_the_table_checks_every_item_and_says_so(job: Job) -> None:
    replicated(job, 30)

    report = verify(job, sample=50, recheck=1)

    assert report.equal and report.source_items == 30
    text = report.text()
    assert "sampled 30 source items of 30 read" in text
    assert "the table holds 30 items, fewer than --sample 50: all of them were checked" in text


def test_a_reservoir_draws_every_key_alike_and_merges_parts_into_one_sample() -> None:
    from replicator.tools.verify import Reservoir

    counts = dict.fromkeys(range(20), 0)
    for _ in range(2000):
        parts = [Reservoir(5) for _ in range(3)]
        for number in range(20):  # parts of very different sizes: 2, 3 and 15 keys
            parts[0 if number < 2 else 1 if number < 5 else 2].offer(((str(number), "N", ""),))
        whole = Reservoir(5)
        for part in parts:
            whole.merge(part)
        assert whole.seen == 20
        keys = whole.keys()
        assert len(keys) == 5 and len(set(keys)) == 5
        for key in keys:
            counts[int(key[0][0])] += 1
    # each key is drawn with probability 5/20: 500 times in 2000, give or take 4 sigma
    assert all(400 < count < 600 for count in counts.values()), counts


def test_a_large_tables_sample_reads_whole_segments_drawn_at_random_and_says_so(
    job: Job, monkeypatch: pytest.MonkeyPatch
) -> None:
    from replicator.tools import verify as verify_module

    monkeypatch.setattr(verify_module, "_SAMPLE_WHOLE_TABLE_ITEMS", 0)
    monkeypatch.setattr(verify_module, "_ITEMS_PER_SAMPLE_SEGMENT", 5)
    replicated(job, 60)

    report = verify(job, sample=4, recheck=1, threads=2)

    assert report.equal and report.source_items == 4
    source = report.samples["source"]
    assert not source.whole_table and source.read >= 16
    assert "scan segments drawn at random" in report.text()


def ap_through(job: Job, proxy: FaultProxy, writer: str) -> None:
    """Point the job's ap destination at ``proxy``, with the ``writer`` settings given."""
    text = job.path.read_text().replace(
        f"table: {job.name}-ap, endpoint_url: '{job.endpoint}'",
        f"table: {job.name}-ap, endpoint_url: '{proxy.url}'",
    )
    job.path.write_text(text.replace("writer: {max_in_flight: 16}", f"writer: {writer}"))


def test_repair_to_a_destination_that_refuses_every_write_stops_at_once(job: Job) -> None:
    """The first repair write to reach the refusal limit ends the command (exit 3): the
    writes queued behind it are given up, not each retried through its own streak."""
    replicated(job, 300, to=(0,))  # 300 items missing at the second destination
    proxy = FaultProxy(job.endpoint).start()
    try:
        proxy.set(Mode(Fault.DENY, operations=frozenset({"PutItem"})))
        ap_through(
            job,
            proxy,
            "{max_in_flight: 16, access_denied_limit: 5, "
            "retry: {base_delay_ms: 1000, max_delay_ms: 1000}}",
        )
        result = cli(job, "--repair", "--recheck", "1", "--recheck-pause", "0")
    finally:
        proxy.stop()
    assert result.returncode == 3, result.stdout + result.stderr
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("replicator:")]
    assert f"destination ap-southeast-2/{job.name}-ap refused 5 writes in a row" in line, line
    assert result.stdout == ""
    # a few seconds for the first streaks; 300 streaks 8 at a time would take minutes
    assert proxy.counts("PutItem")["denied"] < 100, proxy.counts("PutItem")


def test_one_ctrl_c_stops_a_repair_whose_writes_a_destination_keeps_failing(job: Job) -> None:
    """ap answers every repair write with a 500, waited out as an outage: a first Ctrl-C
    waited for the writes in hand without end. They are given up after the grace, as a
    second Ctrl-C gives them up, and the command ends with no report."""
    replicated(job, 30, to=(0,))  # 30 items missing at the second destination
    proxy = FaultProxy(job.endpoint).start()
    try:
        proxy.set(Mode(Fault.SERVER_ERROR, operations=frozenset({"PutItem"})))
        ap_through(job, proxy, "{max_in_flight: 16}")
        options = VerifyOptions(repair=True, recheck=1, recheck_pause_s=0)
        with pytest.raises(OperatorError, match="verify --repair interrupted: 0 of 30"):
            interrupted_once(
                Verify(load_job(job.path), options),
                lambda: proxy.counts("PutItem")["server_error"] >= 3,
                60 + INTERRUPT_GRACE_S,
            )
    finally:
        proxy.stop()


def test_verify_of_many_more_segments_than_items_stops_at_one_ctrl_c(job: Job) -> None:
    """``--segments 1000000`` on a small table queued every segment of every table to
    the scan threads at once, each of them still reading its first page after a Ctrl-C:
    the command went on for hours and ignored Ctrl-C. No segment starts after it now."""
    replicated(job, 20)
    runner = Verify(load_job(job.path), VerifyOptions(segments=200_000, threads=2))
    with pytest.raises(OperatorError, match="verify interrupted before it finished"):
        interrupted_once(runner, lambda: bool(runner._rates), 60)


def test_repair_to_a_destination_that_stops_answering_ends_the_command(
    job: Job, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ap is scanned but answers none of the repair writes: the first write without an
    answer for the tools' bound ends the command with that error (exit 3 from the CLI),
    the writes queued behind it given up, instead of retrying for ever."""
    monkeypatch.setattr(snapshot, "UNANSWERED_FOR_S", 3.0)
    replicated(job, 30, to=(0,))  # 30 items missing at the second destination
    proxy = FaultProxy(job.endpoint).start()
    try:
        proxy.set(Mode(Fault.BLACK_HOLE, operations=frozenset({"PutItem"})))
        ap_through(job, proxy, "{max_in_flight: 16, connect_timeout_s: 1, read_timeout_s: 1}")
        options = VerifyOptions(repair=True, recheck=1, recheck_pause_s=0)
        with pytest.raises(DestinationUnavailable) as raised:
            run_within(Verify(load_job(job.path), options), 60)
    finally:
        proxy.stop()
    message = str(raised.value)
    assert f"destination ap-southeast-2/{job.name}-ap" in message, message
    assert "did not answer for 3 s" in message and proxy.url in message, message


def differing_under_a_resolver(
    job: Job, tmp_path: Path, module: str, code: str
) -> tuple[list[Item], Any, str]:
    """The job under ``module:decide`` (``code``, in ``tmp_path``), two items replicated
    and the first changed at the first destination: the items, that destination's client
    and table."""
    (tmp_path / f"{module}.py").write_text(code)
    job.path.write_text(
        job.path.read_text().replace(
            LWW, f"conflict: {{policy: custom, resolver: '{module}:decide'}}"
        )
    )
    items = replicated(job, 2)
    (eu, eu_table), _ = job.destination_clients()
    eu.put_item(TableName=eu_table, Item={**items[0], "v": {"S": "changed"}})
    return items, eu, eu_table


def test_repair_refused_by_a_custom_resolver_gives_the_resolvers_reason(
    job: Job, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The resolver keeps the destination's item: the repair is refused for that reason,
    not because the destination's item changed since it was read (it did not)."""
    differing_under_a_resolver(
        job,
        tmp_path,
        "keep_resolver",
        "def decide(incoming, existing):\n    return existing is None\n",
    )
    monkeypatch.syspath_prepend(str(tmp_path))

    with forget_modules(tmp_path):
        result = cli(job, "--repair", "--recheck", "1", "--recheck-pause", "0")

    assert result.returncode == 1, result.stdout + result.stderr
    (line,) = [line for line in result.stdout.splitlines() if line.startswith("  different")]
    assert line.endswith("-> refused: the custom resolver kept the destination's item"), line
    assert "changed since it was read" not in result.stdout


def _wide(pk: str, width: int, value: str) -> Item:
    item: Item = {"pk": {"S": pk}, "sk": {"N": "1"}, "updated_at": {"N": "5"}}
    item.update({f"a{index}": {"S": value} for index in range(width)})
    return item


@pytest.mark.parametrize("policy", [LWW, "conflict: {policy: overwrite}"])
@pytest.mark.parametrize("width", [300])  # past the 150 attributes one condition compares
def test_repair_of_items_too_wide_for_one_exact_condition(
    job: Job, width: int, policy: str
) -> None:
    """A destination item of ``width`` attributes that differs from the source's in every
    one (the same timestamp under last_writer_wins), and one the source lacks: the repair
    writes each only while the destination still holds what verify read, on a condition
    that compares as much of it as one 4 KB expression holds, and both are repaired."""
    job.path.write_text(job.path.read_text().replace(LWW, policy))
    job.source.put_item(TableName=job.source_table, Item=_wide("w", width, "second"))
    for ddb, table in job.destination_clients():
        ddb.put_item(TableName=table, Item=_wide("w", width, "first"))
    (eu, eu_table), _ = job.destination_clients()
    eu.put_item(TableName=eu_table, Item=_wide("x", width, "extra"))

    report = verify(job, repair=True)

    assert sorted((f.kind, f.repair, f.detail) for f in report.findings) == [
        ("different", "repaired", None),
        ("different", "repaired", None),
        ("extra", "repaired", None),
    ]
    assert report.exit_code == 0
    assert job.converged()
    assert not job.dead_letters.exists()


def test_differences_are_reported_with_their_keys_and_attributes_exactly(
    job: Job, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Keys and attribute names are data: one that looks like a URL with a user, or like
    the process's secret key, is printed as it is, to be pasted back or parsed."""
    secret = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    (eu, eu_table), _ = job.destination_clients()
    for pk in ("ssh://git@github.com/acme/app.git", secret):
        item = {"pk": {"S": pk}, "sk": {"N": "1"}, "sessionToken": {"S": "tok-abc"}}
        job.source.put_item(TableName=job.source_table, Item=item)
        eu.put_item(TableName=eu_table, Item=item | {"sessionToken": {"S": "tok-def"}})

    found = cli(job, "--json", "--recheck", "1")

    assert found.returncode == 1, found.stderr
    report = json.loads(found.stdout)
    differences = report["destinations"][f"eu-west-1/{job.name}-eu"]["differences"]
    assert sorted((d["key"]["pk"]["S"], d["attributes"]) for d in differences) == [
        ("ssh://git@github.com/acme/app.git", ["sessionToken"]),
        (secret, ["sessionToken"]),
    ]
    as_text = cli(job, "--recheck", "1")
    line = "  different pk=S:ssh://git@github.com/acme/app.git sk=N:1  attributes: sessionToken"
    assert line in as_text.stdout.splitlines(), as_text.stdout


def test_a_repairs_error_is_redacted_and_the_key_beside_it_is_not() -> None:
    """What a destination answered is error text, which can quote a credential; the key
    on the same line is data."""
    finding = Finding(
        "eu",
        "different",
        {"pk": {"S": "ssh://git@github.com/acme/app.git"}, "sk": {"N": "1"}},
        repair="refused",
        detail="AccessDenied: 'X-Amz-Security-Token': 'FINDINGqqqTOKEN7'",
    )

    assert finding.line() == (
        "  different pk=S:ssh://git@github.com/acme/app.git sk=N:1  -> refused: "
        "AccessDenied: 'X-Amz-Security-Token': '<redacted>'"
    )
    body = finding.as_dict()
    assert body["key"]["pk"] == {"S": "ssh://git@github.com/acme/app.git"}
    assert body["detail"] == "AccessDenied: 'X-Amz-Security-Token': '<redacted>'"


def test_an_expiry_counts_only_within_the_five_years_dynamodbs_ttl_acts_on() -> None:
    """DynamoDB's TTL deletes an item whose expiry (epoch seconds, a number as it is) is
    at most now and no more than five years old; it ignores every other value."""
    now = 1_800_000_000.25
    horizon = Decimal(repr(now)) - TTL_HORIZON_S
    for expiry in ("1800000000", "1800000000.25", "18e8", "1799996400.5", str(horizon + 1)):
        assert expired_by_ttl({"N": expiry}, now), expiry
    for value in (
        {"N": "1800000000.26"},
        {"N": str(horizon)},
        {"N": "0"},
        {"N": "-5"},
        {"N": "1.5"},
        {"N": "1600000000"},
        {"S": "1800000000"},
        {"N": "not a number"},
        None,
    ):
        assert not expired_by_ttl(value, now), value


def test_repair_and_backfill_leave_a_running_jobs_metrics_directory_alone(
    job: Job, tmp_path: Path
) -> None:
    """``PROMETHEUS_MULTIPROC_DIR`` set for a whole container names the running job's
    samples: a ``verify --repair`` or ``backfill`` run beside it wrote its own writes
    there, and the job's /metrics counted them as its own until it restarted."""
    job.path.write_text(job.path.read_text().replace(LWW, "conflict: {policy: overwrite}"))
    items = replicated(job, 4)
    (eu, eu_table), _ = job.destination_clients()
    eu.delete_item(TableName=eu_table, Key=key(items[0]))
    samples = tmp_path / "job-samples"
    samples.mkdir()
    env = {"PROMETHEUS_MULTIPROC_DIR": str(samples)}

    repaired = replicator("verify", "--config", str(job.path), "--repair", env=env)
    copied = replicator("backfill", "--config", str(job.path), env=env)

    assert repaired.returncode == 0, repaired.stderr
    assert "1 repaired" in repaired.stdout + repaired.stderr
    assert copied.returncode == 0, copied.stderr
    assert job.converged()
    assert sorted(path.name for path in samples.iterdir()) == []


def test_what_a_resolver_prints_while_it_decides_stays_out_of_the_json_report(
    job: Job, tmp_path: Path
) -> None:
    """Only the module's import was kept off stdout: its prints as it decided (and what a
    child process of it wrote) went into ``verify --repair --json``'s report, which was
    then no JSON. They go to stderr, logged as ``printed`` lines (the log is JSON), and
    so does what it printed as it was imported."""
    items, eu, eu_table = differing_under_a_resolver(
        job,
        tmp_path,
        "noisy_resolver",
        "import os, subprocess, sys\n"
        "print('imported')\n"
        "KEPT = sys.stdout\n"
        "sys.stdout.reconfigure(line_buffering=True)\n"
        "def decide(incoming, existing):\n"
        "    print('deciding', incoming.keys['pk']['S'])\n"
        "    KEPT.write('through the stdout kept at import\\n')\n"
        "    os.write(1, b'written to fd 1\\n')\n"
        "    sys.stdout.buffer.write('bytes in '.encode(sys.stdout.encoding) + b'stdout\\n')\n"
        "    sys.stdout.buffer.flush()\n"
        "    subprocess.run([sys.executable, '-c', 'print(\"a child says hi\")'], check=True)\n"
        "    return True\n",
    )

    done = replicator(
        "verify",
        "--config",
        str(job.path),
        "--repair",
        "--json",
        "--recheck-pause",
        "0",
        env={"PYTHONPATH": str(tmp_path)},
    )

    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)  # the report alone
    repairs = [d["repair"] for at in report["destinations"].values() for d in at["differences"]]
    assert repairs == ["repaired"], report
    key = {name: items[0][name] for name in ("pk", "sk")}
    assert eu.get_item(TableName=eu_table, Key=key, ConsistentRead=True)["Item"] == items[0]
    printed = [json.loads(line) for line in done.stderr.splitlines() if '"printed"' in line]
    # The import's print too, made before the job said how to log (a raw line before).
    # A module that keeps the sys.stdout of its import (or reconfigures it) works as
    # it did: the text it writes there later is not held for good.
    assert [line["text"] for line in printed] == [
        "imported",
        f"deciding {items[0]['pk']['S']}",
        "through the stdout kept at import",
    ], done.stderr
    assert "\nimported\n" not in f"\n{done.stderr}"
    assert "written to fd 1" in done.stderr and "a child says hi" in done.stderr
    assert "bytes in stdout" in done.stderr


@pytest.mark.parametrize("stdout", ["a full disk", "a pipe nobody reads", "closed"])
def test_a_report_that_cannot_be_written_is_said_in_one_line(job: Job, stdout: str) -> None:
    """A full disk ended in a traceback, a closed pipe in exit 1 without a word (click's
    own handling), and a stdout closed at start in a traceback and exit 1 after the work
    had succeeded."""
    replicated(job, 3)
    command = [sys.executable, "-m", "replicator", "verify", "--config", str(job.path), "--json"]
    if stdout == "closed":
        done = subprocess.run(
            ["sh", "-c", '"$@" >&-', "sh", *command],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr  # equal: nothing to report it to
        assert "Traceback" not in done.stderr
        return
    if stdout == "a full disk":
        with open("/dev/full", "w") as full:
            done = subprocess.run(
                command, stdout=full, stderr=subprocess.PIPE, text=True, timeout=120, check=False
            )
        said = "[Errno 28] No space left on device"
    else:
        read_end, write_end = os.pipe()
        os.close(read_end)
        try:
            done = subprocess.run(
                command,
                stdout=write_end,
                stderr=subprocess.PIPE,
                text=True,
                timeout=120,
                check=False,
            )
        finally:
            os.close(write_end)
        said = "[Errno 32] Broken pipe"
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last == f"replicator: the report could not be written to stdout: {said}", done.stderr


def test_a_table_found_equal_with_another_count_says_why() -> None:
    """Under traffic the tables are scanned at different moments: a destination found
    equal may be counted otherwise than the source. The line says why, so that the
    counts do not read as a difference; a kept item accounts for its own count."""
    report = VerifyReport(
        source="us-east-1/orders",
        destinations=["eu-west-1/orders", "ap-southeast-2/orders", "eu-central-1/orders"],
        sampled=False,
        source_items=123,
        destination_items={
            "eu-west-1/orders": 121,
            "ap-southeast-2/orders": 123,
            "eu-central-1/orders": 125,
        },
        rechecked=4,
        findings=[],
        kept={"eu-central-1/orders": 2},
        kept_because="expired at the source",
    )
    lines = report.text().splitlines()
    assert lines[1] == (
        "eu-west-1/orders: scanned 121 items, equal (counted 2 fewer than the source: "
        "items changed while the tables were scanned, and each difference seen then was "
        "read again and found settled)"
    ), lines
    assert lines[2] == "ap-southeast-2/orders: scanned 123 items, equal", lines
    assert lines[3] == (
        "eu-central-1/orders: scanned 125 items, equal; 2 kept: expired at the source"
    ), lines
