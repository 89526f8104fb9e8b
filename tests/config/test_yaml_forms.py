"""YAML's own forms in a job file: anchors with the merge key ``<<`` mean what YAML says
(one destination's settings repeated in another), and a tag, which asks for an object a
safe loader does not make, is one line naming the file and line (exit 2), never a
traceback."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import pytest
import yaml

from replicator.config.loader import _Document, parse_job
from tests.config.test_config import MINIMAL
from tests.support.cli import in_process, replicator, validate_in_process

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


def test_a_key_given_twice_on_one_line_is_placed_by_its_columns(tmp_path: Path) -> None:
    """``{table: a, table: b}``: "lines 1, 1" told the two apart by nothing."""
    text = MINIMAL.replace("table: orders}", "table: a, table: b}", 1)
    code, _, err = _validate(tmp_path, text)
    assert code == 2
    assert "source.table (line 2): key appears twice (line 2 column 29, line 2 column 39)" in err, (
        err
    )


def test_a_merged_key_that_is_wrong_is_reported_at_the_mapping_that_merges_it(
    tmp_path: Path,
) -> None:
    text = MERGED.replace("    name: dr-333\n", "    name: dr-333\n    name: again\n")
    text = text.replace("region: eu-west-1", "region: nowhere")
    code, _, err = _validate(tmp_path, text)
    assert code == 2
    assert "destinations[1].name (line 10): key appears twice (lines 9, 10)" in err
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


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (
            MERGED.replace("  - <<: *dr\n", "  - <<: *dr\n    <<: {region: eu-west-1}\n"),
            "destinations[1].<< (line 9): key appears twice (lines 8, 9)",
        ),
        (
            MERGED.replace("  - <<: *dr\n", "  - <<: *dr\n    <<: *dr\n    <<: *dr\n"),
            "destinations[1].<< (line 10): key appears 3 times (lines 8, 9, 10)",
        ),
        (
            "runtime: local\nruntime: kcl\nruntime: local\n" + MERGED,
            "runtime (line 3): key appears 3 times (lines 1, 2, 3)",
        ),
    ],
    ids=["merge key twice", "merge key 3 times", "key 3 times"],
)
def test_a_key_given_more_than_once_is_one_problem_naming_every_line(
    tmp_path: Path, text: str, problem: str
) -> None:
    """YAML's keys are unique, ``<<`` too: the last would win without a word. The
    problem's own line is that last one; the earlier ones are named too, once each."""
    code, _, err = _validate(tmp_path, text)
    assert code == 2
    assert err == (
        f"replicator: {tmp_path / 'job.yaml'}: 1 problem in the job file:\n  {problem}\n"
    ), err


def test_a_bare_equals_sign_is_the_text_it_looks_like(tmp_path: Path) -> None:
    """YAML 1.1's value key (``=``) is no type of YAML 1.2, which reads ``=`` as text:
    no one writing ``a: =`` wrote a tag, so none is refused."""
    text = "source: {region: us-east-1, table: orders}\n"
    text += "destinations: [{region: eu-west-1, table: orders}]\n"
    text += "kcl: {extra_properties: {userAgentSuffix: =}}\n"
    job = parse_job(text, tmp_path / "job.yaml").job
    assert job.kcl.extra_properties == {"userAgentSuffix": "="}


KCL_JOB = (
    "runtime: kcl\n"
    + MERGED.split("destinations:", maxsplit=1)[0]
    + ("destinations: [{region: eu-west-1, table: orders}]\n")
)


def _properties(tmp_path: Path, text: str) -> list[str]:
    """The lines of the KCL properties ``replicator properties`` renders for the job."""
    path = tmp_path / "job.yaml"
    path.write_text(text)
    result = in_process("properties", "--config", str(path))
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


@pytest.mark.parametrize(
    ("written", "value"),
    [("010", "10"), ("030000", "30000"), ("0o10", "8"), ("0x10", "16"), ("!!int 010", "10")],
)
def test_numbers_are_read_as_yaml_1_2_writes_them(tmp_path: Path, written: str, value: str) -> None:
    """YAML 1.1 read a leading zero as octal: 010 was 8, 030000 was 12288."""
    lines = _properties(
        tmp_path,
        KCL_JOB + f"kcl: {{extra_properties: {{maxLeasesForWorker: {written}}}}}\n",
    )
    assert f"maxLeasesForWorker = {value}" in lines


