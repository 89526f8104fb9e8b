"""The conflict log's and the dead letters' targets: never one of the job's own tables or
files, never a FIFO queue nor a queue URL that is not one, and never a directory; each
refused by ``validate`` with exit 2, naming the key and what it clashes with."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from replicator.cli import cli
from replicator.config.loader import load_job, parse_job
from replicator.config.model import sqs_region
from replicator.exceptions import ConfigError
from tests.config.test_job_checks import _refused
from tests.support.cli import in_process, replicator, validate_in_process

JOB = (
    "task_name: shop\n"
    "source: {region: us-east-1, table: orders}\n"
    "destinations:\n"
    "  - {region: eu-west-1, table: orders-eu}\n"
)


@pytest.mark.parametrize(
    ("log", "clash"),
    [
        ("{kind: dynamodb, table: orders}", "'orders' in us-east-1, which is one of the job's "
         "own tables (the source table)"),
        ("{kind: dynamodb, table: orders-eu, region: eu-west-1}", "(the table of destinations[0])"),
        ("{kind: dynamodb, table: shop}", "'shop' in us-east-1, which is one of the job's own "
         "tables (its lease table, named task_name)"),
        ("{kind: dynamodb, table: '{task_name}'}", "(its lease table, named task_name)"),
        ("{kind: dynamodb, table: shop-watermark, region: eu-west-1}", "(its watermark table)"),
        ("{kind: dynamodb, table: shop-backfill}", "(its backfill table)"),
        ("{kind: dynamodb, table: '{task_name}-CoordinatorState'}", "(its CoordinatorState table)"),
    ],
)  # fmt: skip
def test_a_conflict_log_table_that_is_one_of_the_jobs_own_is_refused(
    tmp_path: Path, log: str, clash: str
) -> None:
    """`run` wrote the entries as items of the source table and turned its TTL on."""
    line = _refused(tmp_path, JOB + f"conflict_log: {log}\n", "conflict_log.table", clash)
    assert "give the conflict log a table of its own" in line


@pytest.mark.parametrize(
    "log",
    [
        "{kind: dynamodb}",
        # The same names in another region are other tables.
        "{kind: dynamodb, table: orders, region: eu-west-1}",
        "{kind: dynamodb, table: orders-eu}",
        "{kind: dynamodb, table: shop-watermark}",
    ],
)
def test_a_conflict_log_table_of_its_own_passes(log: str) -> None:
    parse_job(JOB + f"conflict_log: {log}\n", Path("job.yaml"))


def test_conflicts_refuses_a_log_that_is_the_source_table(tmp_path: Path) -> None:
    """It listed the application's items as unreadable entries, with exit 0."""
    path = tmp_path / "job.yaml"
    path.write_text(JOB + "conflict_log: {kind: dynamodb, table: orders}\n")
    result = CliRunner().invoke(cli, ["conflicts", "-c", str(path)])
    assert result.exit_code == 2, result.output
    assert "conflict_log.table (line 5): gives 'orders' in us-east-1" in result.stderr


@pytest.mark.parametrize(
    ("section", "what"), [("conflict_log", "conflict-log entry"), ("dead_letter", "dead letter")]
)
def test_a_fifo_queue_is_refused_naming_it(tmp_path: Path, section: str, what: str) -> None:
    """Every message went without a MessageGroupId: MissingParameter, entries dropped."""
    url = "https://sqs.us-east-1.amazonaws.com/123456789012/audit.fifo"
    line = _refused(
        tmp_path,
        JOB + f"{section}: {{kind: sqs, queue_url: '{url}'}}\n",
        f"{section}.queue_url",
        f"'{url}' is a FIFO queue",
        f"as each {what} is",
        "give a standard queue",
    )
    assert line.startswith(f"  {section}.queue_url (line 5)")


