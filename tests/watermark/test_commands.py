"""``replicator wait`` and ``replicator watermark`` as a script runs them: options given
twice, a poll interval too long to sleep, a status table that throttles or never answers,
a destination with no parts, and a wait stopped by a signal; each asserted by its exit
code and its message."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from replicator.cli import cli
from replicator.watermark.commands import SHOW_TIMEOUT_S
from replicator.watermark.table import StatusTable
from tests.support import ROOT
from tests.support.aws import client
from tests.support.cli import in_process, replicator, replicator_into_a_pipe_nobody_reads
from tests.support.faults.proxy import FaultProxy
from tests.support.silent import SilentEndpoint, run_from_first_read

S = 1_000_000
T0 = 1_700_000_000 * S
SLACK_S = 15.0  # as in test_wait: far above a bounded command, far below an unbounded one


REFUSED = "http://127.0.0.1:1"  # nothing listens: a connection to it is refused at once


def job_file(tmp_path: Path, task: str, endpoint: str, source: str = REFUSED) -> Path:
    """A job whose destinations are at ``endpoint``. Both commands first read the
    task's owner tag at the ``source``'s endpoint (ownership.check_reader), which by
    default refuses the connection, leaving that check undone at once: each test meets
    the stage it is about, the status tables' reads."""
    path = tmp_path / "job.yaml"
    path.write_text(
        f"task_name: {task}\n"
        f"source: {{region: us-east-1, table: src, endpoint_url: '{source}'}}\n"
        "destinations:\n"
        f"  - {{region: eu-west-1, table: replica, endpoint_url: '{endpoint}'}}\n"
        f"  - {{region: ap-southeast-2, table: replica, endpoint_url: '{endpoint}'}}\n"
    )
    return path


# -- refused before anything is read ------------------------------------------------------------

EU = "eu-west-1/replica"
AP = "ap-southeast-2/replica"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["wait", "-d", EU, "-d", AP, "--until", "1", "--timeout", "0"],
            "--destination given 2 times; replicator wait takes one: run it once for each "
            "destination (joined with && to wait for all)",
        ),
        (
            ["wait", "-d", EU, "--destination", AP, "--until", "1", "--timeout", "0"],
            "--destination given 2 times",
        ),
        (
            ["wait", "-d", EU, "--until", "99999", "--until", "1", "--timeout", "0"],
            "--until given 2 times; replicator wait takes one: the last would be used",
        ),
        (
            ["wait", "-d", EU, "--until", "1", "--timeout", "0", "--timeout=5"],
            "--timeout given 2 times",
        ),
        (
            ["wait", "-d", EU, "--until", "1", "--timeout", "0", "--poll", "1", "--poll", "2"],
            "--poll given 2 times",
        ),
        (
            ["watermark", "-d", EU, "-d", AP],
            "--destination given 2 times; replicator watermark takes one: leave it out to "
            "show every destination",
        ),
        # Every command takes an option of one value once (the job file above all).
        (
            ["run", "-c", "other.yaml"],
            "--config given 2 times; replicator run takes one: the last would be used",
        ),
        (["validate", "--config", "other.yaml"], "--config given 2 times"),
        (["verify", "--sample", "3", "--sample", "4"], "--sample given 2 times"),
        (["backfill", "--read-rate", "1", "--read-rate", "2"], "--read-rate given 2 times"),
        (
            # A poll whose sleep overflowed (OverflowError) with no timeout to cut it short.
            ["wait", "-d", EU, "--until", "99999999999", "--timeout", "inf", "--poll", "1e12"],
            "'--poll': 1000000000000.0 is more than 3600 seconds between reads",
        ),
        # A poll so short that it reads as fast as the table answers: refused as by the API.
        (
            ["wait", "-d", EU, "--until", "1", "--timeout", "0", "--poll", "0.001"],
            "'--poll': 0.001 is less than 0.01 seconds between reads",
        ),
        (["wait", "-d", EU, "--until", "1", "--timeout", "0", "--poll", "-1"], "-1.0 is less"),
        # Numbers are ASCII digits without Python's grouping, as --until takes them.
        (
            ["wait", "-d", EU, "--until", "1", "--timeout", "1_0"],
            "'--timeout': '1_0' is not a valid number.",
        ),
        (
            ["wait", "-d", EU, "--until", "1", "--timeout", "0", "--poll", "\u0661"],
            "'--poll': '\u0661' is not a valid number.",
        ),
        (["verify", "--sample", "1_0"], "'--sample': '1_0' is not a valid whole number."),
    ],
)
def test_an_option_given_twice_or_a_poll_out_of_its_bounds_is_refused_with_exit_2(
    tmp_path: Path, args: list[str], message: str
) -> None:
    path = job_file(tmp_path, "wm-twice", "http://127.0.0.1:1")  # never read
    result = CliRunner().invoke(
        cli, [args[0], "--config", str(path), *args[1:]], prog_name="replicator"
    )
    assert result.exit_code == 2, result.output
    assert message in result.stderr, result.stderr
    assert result.exception is None or isinstance(result.exception, SystemExit)