@pytest.mark.parametrize(
    ("metrics", "said"),
    [
        ("{port: 0, host: '::1'}", "metrics: on [::1], a port chosen at start (logged)"),
        ("{port: 0}", "metrics: on 0.0.0.0, a port chosen at start (logged)"),
        ("{enabled: false}", "metrics: off"),
        ("{port: 9555, host: '::1'}", "metrics: http://[::1]:9555/metrics"),
    ],
)
def test_validate_says_where_metrics_listen_without_an_address_nobody_can_reach(
    tmp_path: Path, metrics: str, said: str
) -> None:
    code, out, err = _validate(tmp_path, KCL_JOB + f"metrics: {metrics}\n")
    assert code == 0, err
    assert said in out.splitlines(), out


def test_a_number_with_a_leading_zero_is_that_decimal_number(tmp_path: Path) -> None:
    text = KCL_JOB + "metrics: {port: 010000}\nkcl: {failover_time_ms: 030000}\n"
    assert "failoverTimeMillis = 30000" in _properties(tmp_path, text)
    code, out, err = _validate(tmp_path, text)
    assert code == 0, err
    assert "metrics: http://0.0.0.0:10000/metrics" in out  # not 4096


@pytest.mark.parametrize(
    ("section", "key", "says"),
    [
        ("metrics: {port: 1_000}", "metrics.port", "expected a number, got '1_000'"),
        ("writer: {read_timeout_s: 1_0.5}", "writer.read_timeout_s", "got '1_0.5'"),
        ("kcl: {max_records: 1:30}", "kcl.max_records", "got '1:30'"),  # YAML 1.1: 90
        ("kcl: {max_records: 0b11}", "kcl.max_records", "got '0b11'"),  # YAML 1.1: 3
        (
            "kcl: {extra_properties: {maxLeasesForWorker: 1_000}}",
            "kcl.extra_properties.maxLeasesForWorker",
            "'1_000' is not a whole number",
        ),
    ],
)
def test_yaml_1_1_number_forms_are_text_that_a_number_refuses(
    tmp_path: Path, section: str, key: str, says: str
) -> None:
    path = tmp_path / "job.yaml"
    path.write_text(KCL_JOB + section + "\n")
    result = validate_in_process(path)
    assert result.returncode == 2, result.stdout
    assert "Traceback" not in result.stderr
    assert "1 problem in the job file" in result.stderr
    (line,) = [line for line in result.stderr.splitlines() if line.startswith(f"  {key} (line")]
    assert says in line


def _bomb(levels: int) -> list[str]:
    """A "billion laughs": each level a list of nine aliases of the level before."""
    names = "abcdefghij"[:levels]
    lines = ["a: &a [1, 2, 3, 4, 5, 6, 7, 8, 9]"]
    lines += [
        f"{name}: &{name} [" + ", ".join([f"*{before}"] * 9) + "]"
        for before, name in itertools.pairwise(names)
    ]
    return lines


@pytest.mark.parametrize("command", ["validate", "run"])
@pytest.mark.parametrize("under", ["", "kcl:\n  extra_properties:\n"])
def test_aliases_of_aliases_are_refused_naming_where(
    tmp_path: Path, command: str, under: str
) -> None:
    """Eight levels (600 bytes) were copied out into 1.5 GB and a minute or more; now the
    values aliases repeat are counted, and refused past a million."""
    indent = "    " if under else ""
    text = MERGED + under + "".join(f"{indent}{line}\n" for line in _bomb(8))
    path = tmp_path / "job.yaml"
    path.write_text(text)
    # Each command as a process of its own once (the bomb at the top), in this process for
    # the other: the file is refused as it is read.
    result = (in_process if under else replicator)(command, "--config", str(path))
    assert result.returncode == 2
    where = "kcl.extra_properties.g[0] (line 21)" if under else "g[0] (line 19)"
    assert result.stderr == (
        f"replicator: {path}: {where}: the anchors and aliases of the job file repeat more "
        "than 1,000,000 values by here (aliases of lists of aliases multiply at each level, "
        "as in a 'billion laughs' file); a job file repeats a few settings: write them out, "
        "or alias fewer levels\n"
    )


def test_an_alias_is_its_anchors_value_not_a_copy(tmp_path: Path) -> None:
    """Shared as YAML builds it: six levels (f holds some 600,000 values written out)
    cost what the file's text does, and a problem is still named at its own key and
    line."""
    text = "\n".join(_bomb(6)) + "\nsource: {region: *e}\n"
    document = _Document(text, tmp_path / "j.yaml")
    f = document.value["f"]
    assert all(item is f[0] for item in f)
    assert document.value["source"]["region"] is f[0]
    assert document.line_of(("source", "region")) == 7  # the alias, not the anchor
    assert document.line_of(("f", 3)) == 6  # *e in the list of f
    assert document.line_of(("f", 3, 2)) == 5  # *d in the list of e
    code, _, err = _validate(tmp_path, text)
    assert code == 2
    (line,) = [line for line in err.splitlines() if line.startswith("  source.region")]
    assert line.startswith("  source.region (line 7): expected text (got [[[")
    assert len(line) < 300  # a few items of two levels, not 66,430 values