@pytest.mark.parametrize("section", ["conflict_log", "dead_letter"])
@pytest.mark.parametrize(
    "url",
    [
        "not a url",
        "orders-dlq",
        "arn:aws:sqs:us-east-1:123456789012:orders-dlq",
        "https://sqs.us-east-1.amazonaws.com/orders-dlq",
        "https://sqs.us-east-1.amazonaws.com/123456789012/orders dlq",
    ],
)
def test_a_queue_url_that_is_not_one_is_refused_naming_it(
    tmp_path: Path, section: str, url: str
) -> None:
    """It named no queue: the first dead letter stopped the worker (every conflict-log
    entry was dropped), after a start with only a warning."""
    line = _refused(
        tmp_path,
        JOB + f"{section}: {{kind: sqs, queue_url: '{url}', endpoint_url: 'http://127.0.0.1:9'}}\n",
        f"{section}.queue_url",
        f"{url!r} is not an SQS queue URL",
        "https://sqs.<region>.amazonaws.com/<account id, 12 digits>/<queue name>",
    )
    assert line.startswith(f"  {section}.queue_url (line 5)")


@pytest.mark.parametrize(
    "key",
    [
        "dead_letter.queue_url",
        "conflict_log.queue_url",
        "dead_letter.endpoint_url",
        "conflict_log.endpoint_url",
        "source.endpoint_url",
    ],
)
@pytest.mark.parametrize("userinfo", ["u:pw-secret@", "pw-secret@"])
def test_a_url_with_a_user_name_or_password_is_refused_alike_in_every_key(
    tmp_path: Path, key: str, userinfo: str
) -> None:
    """An endpoint_url with user info was refused, a queue_url with it taken (validate and
    run passed, the queue reached without them): every URL key refuses it with the same
    words, at its key, and the password is never printed."""
    section, name = key.split(".")
    endpoint = "http://127.0.0.1:9"
    url = f"{endpoint}/123456789012/audit"
    given = {"queue_url": url, "endpoint_url": endpoint}
    given[name] = given[name].replace("http://", f"http://{userinfo}")
    if section == "source":
        text = JOB.replace("table: orders}", f"table: orders, endpoint_url: '{given[name]}'}}")
    else:
        text = JOB + (
            f"{section}: {{kind: sqs, queue_url: '{given['queue_url']}', "
            f"endpoint_url: '{given['endpoint_url']}'}}\n"
        )
    path = tmp_path / "job.yaml"
    path.write_text(text)
    # run as a process of its own for the first case, in this process for the others: the
    # job file is refused before run does anything.
    first = (key, userinfo) == ("dead_letter.queue_url", "u:pw-secret@")
    ran = (replicator if first else in_process)("run", "--config", str(path))
    for result in (validate_in_process(path), ran):
        assert result.returncode == 2, result.stdout + result.stderr
        assert "pw-secret" not in result.stdout + result.stderr
        (line,) = [line for line in result.stderr.splitlines() if line.startswith(f"  {key} (")]
        assert "it must not carry a user name or password" in line


def test_a_standard_queue_passes() -> None:
    url = "https://sqs.us-east-1.amazonaws.com/123456789012/fifo-audit"
    letters = "https://sqs.us-east-1.amazonaws.com/123456789012/fifo-letters"
    job = parse_job(
        JOB + f"conflict_log: {{kind: sqs, queue_url: '{url}'}}\n"
        f"dead_letter: {{kind: sqs, queue_url: '{letters}'}}\n",
        Path("job.yaml"),
    ).job
    assert (job.conflict_log.queue_url, job.dead_letter.queue_url) == (url, letters)


