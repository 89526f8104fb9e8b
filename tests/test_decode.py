"""Stage 1: decoding both record formats exactly."""

from __future__ import annotations

import base64
import json
import random
import re
from pathlib import Path
from typing import Any

import pytest

from bench.workload import Workload, WorkloadSpec
from replicator.decode import StreamKeys, decode
from replicator.exceptions import MalformedImage, RecordDecodeError
from replicator.filters import ChangeFilter
from replicator.highwater import HighWater
from replicator.images import Image
from replicator.intake import Reader
from replicator.items import Item, canonical_number, item_from_wire, key_id
from replicator.records import Event, RawRecord, raw_record_from
from replicator.rules import OrderedRule, WriteRequest
from replicator.rules.ordered import Peers
from tests.support.records import daemon_record, kinesis_record, stream_record

SAMPLES = Path(__file__).parent / "samples" / "adapter-2.x-records.jsonl"


def sample_records() -> list[RawRecord]:
    lines = SAMPLES.read_text().splitlines()
    return [
        daemon_record(json.loads(line), int(json.loads(line)["dynamodb"]["SequenceNumber"]))
        for line in lines
    ]


def test_real_adapter_sample_insert_keeps_every_type_exactly() -> None:
    insert = decode(sample_records()[0])
    assert insert.event is Event.INSERT
    assert insert.sequence_number == "111100000000000000000001"
    assert insert.created_us == 1_700_000_123_000_000
    assert insert.old_image is None  # adapter 2.x writes a missing image as {}
    image = insert.new_image
    assert image is not None
    assert image["num"] == {"N": "123.4500"}  # digits exactly as sent
    assert image["bin"] == {"B": b"\x01\x02\x03"}
    assert image["bs"] == {"BS": [b"\x01", b"\x02"]}
    assert image["ss"] == {"SS": ["x", "y"]}
    assert image["ns"] == {"NS": ["1", "2.5"]}
    assert image["nul"] == {"NULL": True}
    assert image["b"] == {"BOOL": False}
    assert image["el"] == {"L": []}
    assert image["em"] == {"M": {}}
    assert image["l"] == {"L": [{"S": "v"}, {"N": "7"}]}
    assert image["m"] == {"M": {"k": {"S": "v"}}}
    assert insert.keys == {"sk": {"N": "1"}, "pk": {"S": "a"}}
    assert not insert.ttl_delete


def test_real_adapter_sample_ttl_remove() -> None:
    removal = decode(sample_records()[1])
    assert removal.event is Event.REMOVE
    assert removal.ttl_delete
    assert removal.new_image is None
    assert removal.old_image == {"sk": {"N": "1"}, "pk": {"S": "a"}}


def test_nested_binary_survives_byte_for_byte() -> None:
    blob = bytes(range(256))
    encoded = base64.b64encode(blob).decode()
    image = {
        "pk": {"B": encoded},
        "deep": {"M": {"l": {"L": [{"B": encoded}, {"BS": [encoded]}, {"M": {"x": {"B": ""}}}]}}},
    }
    change = decode(daemon_record(stream_record("INSERT", {"pk": {"B": encoded}}, image, seq=5), 5))
    assert change.keys == {"pk": {"B": blob}}
    deep = change.new_image["deep"]["M"]["l"]["L"]  # type: ignore[index]
    assert deep == [{"B": blob}, {"BS": [blob]}, {"M": {"x": {"B": b""}}}]


def test_adapter_1x_record_omits_images_and_partition_key() -> None:
    payload = stream_record(
        "REMOVE", {"pk": {"S": "a"}}, None, {"pk": {"S": "a"}}, seq=9, adapter=1
    )
    record = daemon_record(payload, 9, adapter=1)
    assert record["partitionKey"] is None and record["subSequenceNumber"] is None
    change = decode(record)
    assert change.event is Event.REMOVE and change.old_image == {"pk": {"S": "a"}}


def test_kinesis_data_streams_format_uses_microseconds_and_kinesis_sequence() -> None:
    payload = kinesis_record(
        "MODIFY",
        {"pk": {"S": "k"}},
        {"pk": {"S": "k"}, "v": {"N": "1"}},
        created_us=1_700_000_000_123_456,
    )
    change = decode(daemon_record(payload, 49_590_000_000_000_000_000_000_001))
    assert change.created_us == 1_700_000_000_123_456
    assert change.position == 49_590_000_000_000_000_000_000_001
    assert change.event is Event.MODIFY


def test_seconds_timestamps_are_recognised() -> None:
    payload = stream_record(
        "INSERT", {"pk": {"S": "a"}}, {"pk": {"S": "a"}}, seq=1, created_ms=1_700_000_000
    )  # seconds, as some serializers write
    assert decode(daemon_record(payload, 1)).created_us == 1_700_000_000_000_000


def test_number_keys_that_differ_only_in_form_are_the_same_item() -> None:
    a = decode(
        daemon_record(stream_record("INSERT", {"n": {"N": "1"}}, {"n": {"N": "1"}}, seq=1), 1)
    )
    b = decode(
        daemon_record(stream_record("INSERT", {"n": {"N": "1.0"}}, {"n": {"N": "1.0"}}, seq=2), 2)
    )
    assert a.key == b.key


