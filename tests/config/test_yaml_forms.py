"""YAML's own forms in a job file: anchors with the merge key ``<<`` mean what YAML says
(one destination's settings repeated in another), and a tag, which asks for an object a
safe loader does not make, is one line naming the file and line (exit 2), never a
traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from replicator.config import parse_job
from tests.support.cli import validate_in_process

MERGED = """\
source: {region: us-east-1, table: orders}
destinations:
  - &dr
    region: us-west-2
    table: orders
    name: dr-222
    role_arn: "arn:aws:iam::222222222222:role/replica-writer"
  - <<: *dr
    name: dr-333
    role_arn: "arn:aws:iam::333333333333:role/replica-writer"
  - <<: [{region: eu-west-1, name: eu}, *dr]
    conflict: {policy: version, version_attribute: v}
"""


def _validate(tmp_path: Path, text: str) -> tuple[int, str, str]:
    path = tmp_path / "job.yaml"
    path.write_text(text)
    result = validate_in_process(path)
    assert "Traceback" not in result.stderr
    return result.returncode, result.stdout, result.stderr


def test_a_merge_key_gives_the_anchors_keys_that_the_mapping_does_not_set(
    tmp_path: Path,
) -> None:
    code, out, err = _validate(tmp_path, MERGED)
    assert code == 0, err
    assert "dr-333: us-west-2/orders" in out
    assert "eu: eu-west-1/orders" in out
    destinations = parse_job(MERGED, Path("job.yaml")).job.destinations
    read = [d.model_dump(exclude_unset=True) for d in destinations]
    # One mapping merged: what PyYAML's own safe loader reads from the same text.
    assert read[:2] == yaml.safe_load(MERGED)["destinations"][:2]
    assert destinations[1].role_arn == "arn:aws:iam::333333333333:role/replica-writer"
    # Of a list of mappings, the earlier one's keys win (YAML's merge key type); PyYAML
    # 6.0.4 lets either win, depending on whether the two key strings are one object.
    assert read[2] == {
        "region": "eu-west-1",
        "name": "eu",
        "table": "orders",
        "role_arn": "arn:aws:iam::222222222222:role/replica-writer",
        "conflict": {"policy": "version", "version_attribute": "v"},
    }


def test_a_merged_key_that_is_wrong_is_reported_at_the_mapping_that_merges_it(
    tmp_path: Path,
) -> None:
    text = MERGED.replace("    name: dr-333\n", "    name: dr-333\n    name: again\n")
    text = text.replace("region: eu-west-1", "region: nowhere")
    code, _, err = _validate(tmp_path, text)
    assert code == 2
    assert "destinations[1].name (line 10): key appears twice" in err
    assert "destinations[2].region (line 12): expected an AWS region name" in err


def test_a_merge_key_of_text_is_refused_naming_its_line(tmp_path: Path) -> None:
    text = MERGED.replace("  - <<: *dr\n", "  - <<: text\n")
    code, _, err = _validate(tmp_path, text)
    assert code == 2
    assert "destinations[1].<< (line 8): the merge key << takes a mapping" in err


def test_an_alias_inside_its_own_anchor_is_refused(tmp_path: Path) -> None:
    text = "source: {region: us-east-1, table: orders}\ndestinations: &x [*x]\n"
    code, _, err = _validate(tmp_path, text)
    assert code == 2
    assert "destinations[0] (line 2): refers to itself" in err


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("!!python/name:os.system", "the tag !!python/name:os.system is not supported"),
        ("!!python/object/apply:os.system [id]", "the tag !!python/object/apply:os.system is"),
        ("!custom x", "the tag !custom is not supported"),
        ("!custom {a: 1}", "the tag !custom is not supported"),
        ("!!binary aGk=", "the tag !!binary is not supported"),
        ("!!int ten", "'ten' is not a valid int"),
        ("2026-13-45", "'2026-13-45' is not a valid timestamp"),
    ],
)
def test_a_tag_or_a_value_its_tag_cannot_read_is_one_line_naming_file_and_line(
    tmp_path: Path, value: str, says: str
) -> None:
    text = "source: {region: us-east-1, table: orders}\n" + f"task_name: {value}\n"
    text += "destinations: [{region: eu-west-1, table: orders}]\n"
    code, _, err = _validate(tmp_path, text)
    assert code == 2
    (line,) = err.splitlines()
    assert line.startswith(f"replicator: {tmp_path / 'job.yaml'}: line 2, column 12: {says}")


def test_the_tags_plain_yaml_writes_read_as_their_values(tmp_path: Path) -> None:
    text = "source: {region: us-east-1, table: !!str orders}\ntask_name: !!str 12345\n"
    text += "destinations: [{region: eu-west-1, table: orders}]\n"
    code, out, err = _validate(tmp_path, text)
    assert code == 0, err
    assert "task name:   12345\n" in out


def test_a_key_that_is_a_list_is_one_line_naming_its_line(tmp_path: Path) -> None:
    text = "source: {region: us-east-1, table: orders}\n? [a, !custom b]\n: 1\n"
    code, _, err = _validate(tmp_path, text)
    assert code == 2
    assert err == (
        f"replicator: {tmp_path / 'job.yaml'}: line 2, column 3: a key must be a word, "
        "not a list or mapping (a ? key)\n"
    )


def test_a_second_merge_key_in_one_mapping_is_a_key_that_appears_twice(tmp_path: Path) -> None:
    """YAML's keys are unique, ``<<`` too: the later merge would win without a word."""
    text = MERGED.replace("  - <<: *dr\n", "  - <<: *dr\n    <<: {region: eu-west-1}\n")
    code, _, err = _validate(tmp_path, text)
    assert code == 2
    assert err == (
        f"replicator: {tmp_path / 'job.yaml'}: 1 problem in the job file:\n"
        "  destinations[1].<< (line 9): key appears twice\n"
    ), err


def test_a_bare_equals_sign_is_the_text_it_looks_like(tmp_path: Path) -> None:
    """YAML 1.1's value key (``=``) is no type of YAML 1.2, which reads ``=`` as text:
    no one writing ``a: =`` wrote a tag, so none is refused."""
    text = "source: {region: us-east-1, table: orders}\n"
    text += "destinations: [{region: eu-west-1, table: orders}]\n"
    text += "kcl: {extra_properties: {userAgentSuffix: =}}\n"
    job = parse_job(text, tmp_path / "job.yaml").job
    assert job.kcl.extra_properties == {"userAgentSuffix": "="}