def refused_time(tmp_path: Path, option: str, value: str) -> str:
    """``wait`` given ``value`` for ``option``: refused with exit 2; its message on one line."""
    path = job_file(tmp_path, "wm-time", "http://127.0.0.1:1")  # never read
    times = {"--until": "1", "--since": "1", option: value}
    result = CliRunner().invoke(
        cli,
        ["wait", "--config", str(path), "-d", EU, "--timeout", "0"]
        + [arg for pair in times.items() for arg in pair],
        prog_name="replicator",
    )
    assert result.exit_code == 2, result.output
    said = " ".join(result.stderr.split())
    return said


@pytest.mark.parametrize("option", ["--until", "--since"])
@pytest.mark.parametrize(
    ("value", "hint"),
    [
        ("2026-12-01x17:00:00Z", "; separate the date and the time with a capital T"),
        ("2026-12-01 17:00:00Z", "; separate the date and the time with a capital T"),
        ("2026-12-01t17:00:00Z", "; write T and Z in capitals: '2026-12-01T17:00:00Z'"),
        ("20261201T170000Z", ""),
        ("2026-W49-2T17:00:00Z", ""),
        (
            "2026-12-05T00:00:00+25:00",
            "; the zone offset +25:00 is not one: hours 00-23, minutes 00-59",
        ),
        ("1_767_225_600", ""),  # Python's digit grouping, which float() takes
        ("\u0661\u0662", ""),  # digits of another script, which float() takes too
    ],
)
def test_wait_takes_only_the_iso_times_the_docs_name(
    tmp_path: Path, option: str, value: str, hint: str
) -> None:
    """Python 3.11's fromisoformat took any character between date and time, as for
    conflicts --since."""
    said = refused_time(tmp_path, option, value)
    assert (
        f"{option} {value!r}: expected epoch seconds (such as 1767225600.25) or an ISO 8601 "
        "time with a zone (YYYY-MM-DDThh:mm[:ss[.fraction]] with Z, +hh:mm or -hh:mm, such as "
        f"2026-01-01T00:00:00.250Z){hint}" in said
    ), said


@pytest.mark.parametrize("option", ["--until", "--since"])
@pytest.mark.parametrize(
    ("value", "meant"),
    [
        ("2026-12-01", "2026-12-01T00:00Z"),
        ("2026-12-01Z", "2026-12-01T00:00Z"),  # was refused with the message for any text
        ("2026-12-01+02:00", "2026-12-01T00:00+02:00"),
    ],
)
def test_a_date_alone_is_told_that_a_time_with_a_zone_is_required(
    tmp_path: Path, option: str, value: str, meant: str
) -> None:
    said = refused_time(tmp_path, option, value)
    assert (
        f"{option} {value!r}: a date alone is not a time; a time with a zone is required, "
        f"such as {meant}" in said
    ), said


@pytest.mark.parametrize(
    "command", [["watermark"], ["watermark", "--json"], ["wait", "--until", "1", "--timeout", "0"]]
)
def test_an_empty_destination_is_refused_by_both_commands(
    tmp_path: Path, command: list[str]
) -> None:
    """``watermark -d ""`` showed every destination and exited 0."""
    path = job_file(tmp_path, "wm-empty", "http://127.0.0.1:1")  # never read
    result = CliRunner().invoke(
        cli, [command[0], "--config", str(path), "-d", "", *command[1:]], prog_name="replicator"
    )
    assert result.exit_code == 2, result.output
    assert "--destination '': no destination of " in result.stderr, result.stderr
    assert result.stdout == ""


# -- a status table that throttles -----------------------------------------------------------