@pytest.mark.parametrize(
    "keys",
    [
        {"pk": {"S": "a"}},
        {"sk": {"S": "2"}, "pk": {"S": "1"}},
        {"pk": {"S": "a"}, "n": {"N": "1.50"}},
        {"pk": {"B": "AAE="}},
        {"pk": {"S": "a"}, "sk": {"B": "AAE="}},
    ],
)
def test_a_records_keys_and_their_identity_are_those_of_the_full_decode(
    keys: dict[str, Any],
) -> None:
    """String keys take a shorter way than numbers and binaries; all end the same."""
    change = decode(daemon_record(stream_record("INSERT", keys, keys, seq=1), 1))
    assert change.keys == item_from_wire(keys)
    assert change.key == key_id(item_from_wire(keys))


def test_38_digit_number_keys_that_differ_in_the_last_digit_are_different_items() -> None:
    """DynamoDB numbers have 38 significant digits; a 28-digit context would merge these."""
    first, second = "1" + "0" * 36 + "1", "1" + "0" * 36 + "2"
    a = decode(
        daemon_record(stream_record("INSERT", {"n": {"N": first}}, {"n": {"N": first}}, seq=1), 1)
    )
    b = decode(
        daemon_record(stream_record("INSERT", {"n": {"N": second}}, {"n": {"N": second}}, seq=2), 2)
    )
    assert a.key != b.key
    assert a.key == (("n", "N", first),)


@pytest.mark.parametrize(
    ("spellings", "canonical"),
    [
        (["1", "1.0", "1.000", "10E-1", "+1", "001"], "1"),
        (["0", "-0", "0.000", "0E+5", "-0.0"], "0"),
        (["100", "1E+2", "1.00E2", "100.0"], "100"),
        (["-7.5", "-007.50", "-75e-1"], "-7.5"),
        (
            ["9.9999999999999999999999999999999999999E+125"],
            "99999999999999999999999999999999999999" + "0" * 88,
        ),
        (["1E-130"], "0." + "0" * 129 + "1"),
    ],
)
def test_numbers_are_canonicalized_exactly(spellings: list[str], canonical: str) -> None:
    assert {canonical_number(text) for text in spellings} == {canonical}


@pytest.mark.parametrize("text", ["NaN", "Infinity", "1_0", " 1", "\u0661", "", "1E+126", "1E-131"])
def test_a_number_key_dynamodb_could_not_hold_is_a_decode_error(text: str) -> None:
    payload = stream_record("INSERT", {"n": {"N": text}}, {"n": {"N": text}}, seq=5)
    with pytest.raises(RecordDecodeError, match=r"record 5: .*bad number"):
        decode(daemon_record(payload, 5))


