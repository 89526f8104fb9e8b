"""Loop prevention's settings, as the puts read show them: a mistyped origin_value or
origin_attribute makes no write fail, so the shard says so in a warning, once."""

from __future__ import annotations

from pathlib import Path

import structlog.testing

from replicator.config.loader import parse_job
from replicator.decode import decode
from replicator.filters import (
    REGION_STAMPED_PUTS_WARNED_AFTER,
    UNSTAMPED_PUTS_WARNED_AFTER,
    ChangeFilter,
    Route,
    StampWatch,
)
from replicator.intake import Reader
from tests.support.records import put, remove

PAIR = (
    "source: {region: us-east-1, table: carts}\n"
    "destinations: [{region: eu-west-1, table: carts}]\n"
    "conflict: {policy: last_writer_wins, timestamp_attribute: ts}\n"
    "active_active: {tombstones: true}\n"
)


def reader_of(loop_prevention: str) -> Reader:
    job = parse_job(PAIR + f"loop_prevention: {loop_prevention}\n", Path("job.yaml")).job
    return Reader(ChangeFilter.for_job(job), stamps=StampWatch.for_job(job))


def warnings_of(logs: list[dict[str, object]]) -> list[dict[str, object]]:
    return [line for line in logs if line["log_level"] == "warning"]


def test_puts_stamped_with_the_source_region_under_another_origin_value_are_warned_once() -> None:
    """origin_value us-east1 where the applications stamp us-east-1: every local put was
    skipped as an echo, nothing replicated, and nothing above info was logged."""
    reader = reader_of("{origin_attribute: origin, origin_value: us-east1}")
    count = REGION_STAMPED_PUTS_WARNED_AFTER + 5
    with structlog.testing.capture_logs() as logs:
        routes = [
            reader.route(decode(put(f"k{i}", i + 1, origin="us-east-1"))).route
            for i in range(count)
        ]
    assert routes == [Route.LOOP_SKIPPED] * count
    (warning,) = warnings_of(logs)
    assert str(warning["event"]).startswith(
        f"{REGION_STAMPED_PUTS_WARNED_AFTER} puts stamped with the source table's region, "
        "and none with loop_prevention.origin_value, were skipped"
    )
    assert (warning["stamp"], warning["origin_value"]) == ("us-east-1", "us-east1")
    assert warning["sequence_number"] == str(REGION_STAMPED_PUTS_WARNED_AFTER)


def test_two_tables_of_one_region_each_with_its_own_stamp_say_nothing() -> None:
    """docs/active-active.md: two tables in one region need two origin values. The job
    of the one stamped us-east-1b reads the other's echoes, stamped us-east-1: no
    warning (following it would have put both jobs on one value)."""
    reader = reader_of("{origin_attribute: origin, origin_value: us-east-1b}")
    with structlog.testing.capture_logs() as logs:
        reader.route(decode(put("own", 1, origin="us-east-1b")))
        for i in range(REGION_STAMPED_PUTS_WARNED_AFTER + 5):
            reader.route(decode(put(f"k{i}", i + 2, origin="us-east-1")))
    assert warnings_of(logs) == []


def test_the_right_origin_value_and_echoes_say_nothing() -> None:
    reader = reader_of("{origin_attribute: origin}")
    with structlog.testing.capture_logs() as logs:
        reader.route(decode(put("a", 1, origin="us-east-1")))
        reader.route(decode(put("b", 2, origin="eu-west-1")))  # an echo
        reader.route(decode(remove("c", 3, origin="us-east-1")))
    assert warnings_of(logs) == []


def test_puts_that_never_carry_the_origin_attribute_are_warned_about_once() -> None:
    """origin_attribute orign_region (misspelt): no put carries it, every put is taken
    for this region's own, and the other region's writes echo back."""
    reader = reader_of("{origin_attribute: orign_region}")
    with structlog.testing.capture_logs() as logs:
        for i in range(UNSTAMPED_PUTS_WARNED_AFTER + 5):
            reader.route(decode(put(f"k{i}", i + 1, origin_region="us-east-1")))
    (warning,) = warnings_of(logs)
    assert str(warning["event"]).startswith(
        f"none of the first {UNSTAMPED_PUTS_WARNED_AFTER} puts read carried the origin stamp"
    )
    assert warning["origin_attribute"] == "orign_region"
    assert warning["sequence_number"] == str(UNSTAMPED_PUTS_WARNED_AFTER)


def test_one_stamped_put_among_the_first_ends_the_unstamped_count() -> None:
    reader = reader_of("{origin_attribute: origin}")
    with structlog.testing.capture_logs() as logs:
        reader.route(decode(put("a", 1, origin="us-east-1")))
        for i in range(UNSTAMPED_PUTS_WARNED_AFTER + 5):
            reader.route(decode(put(f"k{i}", i + 2)))
    assert warnings_of(logs) == []


