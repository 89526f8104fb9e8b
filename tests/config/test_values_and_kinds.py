"""Values a job file could hold that ``validate`` passed and ``run`` then misread or
failed on: YAML 1.1 words as switches, malformed ``${...}`` references, empty strings,
options of another kind, a record limit above the stream's. Each is refused by
``validate`` (exit 2, one line naming the key)."""

from __future__ import annotations

from pathlib import Path

import pytest

from replicator.config import parse_job
from tests.config.test_config import MINIMAL
from tests.config.test_job_checks import _refused


@pytest.mark.parametrize("word", ["yes", "no", "on", "off", "Yes", "ON", "y", "n"])
def test_a_yaml_1_1_boolean_word_is_not_a_switch(tmp_path: Path, word: str) -> None:
    """PyYAML read ``enabled: yes`` as true (YAML 1.1); the same word from a ``${VAR}``
    was already refused. Now both are the text the switch refuses."""
    _refused(
        tmp_path,
        MINIMAL + f"metrics: {{enabled: {word}}}\n",
        "metrics.enabled",
        f"expected true or false, got {word!r}",
    )


@pytest.mark.parametrize("word", ["true", "True", "TRUE", "false", "False", "FALSE"])
def test_yaml_1_2_booleans_are_switches(word: str) -> None:
    job = parse_job(MINIMAL + f"watermark: {{enabled: {word}}}\n", Path("job.yaml")).job
    assert job.watermark.enabled is (word.lower() == "true")


def test_yes_no_on_off_elsewhere_stay_text() -> None:
    """A name or a key that happens to be one of YAML 1.1's boolean words is the word."""
    job = parse_job(
        "source: {region: us-east-1, table: yes}\n"
        "destinations: [{region: eu-west-1, table: off, name: on}]\n"
        "loop_prevention: {origin_attribute: n, origin_value: no}\n"
        "kcl: {extra_properties: {on: y}}\n",
        Path("job.yaml"),
    ).job
    assert job.source.table == "yes"
    assert job.destinations[0].table == "off"
    assert job.destinations[0].label == "on"
    assert (job.loop_prevention.origin_attribute, job.loop_prevention.origin_value) == ("n", "no")
    assert job.kcl.extra_properties == {"on": "y"}


@pytest.mark.parametrize(
    "reference", ["${DL_DIR-/tmp}", "${ DL_DIR }", "${DL_DIR:-${HOME}}", "${DL_DIR", "$DL_DIR"]
)
def test_a_malformed_variable_reference_is_refused(tmp_path: Path, reference: str) -> None:
    """These were kept as literal text (a directory named '${DL_DIR-'), with no error."""
    _refused(
        tmp_path,
        MINIMAL + f"dead_letter: {{path: '{reference}/dl.jsonl'}}\n",
        "dead_letter.path",
        "malformed variable reference",
        "${VAR:-default}",
    )


def test_well_formed_references_and_dollars_still_expand(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DL_DIR", "/var/dl")
    monkeypatch.delenv("DL_UNSET", raising=False)
    job = parse_job(
        MINIMAL + "dead_letter: {path: '${DL_DIR}/${DL_UNSET:-x}-$$1-a$1$.jsonl'}\n",
        Path("job.yaml"),
    ).job
    assert job.dead_letter.path == "/var/dl/x-$1-a$1$.jsonl"