BAD = {
    "not base64": (b"", "not base64"),
    "not json": (b"{nope", "not JSON"),
    "json list": (b"[1]", "not an object"),
    "bad event": (json.dumps({"eventName": "UPSERT", "dynamodb": {}}).encode(), "eventName"),
    "no keys": (
        json.dumps({"eventName": "INSERT", "dynamodb": {"NewImage": {}}}).encode(),
        "no Keys",
    ),
    "insert without image": (
        json.dumps(stream_record("INSERT", {"pk": {"S": "a"}}, None, seq=1)).encode(),
        "without NewImage",
    ),
    "map key type": (
        json.dumps(stream_record("INSERT", {"pk": {"M": {}}}, {"pk": {"M": {}}}, seq=1)).encode(),
        "cannot be a key",
    ),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_undecodable_records_raise_with_the_record_named(name: str) -> None:
    payload, reason = BAD[name]
    record = daemon_record(payload, 77)
    if name == "not base64":
        record["data"] = "@@not-base64@@"
    with pytest.raises(RecordDecodeError) as caught:
        decode(record)
    assert "record 77" in str(caught.value)
    assert reason in str(caught.value)


@pytest.mark.parametrize("table", [12345, True, ["orders"], {"S": "orders"}])
@pytest.mark.parametrize("source_table", [None, "orders"])
def test_a_table_name_that_is_not_text_is_a_decode_error_not_this_jobs_table(
    table: object, source_table: str | None
) -> None:
    """A present tableName that is not a string was decoded as no tableName, which
    means the job's own table: the change was replicated as the source table's."""
    payload = kinesis_record("INSERT", {"pk": {"S": "k"}}, {"pk": {"S": "k"}})
    payload["tableName"] = table
    with pytest.raises(RecordDecodeError) as caught:
        decode(daemon_record(payload, 79), source_table=source_table)
    assert str(caught.value) == f"record 79: tableName {table!r} is not a table name"


@pytest.mark.parametrize("event", ["INSERT", "MODIFY"])
def test_a_kinesis_put_without_new_image_names_no_stream_view_type(event: str) -> None:
    """Kinesis Data Streams for DynamoDB has no view type to set: the reason must not
    send the operator to one; a DynamoDB stream's record still names it."""
    payload = kinesis_record(event, {"pk": {"S": "k"}}, None, {"pk": {"S": "k"}})
    with pytest.raises(RecordDecodeError) as caught:
        decode(daemon_record(payload, 81))
    assert str(caught.value) == (
        f"record 81: {event} without NewImage; a Kinesis Data Streams for DynamoDB record "
        "always carries it (this one was not written by DynamoDB)"
    )
    ordered = stream_record(event, {"pk": {"S": "k"}}, None, seq=82)
    with pytest.raises(RecordDecodeError, match="the stream view type must be NEW_IMAGE"):
        decode(daemon_record(ordered, 82))


def test_no_table_name_or_a_null_one_is_the_jobs_own_table() -> None:
    """DynamoDB Streams records carry no tableName: the stream is the table's own."""
    ordered = stream_record("INSERT", {"pk": {"S": "k"}}, {"pk": {"S": "k"}}, seq=1)
    assert "tableName" not in ordered
    assert decode(daemon_record(ordered, 1), source_table="orders").table is None
    kinesis = kinesis_record("INSERT", {"pk": {"S": "k"}}, {"pk": {"S": "k"}})
    kinesis["tableName"] = None
    assert decode(daemon_record(kinesis, 2), source_table="orders").table is None
    kinesis["tableName"] = "invoices"
    assert decode(daemon_record(kinesis, 3), source_table="orders").table == "invoices"


def test_data_that_is_not_even_ascii_is_a_decode_error_not_a_crash() -> None:
    record = daemon_record(b"{}", 78)
    record["data"] = "ézé"
    with pytest.raises(RecordDecodeError, match="record 78: data is not base64"):
        decode(record)


MALFORMED_VALUES = {
    "string holding a number": ({"S": 5}, "S must hold a string"),
    "number holding a number": ({"N": 5}, "N must hold a string"),
    "set holding a string": ({"SS": "abc"}, "SS must hold a list of strings"),
    "number set holding numbers": ({"NS": [1, 2]}, "NS must hold a list of strings"),
    "null holding false": ({"NULL": False}, "NULL must hold true"),
    "bool holding a string": ({"BOOL": "true"}, "BOOL must hold true or false"),
    "nested in a map": ({"M": {"inner": {"S": None}}}, "attribute x.inner: S must hold"),
    "nested in a list": ({"L": [{"S": "ok"}, {"N": []}]}, "attribute x[1]: N must hold"),
    "binary holding a number": ({"B": 7}, "B must hold a string"),
    "binary not base64": ({"B": "%%"}, "not valid base64"),
    "unknown type": ({"Q": 1}, "unknown type"),
    "two type keys": ({"S": "a", "N": "1"}, "expected one type key"),
    "no type key": ({}, "expected one type key"),
}


@pytest.mark.parametrize("name", sorted(MALFORMED_VALUES))
def test_malformed_attribute_values_are_refused_down_to_their_scalars(name: str) -> None:
    """An image is checked whole when it is decoded whole: at once by the intake every
    processor reads with (a decode error naming the record), else on first use, where
    MalformedImage (a PlanError) dead-letters the change. Nothing malformed reaches a
    destination (moto would store some of these altered, or answer 500 for ever) nor
    botocore's serializer (which would send a string as a one-letter set)."""
    value, reason = MALFORMED_VALUES[name]
    payload = stream_record("INSERT", {"pk": {"S": "a"}}, {"pk": {"S": "a"}, "x": value}, seq=9)
    with pytest.raises(RecordDecodeError) as caught:
        decode(daemon_record(payload, 9), check_new_image=True)
    assert "record 9" in str(caught.value)
    assert reason in str(caught.value)
    with pytest.raises(RecordDecodeError, match=re.escape(reason)):
        Reader(ChangeFilter(None, "", skip_ttl_deletes=False)).read(daemon_record(payload, 9))
    change = decode(daemon_record(payload, 9))
    assert change.new is not None
    with pytest.raises(MalformedImage) as lazily:
        change.new_image  # noqa: B018
    assert reason in str(lazily.value)
    assert lazily.value.reason == "rejected"
    with pytest.raises(MalformedImage, match=re.escape(reason)):
        WriteRequest(op="put", item=change.new).to_kwargs("t")


def _value(rng: random.Random, depth: int, malformed: float) -> Any:
    """A random attribute value in stream form, well-formed or (at rate ``malformed``)
    not: a wrong scalar, an unknown or missing type key, two type keys."""
    if rng.random() < malformed:
        return rng.choice(
            [
                {"S": rng.choice([5, None, True, ["a"]])},
                {"N": 1.5},
                {"B": rng.choice(["%%", "QQ", "QQ=", 7, "QUJD\n", "\n", "é", " QQ==", "QQ==\r\n"])},
                {"BS": ["QQ==", rng.choice(["Q", "QUJD\n", "é"])]},
                {"SS": "abc"},
                {"NS": [1]},
                {"NULL": rng.choice([False, "true", None])},
                {"BOOL": rng.choice(["true", 1, None])},
                {"M": rng.choice([[], "m", None])},
                {"L": rng.choice([{}, "l"])},
                {"Q": "1"},
                {},
                {"S": "a", "N": "1"},
                {"M": {}, "L": []},
                "bare",
                None,
            ]
        )
    kinds = ["S", "N", "B", "SS", "NS", "BS", "NULL", "BOOL"] + (["M", "L"] * 3 if depth else [])
    kind = rng.choice(kinds)
    if kind == "M":
        return {"M": {f"m{i}": _value(rng, depth - 1, malformed) for i in range(rng.randint(0, 3))}}
    if kind == "L":
        return {"L": [_value(rng, depth - 1, malformed) for _ in range(rng.randint(0, 3))]}
    return {
        "S": {
            "S": rng.choice(["", "x", "ü{}", '"S":']),
        },
        "N": {"N": rng.choice(["1", "-0.5", "1E+3"])},
        "B": {"B": rng.choice(["", "QQ==", "QUI=", "QUJD"])},
        "SS": {"SS": ["a", "b"]},
        "NS": {"NS": ["1", "2"]},
        "BS": {"BS": ["QQ==", "QUJD"]},
        "NULL": {"NULL": True},
        "BOOL": {"BOOL": rng.choice([True, False])},
    }[kind]


def test_the_intakes_image_check_agrees_with_the_full_decode_on_every_value() -> None:
    """Image.check (two typed decodes in msgspec) refuses exactly what item_from_wire
    refuses, for images nested deeper than its one-key check follows too, and builds no
    item for a well-formed one."""
    rng = random.Random(16)
    refused = 0
    for case in range(3000):
        depth = rng.choice([0, 1, 2, 3, 12])
        image = {f"a{i}": _value(rng, depth, rng.choice([0.0, 0.02, 0.2])) for i in range(4)}
        wire = json.dumps(image).encode()
        try:
            item_from_wire(json.loads(wire))
            expected = None
        except ValueError as error:
            expected = str(error)
        checked = Image(wire)
        if expected is None:
            checked.check()
            assert checked._item is None or depth > 8, case
        else:
            refused += 1
            with pytest.raises(MalformedImage) as caught:
                checked.check()
            assert str(caught.value) == expected, case
    assert 500 < refused < 2500  # both verdicts are well represented
    deep: Any = {"S": "deepest"}
    for _ in range(12):
        deep = {"L": [{"M": {"d": deep}}]}
    Image(json.dumps({"pk": {"S": "a"}, "deep": deep}).encode()).check()


def test_a_record_nested_deeper_than_can_be_read_is_a_decode_error_not_a_crash() -> None:
    """DynamoDB nests at most 32 levels; a hand-made record may nest thousands."""
    image = '{"pk":{"S":"a"},"deep":' + '{"L":[' * 5000 + '{"S":"x"}' + "]}" * 5000 + "}"
    data = (
        '{"eventName":"INSERT","dynamodb":{"Keys":{"pk":{"S":"a"}},'
        f'"ApproximateCreationDateTime":1700000000000,"NewImage":{image}}}}}'
    )
    record = daemon_record(data.encode(), 12)
    with pytest.raises(RecordDecodeError, match="record 12: data is nested too deeply to read"):
        Reader(ChangeFilter(None, "", skip_ttl_deletes=False)).read(record)
    with pytest.raises(MalformedImage, match="nested too deeply"):
        Image(image.encode()).item  # noqa: B018


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ({"S": "a", "N": "1"}, "attribute x: expected one type key"),
        ({"B": "é"}, "attribute x: B is not valid base64"),
    ],
)
def test_a_malformed_old_image_is_checked_where_it_is_read_whole(
    value: dict[str, Any], reason: str
) -> None:
    """The old image is never forwarded: the intake leaves it to what reads it whole,
    except for active-active, which reads it as the record is routed. A delete under
    last_writer_wins compares the old image whole when it can; with a malformed
    attribute it falls back to the ranking attribute alone, and nothing malformed is
    sent."""
    old = {"pk": {"S": "a"}, "ts": {"N": "5"}, "x": value}
    payload = stream_record("REMOVE", {"pk": {"S": "a"}}, None, old, seq=9)
    plain = Reader(ChangeFilter(None, "", skip_ttl_deletes=False))
    change = plain.read(daemon_record(payload, 9)).change
    rule = OrderedRule("last_writer_wins", "ts", None, numeric_only=False)
    with pytest.raises(MalformedImage, match=re.escape(reason)) as caught:
        change.old_image  # noqa: B018
    assert caught.value.reason == "rejected"
    delete = rule.plan(change)
    assert isinstance(delete, WriteRequest) and delete.op == "delete"
    kwargs = delete.to_kwargs("t")
    assert set(kwargs["ExpressionAttributeNames"].values()) == {"ts"}  # not x
    assert value not in kwargs["ExpressionAttributeValues"].values()
    active_active = Reader(ChangeFilter(None, "", skip_ttl_deletes=False), HighWater(rule))
    with pytest.raises(RecordDecodeError, match=re.escape(f"record 9: {reason}")):
        active_active.read(daemon_record(payload, 9))