def test_a_stamp_written_as_a_number_is_warned_about_once_and_replicated() -> None:
    """An application writing ``origin: {N: "1"}``: stamps are compared as text, so its
    puts are replicated as unstamped, and none of its echoes is ever stopped by the
    stamp. Said once, naming the attribute and the type."""
    reader = reader_of("{origin_attribute: origin}")
    with structlog.testing.capture_logs() as logs:
        routes = [reader.route(decode(put(f"k{i}", i + 1, origin=7))).route for i in range(5)]
        reader.route(decode(put("text", 9, origin={"L": []})))
    assert routes == [Route.REPLICATE] * 5
    (warning,) = warnings_of(logs)
    assert str(warning["event"]).startswith(
        "a put's origin stamp (loop_prevention.origin_attribute) is not text"
    )
    assert (warning["origin_attribute"], warning["stamp_type"]) == ("origin", "N")
    assert warning["sequence_number"] == "1"


def test_unstamped_puts_and_text_stamps_say_nothing_of_the_stamps_type() -> None:
    reader = reader_of("{origin_attribute: origin}")
    with structlog.testing.capture_logs() as logs:
        reader.route(decode(put("a", 1)))
        reader.route(decode(put("b", 2, origin="us-east-1")))
        reader.route(decode(put("c", 3)))
    assert warnings_of(logs) == []


def mesh_reader(destinations: str, loop_prevention: str = "{origin_attribute: origin}") -> Reader:
    job = parse_job(
        "source: {region: us-east-1, table: carts}\n"
        f"destinations: {destinations}\n"
        "conflict: {policy: last_writer_wins, timestamp_attribute: ts}\n"
        "active_active: {tombstones: true}\n"
        f"loop_prevention: {loop_prevention}\n",
        Path("job.yaml"),
    ).job
    return Reader(ChangeFilter.for_job(job), stamps=StampWatch.for_job(job))


STAMPS_READ = (
    *("us-east-1", "ap-southeast-2", "eu-west-1", "ap-southeast-2", "sa-east-1"),
    *("europe", "", "ca-central-1", "me-south-1", "af-south-1"),
)


def test_a_mesh_peer_missing_from_the_destinations_is_warned_once_per_stamp() -> None:
    """A 3-region mesh whose us-east-1 job lists eu-west-1 but not ap-southeast-2: that
    region's job writes here (its stamp is read), and ap-southeast-2 never receives
    us-east-1's writes. Every echo is still skipped; each unknown stamp is said once."""
    reader = mesh_reader("[{region: eu-west-1, table: carts}]")
    with structlog.testing.capture_logs() as logs:
        routes = [
            reader.route(decode(put(f"k{i}", i + 1, origin=origin))).route
            for i, origin in enumerate(STAMPS_READ)
        ]
    assert routes[1:] == [Route.LOOP_SKIPPED] * 9
    first, second, third = warnings_of(logs)  # at most 3 stamps; not names of one's own
    assert str(first["event"]).startswith(
        "a put stamped 'ap-southeast-2' was skipped as another region's echo, but no "
        "destination of this job is in 'ap-southeast-2'"
    )
    assert (first["stamp"], first["destination_regions"]) == ("ap-southeast-2", ["eu-west-1"])
    assert first["sequence_number"] == "2"
    assert (second["stamp"], second["sequence_number"]) == ("sa-east-1", "5")
    assert (third["stamp"], third["sequence_number"]) == ("ca-central-1", "8")


def test_a_whole_mesh_and_stamps_of_other_names_say_nothing_of_peers() -> None:
    """Every peer listed (a second table's stamp, eu-west-1b, is its region's); and a
    job whose own stamp is not its region (names of the operators' own) is not checked:
    its peers' names cannot be told from regions."""
    whole = mesh_reader(
        "[{region: eu-west-1, table: carts}, {region: ap-southeast-2, table: carts}]"
    )
    named = mesh_reader(
        "[{region: eu-west-1, table: carts}]", "{origin_attribute: origin, origin_value: east}"
    )
    with structlog.testing.capture_logs() as logs:
        for i, origin in enumerate(["ap-southeast-2", "eu-west-1", "eu-west-1b", "us-east-1b"]):
            whole.route(decode(put(f"k{i}", i + 1, origin=origin)))
        named.route(decode(put("own", 10, origin="east")))
        for i, origin in enumerate(["west", "ap-southeast-2"]):
            named.route(decode(put(f"n{i}", i + 11, origin=origin)))
    assert warnings_of(logs) == []