@pytest.fixture
def throttled(
    moto_endpoint: str, unique: Callable[[str], str], tmp_path: Path
) -> tuple[Path, FaultProxy]:
    """A job whose destinations' status table is behind a fault proxy that throttles every
    request; its eu-west-1/replica part stands at T0."""
    task = unique("wm-throttled")
    ddb = client("dynamodb", "eu-west-1", moto_endpoint)
    table = StatusTable(ddb, f"{task}-watermark", EU)
    table.ensure_exists()
    table.raise_part("s1", T0, "test:1")
    proxy = FaultProxy(moto_endpoint).start()
    proxy.throttle(1.0, "ThrottlingException")
    return job_file(tmp_path, task, proxy.url), proxy


def test_the_wait_command_retries_a_throttled_status_table_and_exits_0_once_it_answers(
    throttled: tuple[Path, FaultProxy],
) -> None:
    path, proxy = throttled
    try:
        waiting = subprocess.Popen(
            [
                *(sys.executable, "-m", "replicator", "wait", "--config", str(path)),
                *("-d", EU, "--until", str(T0 // S), "--timeout", "60", "--poll", "0.05"),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 60
        while proxy.counts("Query")["throttled"] < 4:  # several reads, each throttled
            assert waiting.poll() is None, waiting.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.05)
        proxy.pass_through()
        out, err = waiting.communicate(timeout=120)
    finally:
        proxy.stop()
    assert waiting.returncode == 0, (out, err)
    assert f"{EU} until " in out and ": replicated: watermark" in out, out
    assert err == "", err


def test_the_wait_command_times_out_with_exit_1_on_a_table_throttled_throughout(
    throttled: tuple[Path, FaultProxy],
) -> None:
    path, proxy = throttled
    try:
        result = replicator(
            "wait", "--config", str(path), "-d", EU, "--until", str(T0 // S),
            "--timeout", "2",
        )  # fmt: skip
    finally:
        proxy.stop()
    assert result.returncode == 1, result
    assert "answered ThrottlingException" in result.stderr, result.stderr
    assert "retried until the timeout" in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert proxy.counts("Query")["throttled"] >= 2


@pytest.mark.parametrize(
    ("fault", "says"),
    [
        ("reset", "Connection was closed before we received a valid response"),
        ("garbage", "Query answered HTTP 200 with a body that is not a well-formed answer"),
    ],
)
def test_the_wait_command_names_why_every_read_failed_not_a_hang(
    throttled: tuple[Path, FaultProxy], fault: str, says: str
) -> None:
    """Exit 3, as for a table that cannot be read, with the failure ``replicator
    watermark`` names for it: the line said the endpoint "hangs" and did not answer."""
    path, proxy = throttled
    try:
        if fault == "reset":
            proxy.resets(1.0)
        else:
            proxy.garbage()
        # In this process (a process start costs about a second of CPU): it returns by
        # itself and is judged by its exit status and message. The wait on a table
        # throttled throughout runs as a process of its own, as do the signalled ones.
        result = in_process(
            "wait", "--config", str(path), "-d", EU, "--until", str(T0 // S),
            "--timeout", "2", "--poll", "0.05",
        )  # fmt: skip
    finally:
        proxy.stop()
    err = result.stderr
    assert result.returncode == 3, result
    assert proxy.counts("Query")[fault] >= 2
    assert err.startswith("replicator: status table wm-throttled"), err
    assert says in err and f"at {proxy.url}" in err, err
    assert "hangs" not in err and "did not answer" not in err, err
    assert len(err.strip().splitlines()) == 1, err


# -- replicator watermark --------------------------------------------------------------------


def test_the_watermark_command_is_bounded_when_the_status_table_never_answers(
    silent: SilentEndpoint, tmp_path: Path
) -> None:
    """It took 31 s (the client's connect and read timeouts, three attempts) per
    destination; now both destinations' reads are bounded together."""
    path = job_file(tmp_path, "wm-silent-show", silent.url)
    shown = run_from_first_read(silent, ["watermark", "--config", str(path)])
    err = shown.stderr
    assert shown.returncode == 3, err
    assert shown.took_s < SHOW_TIMEOUT_S + SLACK_S, shown.took_s
    assert err.startswith("replicator: status table wm-silent-show-watermark"), err
    assert f"did not answer at {silent.url} in {SHOW_TIMEOUT_S:g}s" in err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err


def test_a_destination_with_no_parts_is_told_as_such(
    moto_endpoint: str, unique: Callable[[str], str], tmp_path: Path
) -> None:
    task = unique("wm-noparts")
    ddb = client("dynamodb", "eu-west-1", moto_endpoint)
    StatusTable(ddb, f"{task}-watermark", "eu-west-1/other").ensure_exists()
    path = job_file(tmp_path, task, moto_endpoint)
    result = CliRunner().invoke(cli, ["watermark", "--config", str(path), "-d", EU])
    assert result.exit_code == 1, result.output
    assert (
        "  watermark: none yet (no shard has published for this destination: its replicator "
        "has not started publishing, or the job's label for it is not the one it publishes "
        "under)"
    ) in result.stdout, result.stdout
    assert "waiting for no shard" not in result.stdout


def test_a_registered_shard_that_has_not_published_is_named(
    moto_endpoint: str, unique: Callable[[str], str], tmp_path: Path
) -> None:
    task = unique("wm-unknown")
    ddb = client("dynamodb", "eu-west-1", moto_endpoint)
    table = StatusTable(ddb, f"{task}-watermark", EU)
    table.ensure_exists()
    table.raise_part("s1", T0, "test:1")
    table.raise_part("s2", 0, "test:1")  # registered, nothing known yet
    path = job_file(tmp_path, task, moto_endpoint)
    result = CliRunner().invoke(cli, ["watermark", "--config", str(path), "-d", EU])
    assert result.exit_code == 1, result.output
    assert "  watermark: none yet (shards s2 have not published yet)" in result.stdout, (
        result.stdout
    )


def test_the_report_says_when_no_part_was_published_for_a_minute(
    moto_endpoint: str, unique: Callable[[str], str], tmp_path: Path
) -> None:
    """A stopped job's watermark stands; ``watermark`` says, as ``wait`` does, that no
    part was published lately, instead of a time that reads as a slow replication."""
    task = unique("wm-stale")
    ddb = client("dynamodb", "eu-west-1", moto_endpoint)
    table = StatusTable(ddb, f"{task}-watermark", EU)
    table.ensure_exists()
    table.raise_part("s1", T0, "test:1")
    path = job_file(tmp_path, task, moto_endpoint)
    fresh = CliRunner().invoke(cli, ["watermark", "--config", str(path), "-d", EU])
    assert fresh.exit_code == 0, fresh.output
    assert "published:" not in fresh.stdout, fresh.stdout
    ddb.update_item(
        TableName=table.name,
        Key={"destination": {"S": EU}, "shard": {"S": "s1"}},
        UpdateExpression="SET updated_at = :t",
        ExpressionAttributeValues={":t": {"N": str(time.time() - 600)}},
    )
    stale = CliRunner().invoke(cli, ["watermark", "--config", str(path), "-d", EU])
    assert stale.exit_code == 0, stale.output
    (line,) = [line for line in stale.stdout.splitlines() if line.startswith("  published:")]
    # A job that publishes every 5 minutes is not taken for stopped after 10.
    slow = path.with_name("slow.yaml")
    slow.write_text(path.read_text() + "watermark: {publish_interval_ms: 300000}\n")
    patient = CliRunner().invoke(cli, ["watermark", "--config", str(slow), "-d", EU])
    assert patient.exit_code == 0 and "published:" not in patient.stdout, patient.output
    # 600 s and the moments the command took (a loaded host's seconds among them)
    assert re.match(
        r"  published: no shard's part of it was published in the last 6\d\ds: is the job "
        "running[?]",
        line,
    ), line


def test_a_status_table_that_cannot_be_read_hides_no_other_destination(
    moto_endpoint: str, unique: Callable[[str], str], tmp_path: Path
) -> None:
    """One destination's status table out of reach (its role not assumed, its endpoint
    refusing): ``watermark`` printed nothing at all, not even the destinations it had
    read. They are shown; the command then ends naming the one it could not read."""
    task = unique("wm-partial")
    table = StatusTable(client("dynamodb", "eu-west-1", moto_endpoint), f"{task}-watermark", EU)
    table.ensure_exists()
    table.raise_part("s1", T0, "test:1")
    path = job_file(tmp_path, task, moto_endpoint)
    path.write_text(
        path.read_text().replace(
            f"ap-southeast-2, table: replica, endpoint_url: '{moto_endpoint}'",
            f"ap-southeast-2, table: replica, endpoint_url: '{REFUSED}'",
        )
    )
    text = CliRunner().invoke(cli, ["watermark", "--config", str(path)])
    assert text.exit_code == 3, text.output
    assert f"{EU}: status table {task}-watermark in eu-west-1" in text.stdout, text.stdout
    assert AP not in text.stdout, text.stdout
    assert f"status table {task}-watermark" in text.stderr and REFUSED in text.stderr, text.stderr
    as_json = CliRunner().invoke(cli, ["watermark", "--config", str(path), "--json"])
    assert as_json.exit_code == 3, as_json.output
    eu, ap = json.loads(as_json.stdout)
    assert eu["watermark"] == T0 / S and "error" not in eu
    assert ap["watermark"] is None and REFUSED in ap["error"], ap


def _json_paragraph() -> str:
    """The paragraph of docs/watermark.md that describes ``replicator watermark``."""
    docs = (ROOT / "docs" / "watermark.md").read_text()
    start = docs.index("`replicator watermark --config JOB")
    return docs[start : docs.index("\n\n", start)]


def test_watermark_json_is_a_list_without_a_destination_and_its_object_with_one(
    moto_endpoint: str, unique: Callable[[str], str], tmp_path: Path
) -> None:
    """Both shapes, and every key either holds, are what the docs say."""
    task = unique("wm-json")
    table = StatusTable(client("dynamodb", "eu-west-1", moto_endpoint), f"{task}-watermark", EU)
    table.ensure_exists()
    table.raise_part("s1", T0, "test:1")
    path = job_file(tmp_path, task, moto_endpoint)
    every = CliRunner().invoke(cli, ["watermark", "--config", str(path), "--json"])
    assert every.exit_code == 1, every.output  # the ap-southeast-2 one has none yet
    listed = json.loads(every.stdout)
    assert [entry["destination"] for entry in listed] == [EU, AP]
    assert listed[0]["watermark"] == T0 / S and listed[1]["watermark"] is None
    one = CliRunner().invoke(cli, ["watermark", "--config", str(path), "-d", EU, "--json"])
    assert one.exit_code == 0, one.output
    assert json.loads(one.stdout) == listed[0]
    documented = _json_paragraph()
    assert "a list" in documented and "object alone" in documented, documented
    keys = set(listed[0]) | {key for part in listed[0]["shards"] for key in part}
    missing = sorted(key for key in keys if f"`{key}`" not in documented)
    assert not missing, f"--json keys not in docs/watermark.md: {missing}"


# -- stopped by a signal ---------------------------------------------------------------------


def _waiting_until_2026(path: Path) -> subprocess.Popen[str]:
    """``replicator wait`` for EU until 2026-01-01, started."""
    return subprocess.Popen(
        [
            *(sys.executable, "-m", "replicator", "wait", "--config", str(path)),
            *("-d", EU, "--until", "1767225600", "--timeout", "60"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.parametrize(
    ("sent", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143), (signal.SIGHUP, 129)]
)
def test_a_wait_stopped_by_a_signal_exits_128_plus_its_number_with_one_line(
    silent: SilentEndpoint, tmp_path: Path, sent: signal.Signals, code: int
) -> None:
    """Ctrl-C printed "Aborted!" and exited 1, the timeout's code: a script could not
    tell an interrupted wait from one that timed out."""
    path = job_file(tmp_path, "wm-stopped", silent.url)
    waiting = _waiting_until_2026(path)
    try:
        assert silent.connected.wait(60), "the wait never read"
        waiting.send_signal(sent)
        out, err = waiting.communicate(timeout=30)
    finally:
        if waiting.poll() is None:
            waiting.kill()
    assert waiting.returncode == code, (out, err)
    assert err == (
        f"replicator: {sent.name} received; stopped waiting for {EU} until "
        "2026-01-01T00:00:00.000000Z: not known to be replicated\n"
    )
    assert out == ""


def test_a_wait_sent_sigint_twice_at_once_exits_130_without_a_traceback(
    silent: SilentEndpoint, tmp_path: Path
) -> None:
    """coreutils' ``timeout`` (and a service manager) signals the process and then its
    process group: the second SIGINT met Python's own handler again, put back after the
    first, and sometimes printed a KeyboardInterrupt traceback from the interpreter's
    shutdown after the wait's line."""
    path = job_file(tmp_path, "wm-stopped-twice", silent.url)
    for _ in range(3):
        silent.connected.clear()
        waiting = _waiting_until_2026(path)
        try:
            assert silent.connected.wait(60), "the wait never read"
            waiting.send_signal(signal.SIGINT)
            waiting.send_signal(signal.SIGINT)
            out, err = waiting.communicate(timeout=30)
        finally:
            if waiting.poll() is None:
                waiting.kill()
        assert waiting.returncode == 130, (out, err)
        stopped = (
            f"replicator: SIGINT received; stopped waiting for {EU} until "
            "2026-01-01T00:00:00.000000Z: not known to be replicated"
        )
        noted = "replicator: SIGINT received as the command ends; its result stands"
        lines = err.splitlines()
        assert lines.count(stopped) == 1, err
        assert all(line in (stopped, noted) for line in lines), err
        assert out == ""


def test_the_watermark_command_stopped_by_sigint_exits_130_with_one_line(
    silent: SilentEndpoint, tmp_path: Path
) -> None:
    path = job_file(tmp_path, "wm-stopped-show", silent.url)
    shown = run_from_first_read(
        silent,
        ["watermark", "--config", str(path)],
        lambda running: running.send_signal(signal.SIGINT),
    )
    out, err = shown.stdout, shown.stderr
    assert shown.took_s < SHOW_TIMEOUT_S  # not held by the reads in flight
    assert shown.returncode == 130, (out, err)
    assert err == "replicator: SIGINT received; stopped before the watermark was read\n"
    assert out == ""


@pytest.mark.parametrize("command", ["watermark", "wait"])
def test_a_command_stopped_while_it_reads_the_owner_tag_exits_143_with_one_line(
    silent: SilentEndpoint, tmp_path: Path, command: str
) -> None:
    """The owner tag is read before the status tables, at the source's endpoint (here
    one that never answers): a stop meanwhile ends the command as during the reads."""
    path = job_file(tmp_path, "wm-stopped-tag", REFUSED, source=silent.url)
    args = ["-d", EU, "--until", "1767225600", "--timeout", "60"] if command == "wait" else []
    stopped = run_from_first_read(
        silent,
        [command, "--config", str(path), *args],
        lambda running: running.send_signal(signal.SIGTERM),
    )
    assert stopped.returncode == 143, (stopped.stdout, stopped.stderr)
    (line,) = stopped.stderr.splitlines()
    assert line.startswith("replicator: SIGTERM received; stopped "), line
    assert stopped.stdout == ""


def test_a_source_without_credentials_leaves_the_owner_check_undone_without_a_traceback(
    tmp_path: Path,
) -> None:
    """A client that could not be made for the source (a profile that does not exist)
    printed the owner-tag thread's traceback before the command's own line."""
    path = job_file(tmp_path, "wm-no-profile", REFUSED)
    # A process of its own: pytest takes a thread's uncaught error for a warning.
    shown = replicator("watermark", "--config", str(path), env={"AWS_PROFILE": "no-such-one"})
    assert shown.returncode == 3, shown
    assert "Traceback" not in shown.stderr and "Exception in thread" not in shown.stderr
    (line,) = shown.stderr.splitlines()
    assert line.startswith("replicator: "), line


@pytest.mark.parametrize(
    ("value", "message"),
    [
        # Python reads these as infinity: taken as they were, each waited without limit.
        ("1e400", "'1e400' is too large a number of seconds (it overflows to infinity)"),
        ("9" * 400, "is too large a number of seconds (it overflows to infinity)"),
        ("Infinity", "'Infinity': write inf to wait without limit"),
        ("INF", "'INF': write inf to wait without limit"),
        ("+inf", "'+inf': write inf to wait without limit"),
    ],
)
def test_a_timeout_that_overflows_or_spells_infinity_otherwise_is_refused_naming_it(
    tmp_path: Path, value: str, message: str
) -> None:
    """Only ``inf`` (as the docs write it) waits without limit; anything else Python reads
    as infinity is refused with exit 2, naming --timeout, before anything is read."""
    path = job_file(tmp_path, "wm-overflow", "http://127.0.0.1:1")  # never read
    done = in_process("wait", "--config", str(path), "-d", EU, "--until", "1", "--timeout", value)
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    (line,) = done.stderr.strip().splitlines()[-1:]
    assert line.startswith("Error: Invalid value for '--timeout': "), done.stderr
    assert message in line, done.stderr


def passed_job(endpoint: str, task: str, tmp_path: Path) -> tuple[Path, str]:
    """A job whose destination EU's watermark is at T0, and a time it has passed."""
    table = StatusTable(client("dynamodb", "eu-west-1", endpoint), f"{task}-watermark", EU)
    table.ensure_exists()
    table.raise_part("s1", T0, "test:1")
    return job_file(tmp_path, task, endpoint), str(T0 // S - 1)


def test_a_timeout_of_inf_waits_without_limit_and_exits_0_once_passed(
    moto_endpoint: str, unique: Callable[[str], str], tmp_path: Path
) -> None:
    path, until = passed_job(moto_endpoint, unique("wm-inf"), tmp_path)
    for timeout in ("inf", "1e308"):
        done = replicator(
            "wait", "--config", str(path), "-d", EU, "--until", until, "--timeout", timeout
        )
        assert done.returncode == 0, done.stderr


def test_a_wait_whose_line_cannot_be_written_still_exits_0_and_says_it_on_stderr(
    moto_endpoint: str, unique: Callable[[str], str], tmp_path: Path
) -> None:
    """With stdout a pipe whose reader had gone, a wait that was answered exited 1
    without a word (click's handling of a closed pipe), which a script reads as a
    timeout; ``watermark`` too."""
    path, until = passed_job(moto_endpoint, unique("wm-pipe"), tmp_path)
    done = replicator_into_a_pipe_nobody_reads(
        "wait", "--config", str(path), "-d", EU, "--until", until, "--timeout", "30"
    )
    assert done.returncode == 0, done.stderr
    (last,) = done.stderr.strip().splitlines()[-1:]
    unwritten = "replicator: the report could not be written to stdout: [Errno 32] Broken pipe"
    assert last.startswith(f"{unwritten}; it said: {EU} until "), done.stderr
    assert ": replicated: " in last, done.stderr

    shown = replicator_into_a_pipe_nobody_reads("watermark", "--config", str(path))
    assert shown.returncode == 1, shown.stderr
    assert shown.stderr.strip().splitlines()[-1] == unwritten, shown.stderr


@pytest.mark.parametrize(
    ("until", "shown"),
    [
        # As a float, 1796466592.9999999 was the next second, where the same time written
        # in ISO 8601 was the microsecond below it.
        ("1796466592.9999999", "2026-12-05T10:29:52.999999Z"),
        ("2026-12-05T10:29:52.9999999Z", "2026-12-05T10:29:52.999999Z"),
    ],
)
def test_a_time_is_taken_to_the_microsecond_below_it_however_it_is_written(
    tmp_path: Path, until: str, shown: str
) -> None:
    """The window a wait names is the time it was given, rounded down to the microsecond
    (the status table is never read: --since after --until is refused first)."""
    path = job_file(tmp_path, "wm-exact", "http://127.0.0.1:1")  # never read
    done = in_process(
        *("wait", "--config", str(path), "-d", EU, "--until", until),
        *("--since", "1800000000", "--timeout", "0"),
    )
    assert done.returncode == 2, done.stderr
    assert f"is after --until {shown}: the window from --since to --until is inverted" in (
        " ".join(done.stderr.split())
    ), done.stderr


def test_a_time_just_below_the_ceiling_is_waited_for(tmp_path: Path) -> None:
    """As a float, 99999999999.9999999 was the ceiling itself, refused as epoch
    milliseconds (exit 2): it is a time, and the wait goes on to read the status table
    (which cannot be reached here: exit 3)."""
    path = job_file(tmp_path, "wm-ceiling", "http://127.0.0.1:1")
    done = in_process(
        *("wait", "--config", str(path), "-d", EU),
        *("--until", "99999999999.9999999", "--timeout", "0"),
    )
    assert done.returncode == 3, done.stderr
    assert "status table wm-ceiling-watermark: cannot reach http://127.0.0.1:1" in done.stderr


def test_an_in_process_call_gets_its_own_signal_handlers_back() -> None:
    """Only the command run by ``replicator`` itself keeps its stop signals noted once
    its result is decided: a script or a test calling it in-process lost Ctrl-C and
    SIGTERM for the rest of its life."""
    from replicator.watermark.commands import _stopped_by_signals

    before = {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM)}
    with _stopped_by_signals():
        pass
    assert {number: signal.getsignal(number) for number in before} == before