@pytest.mark.parametrize("value", [{"S": "a", "N": "1"}, {"B": "é"}])
def test_a_delete_of_a_peers_malformed_image_is_compared_on_its_rank(value: dict[str, Any]) -> None:
    """A delete of an image stamped by one of a pair's regions applies only to that very
    image; one with a malformed attribute cannot be compared whole, so it applies to what
    ties with it on (value, origin), as any delete does, and nothing malformed is sent."""
    old = {"pk": {"S": "a"}, "ts": {"N": "5"}, "origin": {"S": "us-east-1"}, "x": value}
    payload = stream_record("REMOVE", {"pk": {"S": "a"}}, None, old, seq=9)
    change = (
        Reader(ChangeFilter(None, "", skip_ttl_deletes=False))
        .read(daemon_record(payload, 9))
        .change
    )
    rule = OrderedRule(
        "last_writer_wins", "ts", "origin", numeric_only=False, peers=Peers(any_stamp=True)
    )
    assert rule.deletes_only_its_image(change)
    delete = rule.plan(change)
    assert isinstance(delete, WriteRequest) and delete.op == "delete"
    kwargs = delete.to_kwargs("t")
    assert "x" not in kwargs["ExpressionAttributeNames"].values()
    assert value not in kwargs["ExpressionAttributeValues"].values()
    assert {"ts", "origin"} <= set(kwargs["ExpressionAttributeNames"].values())