def test_merge_keys_that_copy_more_than_a_million_values_are_refused(tmp_path: Path) -> None:
    """Each mapping merging the one before copies all its keys again: 2,000 lines, two
    million copies."""
    lines = ["m0: &m0 {k0: 0}"]
    lines += [f"m{i}: &m{i} {{<<: *m{i - 1}, k{i}: {i}}}" for i in range(1, 2000)]
    code, _, err = _validate(tmp_path, "\n".join(lines) + "\n")
    assert code == 2
    (line,) = err.splitlines()
    assert line.startswith(f"replicator: {tmp_path / 'job.yaml'}: m707 (line 708): ")
    assert "repeat more than 1,000,000 values" in line


@pytest.mark.parametrize("keys_at", ["kcl:\n  extra_properties:\n    ", ""])
def test_a_file_of_fifty_thousand_keys_is_read_whole(tmp_path: Path, keys_at: str) -> None:
    """Each key searched every line recorded before it: 20,000 keys took 84 s, 50,000
    about nine minutes (past this test's five); each key's work no longer grows with the
    keys before it, and the file takes seconds."""
    count = 50_000
    indent = keys_at.rsplit("\n", 1)[-1]
    keys = keys_at + f"\n{indent}".join(f"p{index}: {index}" for index in range(count))
    path = tmp_path / "job.yaml"
    path.write_text(KCL_JOB + keys + "\n")
    if keys_at:
        result = replicator("properties", "--config", str(path), timeout=300)
        assert result.returncode == 0, result.stderr
        written = [line for line in result.stdout.splitlines() if re.match(r"p[0-9]+ = ", line)]
        assert len(written) == count
        assert written[-1] == f"p{count - 1} = {count - 1}"
    else:
        result = replicator("validate", "--config", str(path), timeout=300)
        assert result.returncode == 2
        lines = result.stderr.splitlines()
        assert lines[0].endswith(f"{count} problems in the job file:")
        assert lines[-1] == f"  p{count - 1} (line {count + 3}): unknown key"


@pytest.mark.parametrize("brackets", [("[", "]"), ("{a: ", "}")])
def test_lists_nested_hundreds_deep_are_one_line_not_a_traceback(
    tmp_path: Path, brackets: tuple[str, str]
) -> None:
    opening, closing = brackets
    code, _, err = _validate(tmp_path, MERGED + "a: " + opening * 900 + closing * 900 + "\n")
    assert code == 2
    assert err == (
        f"replicator: {tmp_path / 'job.yaml'}: lists and mappings nested too deeply to read "
        "(hundreds of [ or { inside each other); a job file nests a few levels\n"
    )


def test_an_unquoted_variable_inside_braces_is_a_syntax_error_that_says_to_quote_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Flow style ends a value at { and }: ``{table: ${TABLE}}`` does not parse, and the
    error alone ("did not find expected ',' or '}'") does not say why."""
    monkeypatch.setenv("SRC_TABLE", "orders")
    text = "destinations: [{region: eu-west-1, table: orders}]\n"
    code, _, err = _validate(tmp_path, "source: {region: us-east-1, table: ${SRC_TABLE}}\n" + text)
    assert code == 2
    (line,) = err.splitlines()
    assert line.startswith(f"replicator: {tmp_path / 'job.yaml'}: YAML syntax error at line 1")
    hint = (
        '; a ${VAR} inside { } or [ ] must be quoted (table: "${TABLE}"): in YAML\'s flow '
        "style { and } end a value"
    )
    assert line.endswith(hint)
    # A mapping over two lines: the variable is on the line the error is found on.
    code, _, err = _validate(
        tmp_path, "source: {region: us-east-1,\n  table: ${SRC_TABLE}}\n" + text
    )
    assert code == 2 and err.strip().endswith(hint), err
    quoted = 'source: {region: us-east-1, table: "${SRC_TABLE}"}\n' + text
    assert _validate(tmp_path, quoted)[0] == 0
    code, _, err = _validate(tmp_path, "source: {region: us-east-1, table: orders\n" + text)
    assert code == 2 and "must be quoted" not in err  # a brace left open, no variable
    code, _, err = _validate(
        tmp_path, 'source: {region: us-east-1, table: "${SRC_TABLE}", x: [}\n' + text
    )
    assert code == 2 and "must be quoted" not in err  # quoted already: another mistake