@pytest.mark.parametrize(
    ("section", "what"), [("conflict_log", "the conflict log"), ("dead_letter", "dead letters")]
)
def test_a_queue_at_another_host_without_its_endpoint_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, section: str, what: str
) -> None:
    """A moto queue's URL without endpoint_url passed validate: the requests about it went
    to AWS's own SQS endpoint (run stopped later with 'cannot reach', conflicts exit 3).
    The section's endpoint_url, or an SQS endpoint botocore takes from its environment,
    makes the same URL right."""
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_SQS"):
        monkeypatch.delenv(name, raising=False)
    url = "http://127.0.0.1:9/123456789012/audit"
    text = JOB + f"{section}: {{kind: sqs, queue_url: '{url}', region: eu-west-1}}\n"
    line = _refused(
        tmp_path,
        text,
        f"{section}.queue_url",
        f"{url!r} is not at AWS's SQS host, and {section}.endpoint_url is not set",
        "every request about it would go to https://sqs.eu-west-1.amazonaws.com, AWS's own "
        "SQS endpoint in eu-west-1",
        f"give {section}.endpoint_url",
    )
    assert line.startswith(f"  {section}.queue_url (line 5)"), what
    with_endpoint = text.replace("region: eu-west-1}", "endpoint_url: 'http://127.0.0.1:9'}")
    assert parse_job(with_endpoint, Path("job.yaml")).job
    for name in ("AWS_ENDPOINT_URL_SQS", "AWS_ENDPOINT_URL"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")
        assert validate_in_process(tmp_path / "job.yaml").returncode == 0, name
        monkeypatch.delenv(name)


@pytest.mark.parametrize(
    ("url", "env", "refused"),
    [
        # AWS's endpoints, whatever their host form: any of them serves the queue.
        ("https://vpce-0abc-xyz.sqs.us-east-1.vpce.amazonaws.com/123456789012/q", {}, False),
        ("https://sqs-fips.us-east-1.amazonaws.com/123456789012/q", {}, False),
        ("https://sqs.cn-north-1.amazonaws.com.cn/123456789012/q", {}, False),
        # An emulator's queue, its requests sent to AWS's FIPS endpoint: refused.
        ("http://localhost:4566/000000000000/q", {"AWS_USE_FIPS_ENDPOINT": "true"}, True),
        # ... and reached where botocore's configuration sends SQS requests: taken.
        ("http://localhost:4566/000000000000/q", {"AWS_ENDPOINT_URL": "http://localhost:4566"},
         False),
        ("http://localhost:4566/000000000000/q",
         {"AWS_ENDPOINT_URL": "http://localhost:4566",
          "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS": "true"},
         True),
    ],
)  # fmt: skip
def test_a_queue_url_is_judged_by_where_the_sdk_sends_its_requests(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, url: str, env: dict[str, str], refused: bool
) -> None:
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_SQS", "AWS_USE_FIPS_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    path = tmp_path / "job.yaml"
    path.write_text(JOB + f"dead_letter: {{kind: sqs, queue_url: '{url}'}}\n")
    result = validate_in_process(path)
    assert result.returncode == (2 if refused else 0), result.stdout + result.stderr
    if refused:
        assert "dead_letter.queue_url (line 5)" in result.stderr
        assert "AWS's own SQS endpoint in us-east-1" in result.stderr


LOCAL = "http://127.0.0.1:9"


@pytest.mark.parametrize(
    ("letters", "log"),
    [
        (f"{{queue_url: '{LOCAL}/123456789012/audit', endpoint_url: '{LOCAL}'}}",
         f"{{queue_url: '{LOCAL}/123456789012/audit', endpoint_url: '{LOCAL}'}}"),
        # The endpoint's other spellings: the same server.
        (f"{{queue_url: '{LOCAL}/123456789012/audit', endpoint_url: '{LOCAL}'}}",
         f"{{queue_url: 'HTTP://127.0.0.1:9/123456789012/audit', endpoint_url: '{LOCAL}/', "
         "region: us-east-1}"),
        # AWS's hosts of one region's queues, the case of a host, its default port.
        ("{queue_url: 'https://sqs.us-east-1.amazonaws.com/123456789012/audit'}",
         "{queue_url: 'https://SQS.us-east-1.amazonaws.com:443/123456789012/audit'}"),
        ("{queue_url: 'https://sqs.eu-west-1.amazonaws.com/123456789012/audit'}",
         "{queue_url: 'https://eu-west-1.queue.amazonaws.com/123456789012/audit', "
         "region: eu-west-1}"),
        ("{queue_url: 'https://queue.amazonaws.com/123456789012/audit'}",
         "{queue_url: 'https://sqs.us-east-1.amazonaws.com/123456789012/audit'}"),
        # AWS's own SQS endpoint given as an endpoint_url is no endpoint in its region.
        ("{queue_url: 'https://sqs.us-east-1.amazonaws.com/123456789012/audit'}",
         "{queue_url: 'https://sqs.us-east-1.amazonaws.com/123456789012/audit', "
         "endpoint_url: 'https://sqs.us-east-1.amazonaws.com'}"),
        ("{queue_url: 'https://sqs.eu-west-1.amazonaws.com/123456789012/audit', "
         "endpoint_url: 'HTTPS://SQS.eu-west-1.amazonaws.com:443/'}",
         "{queue_url: 'https://sqs.eu-west-1.amazonaws.com/123456789012/audit'}"),
    ],
)  # fmt: skip
def test_one_queue_for_the_conflict_log_and_the_dead_letters_is_refused(
    tmp_path: Path, letters: str, log: str
) -> None:
    """Both were accepted: every redrive then exited 1 on the entries it read as
    unreadable letters, and conflicts warned about every letter."""
    text = (
        JOB
        + "dead_letter: " + letters.replace("{", "{kind: sqs, ", 1) + "\n"
        + "conflict_log: " + log.replace("{", "{kind: sqs, ", 1) + "\n"
    )  # fmt: skip
    line = _refused(
        tmp_path,
        text,
        "conflict_log.queue_url",
        "which is also the dead-letter queue (dead_letter.queue_url: ",
        "/123456789012/audit",
        "give the conflict log a queue of its own",
    )
    assert line.startswith("  conflict_log.queue_url (line 6)")
    for command in ("run", "redrive", "conflicts"):
        result = in_process(command, "--config", str(tmp_path / "job.yaml"))
        assert result.returncode == 2, command + result.stdout + result.stderr
        assert "which is also the dead-letter queue" in result.stderr


@pytest.mark.parametrize(
    "log",
    [
        "{queue_url: 'https://sqs.us-east-1.amazonaws.com/123456789012/audit-log'}",
        # The same account and name in another region, or another account: other queues.
        "{queue_url: 'https://sqs.eu-west-1.amazonaws.com/123456789012/audit'}",
        "{queue_url: 'https://sqs.us-east-1.amazonaws.com/210987654321/audit'}",
        f"{{queue_url: '{LOCAL}/123456789012/audit', endpoint_url: '{LOCAL}'}}",
        # AWS's SQS endpoint of another region, or on another port: another place.
        "{queue_url: 'https://sqs.us-east-1.amazonaws.com/123456789012/audit', "
        "region: eu-west-1, endpoint_url: 'https://sqs.eu-west-1.amazonaws.com'}",
        "{queue_url: 'https://sqs.us-east-1.amazonaws.com/123456789012/audit', "
        "endpoint_url: 'https://sqs.us-east-1.amazonaws.com:8443'}",
    ],
)
def test_queues_of_their_own_pass(log: str) -> None:
    letters = "https://sqs.us-east-1.amazonaws.com/123456789012/audit"
    parse_job(
        JOB
        + f"dead_letter: {{kind: sqs, queue_url: '{letters}'}}\n"
        + "conflict_log: "
        + log.replace("{", "{kind: sqs, ", 1)
        + "\n",
        Path("job.yaml"),
    )


def _problems(path: Path, text: str) -> str:
    path.write_text(text)
    with pytest.raises(ConfigError) as refused:
        load_job(path)
    return str(refused.value)


def test_a_conflict_log_in_the_dead_letter_file_is_refused(tmp_path: Path) -> None:
    """redrive would read the entries as unreadable letters."""
    path = tmp_path / "job.yaml"
    dead = tmp_path / "dead-letters" / "{task_name}.jsonl"
    line = _refused(
        tmp_path,
        JOB
        + f"dead_letter: {{path: '{dead}'}}\n"
        + f"conflict_log: {{kind: file, path: '{tmp_path}/./dead-letters/shop.jsonl'}}\n",
        "conflict_log.path",
        f"which is also the dead-letter file ('{tmp_path}/dead-letters/shop.jsonl')",
        "give the conflict log a file of its own",
    )
    assert line.startswith("  conflict_log.path (line 6)")
    assert path.exists()


def test_file_targets_are_compared_as_the_files_they_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Relative to the working directory, as run opens them, and through links."""
    monkeypatch.chdir(tmp_path)
    job = tmp_path / "job.yaml"
    said = _problems(
        job,
        JOB + "conflict_log: {kind: file, path: 'dead-letters/../dead-letters/shop.jsonl'}\n",
    )
    assert "conflict_log.path (line 5): gives 'dead-letters/../dead-letters/shop.jsonl', " in said
    said = _problems(
        job, JOB + f"conflict_log: {{kind: file, path: '{tmp_path}/dead-letters/shop.jsonl'}}\n"
    )
    assert "which is also the dead-letter file ('dead-letters/shop.jsonl')" in said
    (tmp_path / "real").mkdir()
    (tmp_path / "linked").symlink_to(tmp_path / "real")
    said = _problems(
        job,
        JOB
        + "dead_letter: {path: 'real/x.jsonl'}\n"
        + "conflict_log: {kind: file, path: 'linked/x.jsonl'}\n",
    )
    assert "conflict_log.path (line 6): gives 'linked/x.jsonl', which is also" in said
    (tmp_path / "real" / "y.jsonl").write_text("")
    os.link(tmp_path / "real" / "y.jsonl", tmp_path / "z.jsonl")
    said = _problems(
        job,
        JOB
        + "dead_letter: {path: 'real/y.jsonl'}\n"
        + "conflict_log: {kind: file, path: 'z.jsonl'}\n",
    )
    assert "conflict_log.path (line 6): gives 'z.jsonl', which is also" in said
    # Files of their own pass; so does a path of a kind that writes no file.
    load_job_text = (
        JOB
        + "conflict_log: {kind: file}\n"
        + "dead_letter: {kind: sqs, queue_url: 'https://queue.amazonaws.com/123456789012/q'}\n"
    )
    job.write_text(load_job_text)
    assert load_job(job).job.conflict_log.path == "conflicts/{task_name}.jsonl"


@pytest.mark.parametrize("section", ["dead_letter", "conflict_log"])
def test_a_file_target_that_is_the_job_file_is_refused(tmp_path: Path, section: str) -> None:
    path = tmp_path / "job.yaml"
    kind = "kind: file, " if section == "conflict_log" else ""
    _refused(
        tmp_path,
        JOB + f"{section}: {{{kind}path: '{path}'}}\n",
        f"{section}.path",
        "which is the job file itself",
    )


@pytest.mark.parametrize("section", ["dead_letter", "conflict_log"])
def test_validate_reports_a_file_target_that_is_a_directory(tmp_path: Path, section: str) -> None:
    """run and conflicts refused it (exit 2 or 3) while validate passed it."""
    directory = tmp_path / "logs"
    directory.mkdir()
    kind = "kind: file, " if section == "conflict_log" else ""
    what = "the conflict log" if section == "conflict_log" else "the dead-letter file"
    _refused(
        tmp_path,
        JOB + f"{section}: {{{kind}path: '{directory}'}}\n",
        f"{section}.path",
        f"{what} {directory} is a directory: {section}.path must name a file "
        f"(such as {directory}/{{task_name}}.jsonl)",
    )


@pytest.mark.parametrize("section", ["dead_letter", "conflict_log"])
@pytest.mark.parametrize("under", ["in-a-file.jsonl", "sub/in-a-file.jsonl"])
def test_validate_reports_a_file_target_whose_directory_would_be_made_in_a_file(
    tmp_path: Path, section: str, under: str
) -> None:
    """run refused it at start (exit 3) while validate passed it; nothing is created."""
    blocking = tmp_path / "afile"
    blocking.write_text("a file, not a directory")
    path = blocking / under
    kind = "kind: file, " if section == "conflict_log" else ""
    what = "the conflict log" if section == "conflict_log" else "the dead-letter file"
    _refused(
        tmp_path,
        JOB + f"{section}: {{{kind}path: '{path}'}}\n",
        f"{section}.path",
        f"{what} {path} cannot be written: {blocking} is a file, so the directory "
        f"{path.parent} cannot be created",
    )
    assert blocking.read_text() == "a file, not a directory"


def test_validate_reports_a_directory_with_the_other_problems(tmp_path: Path) -> None:
    path = tmp_path / "job.yaml"
    path.write_text(
        JOB + f"conflict_log: {{kind: file, path: '{tmp_path}'}}\nmetrics: {{port: 70000}}\n"
    )
    result = CliRunner().invoke(cli, ["validate", "-c", str(path)])
    assert result.exit_code == 2, result.output
    assert "2 problems in the job file" in result.stderr
    assert f"  conflict_log.path (line 5): the conflict log {tmp_path} is a directory" in (
        result.stderr
    )


@pytest.mark.parametrize(
    ("text", "key", "named"),
    [
        (  # the source table itself, reached through us-east-1's endpoint: was exit 0
            "source: {region: us-east-1, table: orders}\n"
            "destinations: [{region: eu-west-1, table: orders, "
            "endpoint_url: 'https://dynamodb.us-east-1.amazonaws.com'}]\n",
            "destinations[0].endpoint_url",
            "us-east-1",
        ),
        (
            "source: {region: us-east-1, table: orders}\n"
            "destinations: [{region: eu-west-1, table: orders, "
            "endpoint_url: 'https://dynamodb-fips.us-west-2.amazonaws.com'}]\n",
            "destinations[0].endpoint_url",
            "us-west-2",
        ),
        (  # another partition's domain
            "source: {region: us-east-1, table: orders}\n"
            "destinations: [{region: eu-west-1, table: orders, "
            "endpoint_url: 'https://dynamodb.us-iso-east-1.c2s.ic.gov'}]\n",
            "destinations[0].endpoint_url",
            "us-iso-east-1",
        ),
        (
            "source: {region: us-east-1, table: orders}\n"
            "destinations: [{region: eu-west-1, table: orders}]\n"
            "dead_letter: {kind: sqs, region: eu-west-1, endpoint_url: "
            "'https://sqs.us-east-1.amazonaws.com', "
            "queue_url: 'https://sqs.eu-west-1.amazonaws.com/123456789012/letters'}\n",
            "dead_letter.endpoint_url",
            "us-east-1",
        ),
        (  # no region of its own: the source's, which the message names
            "source: {region: us-east-1, table: orders}\n"
            "destinations: [{region: eu-west-1, table: orders}]\n"
            "conflict_log: {kind: dynamodb, "
            "endpoint_url: 'https://dynamodb.eu-west-1.amazonaws.com'}\n",
            "conflict_log.endpoint_url",
            "eu-west-1",
        ),
    ],
)
def test_an_aws_endpoint_of_another_region_than_its_section_is_refused(
    tmp_path: Path, text: str, key: str, named: str
) -> None:
    """AWS refuses every request signed for another region than its endpoint's: a run
    retried the refusals for minutes before it stopped (exit 3)."""
    line = _refused(tmp_path, text, key, f"it is AWS's endpoint in {named}, and the ")
    assert f"give region: {named}, or leave endpoint_url out" in line


def test_an_aws_endpoint_of_the_sections_own_region_is_taken(tmp_path: Path) -> None:
    path = tmp_path / "job.yaml"
    path.write_text(
        "source: {region: us-east-1, table: orders}\n"
        "destinations: [{region: us-west-2, table: orders, "
        "endpoint_url: 'https://dynamodb-fips.us-west-2.amazonaws.com'}, "
        "{region: eu-west-1, table: orders, "
        "endpoint_url: 'https://vpce-1a2b.dynamodb.eu-west-1.vpce.amazonaws.com'}, "
        # Other hosts under amazonaws.com may serve an emulator taking any region: an EC2
        # instance's public name, a load balancer's chosen name.
        "{region: us-east-1, table: copy, "
        "endpoint_url: 'http://ec2-3-250-1-2.eu-west-1.compute.amazonaws.com:8000'}, "
        "{region: eu-west-1, table: copy, "
        "endpoint_url: 'http://my-alb-1234567890.us-east-1.elb.amazonaws.com'}]\n"
    )
    result = validate_in_process(path)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("url", "region"),
    [
        ("https://sqs.eu-west-1.amazonaws.com/123456789012/q", "eu-west-1"),
        ("https://sqs-fips.us-gov-west-1.amazonaws.com/123456789012/q", "us-gov-west-1"),
        ("https://sqs.ap-south-1.api.aws/123456789012/q", "ap-south-1"),
        ("https://eu-central-1.queue.amazonaws.com/123456789012/q", "eu-central-1"),
        ("https://queue.amazonaws.com/123456789012/q", "us-east-1"),
        ("https://sqs.cn-north-1.amazonaws.com.cn/123456789012/q", "cn-north-1"),
        # Not a host that names a region: the source's.
        ("https://vpce-0abc-xyz.sqs.us-east-1.vpce.amazonaws.com/123456789012/q", "sa-east-1"),
    ],
)
@pytest.mark.parametrize("section", ["dead_letter", "conflict_log"])
def test_a_queue_is_reached_in_the_region_its_aws_url_names(
    section: str, url: str, region: str
) -> None:
    """A queue in another region than the source's, given without ``region``: its client
    was the source region's, and SQS answers about a queue only in its own region."""
    job = parse_job(
        "source: {region: sa-east-1, table: orders}\n"
        "destinations: [{region: eu-west-1, table: orders}]\n"
        f"{section}: {{kind: sqs, queue_url: '{url}'}}\n",
        Path("job.yaml"),
    ).job
    assert sqs_region(getattr(job, section), job.source.region) == region


@pytest.mark.parametrize(
    "url",
    [
        "https://dynamodb.us-east-1.amazonaws.com",
        "https://dynamodb-fips.us-east-1.amazonaws.com",
        "https://streams.dynamodb.us-east-1.amazonaws.com",
        "https://vpce-1a2b.dynamodb.us-east-1.vpce.amazonaws.com",
        "https://kinesis.us-east-1.amazonaws.com",
        "https://dynamodb.us-west-2.amazonaws.com",  # another region: no region would help
        "https://dynamodb.us-iso-east-1.c2s.ic.gov",  # another partition's domain
        "https://dynamodb.eu-central-1.api.aws",
    ],
)
def test_an_aws_service_endpoint_for_the_source_is_refused(tmp_path: Path, url: str) -> None:
    """The source's endpoint_url is used for DynamoDB and for its stream's service, which
    AWS serves at hosts of their own: an AWS endpoint of one service cannot serve the
    other (the stream reads, or the table and lease calls, would fail at run time)."""
    text = (
        f"source: {{region: us-east-1, table: orders, endpoint_url: '{url}'}}\n"
        "destinations: [{region: eu-west-1, table: orders}]\n"
    )
    line = _refused(tmp_path, text, "source.endpoint_url", "is AWS's endpoint of one service")
    assert "leave endpoint_url out to reach AWS's own endpoints" in line
    assert "AWS_USE_FIPS_ENDPOINT" in line and "give region" not in line


@pytest.mark.parametrize(
    "url",
    [
        "http://ec2-3-250-1-2.eu-west-1.compute.amazonaws.com:8000",  # an EC2 instance's
        "http://dynamodb.us-east-1.example.com:8000",  # a service's name, not AWS's domain
    ],
)
def test_an_emulator_under_an_aws_domain_is_taken_for_the_source(tmp_path: Path, url: str) -> None:
    path = tmp_path / "job.yaml"
    path.write_text(
        f"source: {{region: us-east-1, table: orders, endpoint_url: '{url}'}}\n"
        "destinations: [{region: eu-west-1, table: orders}]\n"
    )
    assert validate_in_process(path).returncode == 0