# -- images are kept as the record's JSON ----------------------------------------------


def _legacy_images(record: RawRecord) -> tuple[Item | None, Item | None]:
    """The images as a full decode reads them: json.loads, then every value converted."""
    body = json.loads(base64.b64decode(record["data"]))["dynamodb"]
    images = []
    for name in ("NewImage", "OldImage"):
        image = body.get(name)
        images.append(item_from_wire(image) if image else None)
    return images[0], images[1]


def workload_records() -> list[RawRecord]:
    return [raw_record_from(r) for r in Workload(WorkloadSpec(binary_share=0.5)).batch(300)[0]]


@pytest.mark.parametrize("source", ["samples", "workload"])
def test_images_decoded_on_use_equal_a_full_decode_of_the_record(source: str) -> None:
    records = sample_records() if source == "samples" else workload_records()
    for record in records:
        change = decode(record)
        assert (change.new_image, change.old_image) == _legacy_images(record)


@pytest.mark.parametrize("source", ["samples", "workload"])
def test_attributes_read_ahead_as_an_image_is_checked_equal_those_read_on_use(
    source: str,
) -> None:
    """Strings and numbers are kept from the check; other types are still read on use."""
    records = sample_records() if source == "samples" else workload_records()
    names = set()
    for record in records:
        for image in (decode(record).new, decode(record).old):
            names |= set(image.item) if image is not None else set()
    read_ahead = (*sorted(names), "absent")
    for record in records:
        ahead = decode(record, check_new_image=True, check_old_image=True, read_ahead=read_ahead)
        on_use = decode(record)
        for image, plain in ((ahead.new, on_use.new), (ahead.old, on_use.old)):
            assert (image is None) == (plain is None)
            if image is None or plain is None:
                continue
            for name in read_ahead:
                assert image.get(name) == plain.get(name), (record["sequenceNumber"], name)
            assert image._item is None  # the check built no item


def test_an_image_is_the_records_own_bytes_and_is_not_decoded_until_read() -> None:
    record = sample_records()[0]
    text = base64.b64decode(record["data"])
    change = decode(record)
    assert change.new is not None and change.new.wire is not None
    wire = bytes(change.new.wire)
    assert wire in text and json.loads(wire) == json.loads(text)["dynamodb"]["NewImage"]
    # One attribute at a time: a number keeps its spelling, a binary becomes bytes.
    assert change.new.get("num") == {"N": "123.4500"}
    assert change.new.get("bin") == {"B": b"\x01\x02\x03"}
    assert change.new.get("absent") is None
    assert "ns" in change.new and "absent" not in change.new
    assert change.new._item is None  # nothing else was decoded
    assert change.new["bs"] == {"BS": [b"\x01", b"\x02"]}  # reading it as a mapping does
    assert change.new._item is not None


def test_a_malformed_attribute_is_refused_when_it_is_read() -> None:
    image = {"pk": {"S": "a"}, "ts": {"N": 5}, "ok": {"S": "fine"}}
    change = decode(daemon_record(stream_record("INSERT", {"pk": {"S": "a"}}, image, seq=3), 3))
    assert change.new is not None
    assert change.new.get("ok") == {"S": "fine"}
    with pytest.raises(MalformedImage, match="attribute ts: N must hold a string"):
        change.new.get("ts")


@pytest.mark.parametrize("adapter", [1, 2])
def test_absent_images_of_either_adapter_are_none(adapter: int) -> None:
    insert = stream_record("INSERT", {"pk": {"S": "a"}}, {"pk": {"S": "a"}}, seq=4, adapter=adapter)
    change = decode(daemon_record(insert, 4, adapter=adapter))
    assert change.old is None and change.old_image is None
    assert change.new_image == {"pk": {"S": "a"}}
    removal = stream_record(
        "REMOVE", {"pk": {"S": "a"}}, None, {"pk": {"S": "a"}}, seq=5, adapter=adapter
    )
    change = decode(daemon_record(removal, 5, adapter=adapter))
    assert change.new is None and change.image == {"pk": {"S": "a"}}


def test_a_null_image_is_absent() -> None:
    payload = stream_record("REMOVE", {"pk": {"S": "a"}}, None, {"pk": {"S": "a"}}, seq=6)
    payload["dynamodb"]["NewImage"] = None
    assert decode(daemon_record(payload, 6)).new is None


def test_a_kinesis_ttl_remove_and_a_kinesis_record_without_identity() -> None:
    ttl = kinesis_record("REMOVE", {"pk": {"S": "k"}}, None, {"pk": {"S": "k"}})
    ttl["userIdentity"] = {"type": "Service", "principalId": "dynamodb.amazonaws.com"}
    change = decode(daemon_record(ttl, 49_590_000_000_000_000_000_000_002))
    assert change.ttl_delete and change.old_image == {"pk": {"S": "k"}}
    plain = kinesis_record("INSERT", {"pk": {"S": "k"}}, {"pk": {"S": "k"}, "b": {"B": "AQ=="}})
    assert plain["userIdentity"] is None
    change = decode(daemon_record(plain, 49_590_000_000_000_000_000_000_003))
    assert not change.ttl_delete and change.new_image == {"pk": {"S": "k"}, "b": {"B": b"\x01"}}


def _with_data(data: bytes, seq: int) -> RawRecord:
    return daemon_record(data, seq)


IMAGE_BAD = {
    "modify without image": (
        json.dumps(stream_record("MODIFY", {"pk": {"S": "a"}}, None, seq=1)).encode(),
        "MODIFY without NewImage",
    ),
    "image is a list": (
        json.dumps(
            {"eventName": "INSERT", "dynamodb": {"Keys": {"pk": {"S": "a"}}, "NewImage": [1]}}
        ).encode(),
        "expected a map of attributes, got list",
    ),
    "image is a string": (
        json.dumps(
            {"eventName": "INSERT", "dynamodb": {"Keys": {"pk": {"S": "a"}}, "NewImage": "x"}}
        ).encode(),
        "expected a map of attributes, got str",
    ),
    "broken JSON inside an image": (
        b'{"eventName": "INSERT", "dynamodb": {"Keys": {"pk": {"S": "a"}}, '
        b'"NewImage": {"pk": {"S": "a"},}}}',
        "not JSON",
    ),
    "bad UTF-8 inside an image": (
        b'{"eventName": "INSERT", "dynamodb": {"Keys": {"pk": {"S": "a"}}, '
        b'"NewImage": {"pk": {"S": "\xff"}}}}',
        "not base64 of UTF-8",
    ),
    "keys not a map": (
        json.dumps({"eventName": "INSERT", "dynamodb": {"Keys": [1], "NewImage": {}}}).encode(),
        "no Keys",
    ),
    "dynamodb not a map": (
        json.dumps({"eventName": "INSERT", "dynamodb": [1]}).encode(),
        "no 'dynamodb' section",
    ),
    "key value malformed": (
        json.dumps(stream_record("INSERT", {"pk": {"S": 1}}, {"pk": {"S": "a"}}, seq=1)).encode(),
        "S must hold a string",
    ),
}


@pytest.mark.parametrize("name", sorted(IMAGE_BAD))
def test_records_whose_images_or_keys_are_unusable_are_decode_errors(name: str) -> None:
    payload, reason = IMAGE_BAD[name]
    with pytest.raises(RecordDecodeError) as caught:
        decode(_with_data(payload, 79))
    assert "record 79" in str(caught.value)
    assert reason in str(caught.value)


def test_a_ttl_remove_read_by_the_local_runtime_is_a_ttl_delete() -> None:
    """boto3 parses a GetRecords record's identity as {"PrincipalId", "Type"}; the local
    runtime hands the processor the adapter's spelling, and either decodes as TTL."""
    from datetime import UTC, datetime

    from replicator.shards.stream import to_daemon_record

    boto3_record = {
        "eventID": "e1",
        "eventName": "REMOVE",
        "eventVersion": "1.1",
        "eventSource": "aws:dynamodb",
        "awsRegion": "us-east-1",
        "dynamodb": {
            "ApproximateCreationDateTime": datetime(2026, 12, 1, tzinfo=UTC),
            "Keys": {"pk": {"S": "k"}},
            "OldImage": {"pk": {"S": "k"}, "expires": {"N": "1"}},
            "SequenceNumber": "300",
            "SizeBytes": 20,
            "StreamViewType": "NEW_AND_OLD_IMAGES",
        },
        "userIdentity": {"PrincipalId": "dynamodb.amazonaws.com", "Type": "Service"},
    }
    record = to_daemon_record(boto3_record)
    document = json.loads(base64.b64decode(record["data"]))
    assert document["userIdentity"] == {"principalId": "dynamodb.amazonaws.com", "type": "Service"}
    assert decode(record).ttl_delete
    user = dict(boto3_record, userIdentity={"PrincipalId": "someone", "Type": "Service"})
    assert not decode(to_daemon_record(user)).ttl_delete
    # A record that reached the processor in boto3's spelling is read the same way.
    document["userIdentity"] = {"PrincipalId": "dynamodb.amazonaws.com", "Type": "Service"}
    assert decode(daemon_record(document, 300)).ttl_delete


def _deep(value: dict[str, Any], depth: int = 12) -> dict[str, Any]:
    """``value`` nested deeper than Image.check's one-key check follows (its fallback)."""
    for _ in range(depth):
        value = {"L": [{"M": {"d": value}}]}
    return value


KEYS = {"pk": {"S": "a"}, "sk": {"N": "1"}}

IMAGE_WITHOUT_ITS_KEY = {
    "hash key missing": ({"sk": {"N": "1"}, "v": {"S": "x"}}, "pk", "is missing"),
    "range key missing": ({"pk": {"S": "a"}, "v": {"S": "x"}}, "sk", "is missing"),
    "string key differs": ({"pk": {"S": "b"}, "sk": {"N": "1"}}, "pk", "differs"),
    "number key differs": ({"pk": {"S": "a"}, "sk": {"N": "1.5"}}, "sk", "differs"),
    "key of another type": ({"pk": {"S": "a"}, "sk": {"S": "1"}}, "sk", "differs"),
    "range key missing, image nested deep": (
        {"pk": {"S": "a"}, "deep": _deep({"S": "x"})},
        "sk",
        "is missing",
    ),
    "number key differs, image nested deep": (
        {"pk": {"S": "a"}, "sk": {"N": "2"}, "deep": _deep({"S": "x"})},
        "sk",
        "differs",
    ),
}


@pytest.mark.parametrize("name", sorted(IMAGE_WITHOUT_ITS_KEY))
def test_a_new_image_without_the_records_key_is_a_decode_error_naming_it(name: str) -> None:
    """A put writes the new image: one without the record's key would be refused by the
    destination ("Missing the key sk in the item") as if its key schema were not the
    source's, and the worker would stop on it. It is the record that is at fault."""
    image, attribute, verdict = IMAGE_WITHOUT_ITS_KEY[name]
    record = daemon_record(stream_record("INSERT", KEYS, image, seq=31), 31)
    with pytest.raises(RecordDecodeError) as caught:
        Reader(ChangeFilter(None, "", skip_ttl_deletes=False)).read(record)
    assert str(caught.value).startswith(f"record 31: key attribute {attribute} ")
    assert verdict in str(caught.value)


@pytest.mark.parametrize(
    ("keys", "image"),
    [
        (KEYS, {**KEYS, "v": {"S": "x"}}),
        (KEYS, {"v": {"S": "x"}, "sk": {"N": "1.0"}, "pk": {"S": "a"}}),  # number spelt apart
        ({"n": {"N": "1E+2"}}, {"n": {"N": "100"}}),
        ({"pk": {"B": "AAE="}}, {"pk": {"B": "AAE="}, "v": {"B": "AQ=="}}),
        (KEYS, {**KEYS, "deep": _deep({"S": "x"})}),
        (
            {"n": {"N": "1E+2"}, "b": {"B": "AAE="}},
            {"n": {"N": "100"}, "b": {"B": "AAE="}, "deep": _deep({"N": "1"})},
        ),
    ],
)
def test_a_new_image_holding_the_records_key_passes_the_check(
    keys: dict[str, Any], image: dict[str, Any]
) -> None:
    record = daemon_record(stream_record("MODIFY", keys, image, seq=32), 32)
    change = Reader(ChangeFilter(None, "", skip_ttl_deletes=False)).decode(record)
    assert change.new_image == item_from_wire(image)


def test_the_key_check_holds_on_both_ways_an_image_is_checked() -> None:
    """Image.check decodes the image in msgspec, and falls back to the reference check
    for an image nested deeper than its one-key check follows (or malformed): the
    record's key is checked on either way."""
    key = key_id(item_from_wire({"pk": {"B": "AAE="}, "n": {"N": "1"}}))
    for extra in ({}, {"deep": _deep({"S": "x"})}):
        image = Image(json.dumps({"pk": {"B": "AAE="}, "n": {"N": "1.00"}, **extra}).encode())
        image.check(key=key)
        assert (image._item is not None) is bool(extra)  # the reference check ran
        for wrong, reason in (
            ({"n": {"N": "1"}}, "key attribute pk (in the record's Keys) is missing"),
            ({"pk": {"B": "AAI="}, "n": {"N": "1"}}, "key attribute pk differs"),
            ({"pk": {"S": "AAE="}, "n": {"N": "1"}}, "key attribute pk differs"),
            ({"pk": {"B": "AAE="}, "n": {"N": "-1"}}, "key attribute n differs"),
        ):
            with pytest.raises(MalformedImage, match=re.escape(reason)):
                Image(json.dumps({**wrong, **extra}).encode()).check(key=key)


def test_a_sequence_number_of_digits_int_refuses_is_a_malformed_record() -> None:
    """``"²"`` passes ``str.isdigit`` but not ``int``: the reason given is that, even for
    a record that has no creation time either."""
    record = {"eventName": "REMOVE", "dynamodb": {"Keys": {"pk": {"S": "a"}}}}
    raw = {
        "data": base64.b64encode(json.dumps(record).encode()).decode(),
        "sequenceNumber": "\u00b2",
        "subSequenceNumber": 0,
        "partitionKey": "p",
        "approximateArrivalTimestamp": None,
    }
    with pytest.raises(RecordDecodeError, match=r"record ²: malformed stream record \(ValueError"):
        decode(raw)  # type: ignore[arg-type]


def test_a_binary_key_moto_encoded_twice_is_read_as_the_image_has_it() -> None:
    """moto writes a binary key in Keys base64-encoded twice, its images once."""
    once = base64.b64encode(b"\xff\xfe\x00").decode()
    twice = {"pk": {"B": base64.b64encode(once.encode()).decode()}}
    image = {"pk": {"B": once}, "n": {"N": "1"}}
    put = decode(daemon_record(stream_record("INSERT", twice, image, seq=1), 1))
    delete = decode(daemon_record(stream_record("REMOVE", twice, None, image, seq=2), 2))
    assert put.keys == delete.keys == {"pk": {"B": b"\xff\xfe\x00"}}
    assert put.key == delete.key


def test_a_binary_key_that_differs_from_the_image_otherwise_is_refused() -> None:
    keys = {"pk": {"B": base64.b64encode(b"other").decode()}}
    image = {"pk": {"B": base64.b64encode(b"\xff\xfe\x00").decode()}}
    record = daemon_record(stream_record("INSERT", keys, image, seq=1), 1)
    with pytest.raises(RecordDecodeError, match="key attribute pk differs"):
        decode(record, check_new_image=True)


def _moto_binary_key(key: bytes) -> tuple[dict[str, Any], dict[str, Any]]:
    """A record's Keys as moto writes a binary key (base64-encoded twice), and an image."""
    once = base64.b64encode(key).decode()
    return {"pk": {"B": base64.b64encode(once.encode()).decode()}}, {"pk": {"B": once}}


def test_an_imageless_delete_is_decoded_once_more_after_a_put_taught_the_stream() -> None:
    """A NEW_IMAGE stream's REMOVE has no image to compare its Keys with: the put before
    it, which has, taught that the stream encodes binary keys twice."""
    keys, image = _moto_binary_key(b"\xff\xfe\x00")
    stream_keys = StreamKeys()
    delete = daemon_record(stream_record("REMOVE", keys, None, None, seq=2), 2)
    assert decode(delete, stream_keys=stream_keys).keys == {
        "pk": {"B": base64.b64encode(b"\xff\xfe\x00")}
    }
    assert not stream_keys.encoded_twice  # an image-less record teaches nothing
    put = decode(
        daemon_record(stream_record("INSERT", keys, image, seq=1), 1), stream_keys=stream_keys
    )
    assert stream_keys.encoded_twice
    removed = decode(delete, stream_keys=stream_keys)
    assert removed.keys == put.keys == {"pk": {"B": b"\xff\xfe\x00"}}
    assert removed.key == put.key
    # Another key of the stream, never seen with an image, is read so too.
    other, _ = _moto_binary_key(b"\x80")
    record = daemon_record(stream_record("REMOVE", other, None, None, seq=3), 3)
    assert decode(record, stream_keys=stream_keys).keys == {"pk": {"B": b"\x80"}}


def test_a_delete_without_an_image_is_read_as_it_came_when_nothing_was_learned() -> None:
    keys, _ = _moto_binary_key(b"\x80")
    record = daemon_record(stream_record("REMOVE", keys, None, None, seq=1), 1)
    assert decode(record).keys == {"pk": {"B": b"gA=="}}
    assert decode(record, stream_keys=StreamKeys()).keys == {"pk": {"B": b"gA=="}}


def test_a_dynamodb_stream_whose_keys_are_the_images_never_reads_a_key_once_more() -> None:
    """DynamoDB writes Keys as the image holds them, also a key that is base64 text."""
    text = base64.b64encode(b"\x80")  # a real key that happens to be base64 text
    stream_keys = StreamKeys()
    for seq, key in enumerate([b"\xff\xfe\x00", text, b"plain"], start=1):
        wire = {"pk": {"B": base64.b64encode(key).decode()}}
        record = stream_record("INSERT", wire, {**wire, "n": {"N": "1"}}, seq=seq)
        assert decode(daemon_record(record, seq), stream_keys=stream_keys).keys == {
            "pk": {"B": key}
        }
    assert not stream_keys.encoded_twice
    wire = {"pk": {"B": base64.b64encode(text).decode()}}
    delete = daemon_record(stream_record("REMOVE", wire, None, None, seq=9), 9)
    assert decode(delete, stream_keys=stream_keys).keys == {"pk": {"B": text}}


def test_readers_given_one_stream_keys_share_what_it_learned() -> None:
    """The shards one process reads of a stream: one shard's put teaches another's delete."""
    stream_keys = StreamKeys()
    filters = ChangeFilter(None, "", skip_ttl_deletes=False)
    first, second = (
        Reader(filters, stream_keys=stream_keys),
        Reader(filters, stream_keys=stream_keys),
    )
    keys, image = _moto_binary_key(b"\xff\xfe\x00")
    first.decode(daemon_record(stream_record("MODIFY", keys, image, seq=1), 1))
    delete = daemon_record(stream_record("REMOVE", keys, None, None, seq=2), 2)
    assert second.decode(delete).keys == {"pk": {"B": b"\xff\xfe\x00"}}
    assert Reader(filters).decode(delete).keys != {"pk": {"B": b"\xff\xfe\x00"}}


def test_a_letters_keys_teach_the_encoding_only_where_they_are_the_records_read_once_more() -> None:
    """A redrive's letter keeps the keys the replicator read its record by: a delete read
    once more teaches; one read as it came, or a DynamoDB record, does not."""
    keys, _ = _moto_binary_key(b"\x80")
    delete = decode(daemon_record(stream_record("REMOVE", keys, None, None, seq=1), 1))
    stream_keys = StreamKeys()
    assert not stream_keys.taught_by(delete, {"pk": {"B": base64.b64encode(b"gA==").decode()}})
    assert not stream_keys.taught_by(delete, None)
    assert not stream_keys.taught_by(delete, {"pk": {"B": 7}})  # a letter edited by hand
    assert not stream_keys.encoded_twice
    assert stream_keys.taught_by(delete, {"pk": {"B": "gA=="}})
    assert stream_keys.encoded_twice
    record = daemon_record(stream_record("REMOVE", keys, None, None, seq=1), 1)
    assert decode(record, stream_keys=stream_keys).keys == {"pk": {"B": b"\x80"}}
