"""Log lines: JSON with the job and task on every line of the runtime's own process."""

from __future__ import annotations

import io
import json
import logging
import re
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
import structlog

from replicator import logs
from replicator.config.loader import parse_job
from replicator.runtime import supervisor

JOB = """
source: {region: us-east-1, table: orders}
destinations:
  - {region: eu-west-1, table: orders}
task_name: orders-sync
logging: {format: json}
"""


def test_the_runtimes_own_lines_name_the_job_and_task(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    resolved = parse_job(JOB, tmp_path / "job.yaml")
    original = sys.stderr  # logging is pointed back at it: the buffer goes with the test
    captured = io.StringIO()
    monkeypatch.setattr(sys, "stderr", captured)
    try:
        supervisor.begin(resolved, "local")
        structlog.get_logger("test").info("local runtime started")
        line = captured.getvalue().strip().splitlines()[-1]
    finally:
        logs._GLOBAL_FIELDS.clear()
        logs.configure("info", "json", original)
    fields = json.loads(line)
    assert fields["job"] == str(tmp_path / "job.yaml")
    assert (fields["task"], fields["runtime"]) == ("orders-sync", "local")


def test_jvm_password_options_are_redacted_wherever_they_show() -> None:
    """$REPLICATOR_KCL_JVM_OPTIONS can carry proxy or trust-store passwords; the daemon's
    output and the launcher's errors pass through redact()."""
    from replicator.logs import REDACTED, redact

    text = redact(
        "java -Xmx1g -Dhttps.proxyPassword=hunter22 "
        '-Djavax.net.ssl.trustStorePassword="two words" -Dhttp.proxyHost=proxy'
    )
    assert "hunter22" not in text and "two words" not in text and "words" not in text
    assert f"-Dhttps.proxyPassword={REDACTED}" in text
    assert "-Dhttp.proxyHost=proxy" in text and "-Xmx1g" in text


def test_a_password_in_an_endpoint_url_is_never_printed_back(tmp_path: Path) -> None:
    """An endpoint typed with a user name and password is refused (exit 2), and the
    message, as the CLI prints it, names the URL without them; so does validate for a
    queue URL that carries them."""
    from click.testing import CliRunner

    from replicator.cli import cli

    job = tmp_path / "job.yaml"
    job.write_text(
        "source: {region: us-east-1, table: orders, "
        "endpoint_url: 'http://admin:SuperSecretPw1@127.0.0.1:6157'}\n"
        "destinations: [{region: eu-west-1, table: orders}]\n"
    )
    refused = CliRunner().invoke(cli, ["validate", "-c", str(job)], prog_name="replicator")
    assert refused.exit_code == 2, refused.output
    assert "SuperSecretPw1" not in refused.output and "admin" not in refused.output
    assert "http://<redacted>@127.0.0.1:6157" in refused.output
    job.write_text(
        "source: {region: us-east-1, table: orders}\n"
        "destinations: [{region: eu-west-1, table: orders}]\n"
        "dead_letter: {kind: sqs, queue_url: 'https://admin:QueuePw77@sqs.example/123456789012/q'}\n"
    )
    shown = CliRunner().invoke(cli, ["validate", "-c", str(job)], prog_name="replicator")
    assert shown.exit_code == 2, shown.output  # refused as endpoint_url is, not echoed
    assert "QueuePw77" not in shown.output and "admin" not in shown.output
    assert "https://<redacted>@sqs.example" in shown.output


@pytest.mark.parametrize(
    "url",
    [
        "http://u:pa/ss0rdQQ@127.0.0.1:5741",
        "http://u:p@ss0rdQQ@127.0.0.1:5741",
        "http://u:ss0rd QQ@127.0.0.1:5741",
        "http://u:ss0'rdQQ@127.0.0.1:5741",
        "u:ss0rdQQ@127.0.0.1:5741",
        "http:/u:ss0rdQQ@127.0.0.1:5741",
    ],
)
def test_a_password_holding_any_character_is_never_printed_back(
    tmp_path: Path, url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A password with ``/``, ``@``, a blank or a quote, or a URL without its scheme, was
    printed whole or in part: refused at its key (exit 2) all the same, and from the
    environment (AWS_ENDPOINT_URL) at run (exit 3), with nothing before the ``@`` shown."""
    from click.testing import CliRunner

    from replicator.cli import cli

    monkeypatch.setenv("EP", url)
    job = tmp_path / "job.yaml"
    for endpoint, command, code in (
        (", endpoint_url: '${EP}'", "validate", 2),
        ("", "run", 3),  # AWS_ENDPOINT_URL, set below, read when the run makes a client
    ):
        job.write_text(
            f"source: {{region: us-east-1, table: orders{endpoint}}}\n"
            "destinations: [{region: eu-west-1, table: orders}]\nmetrics: {port: 0}\n"
        )
        result = CliRunner().invoke(cli, [command, "-c", str(job)], prog_name="replicator")
        assert result.exit_code == code, result.output
        assert "it must not carry a user name or password" in result.output
        assert "ss0rd" not in result.output and "<redacted>@127.0.0.1:5741" in result.output
        monkeypatch.setenv("AWS_ENDPOINT_URL", url)


def test_a_log_line_hides_a_url_password_up_to_its_last_at() -> None:
    assert logs.redact("at http://u:pa/ss0rd@h:1/ now") == "at http://<redacted>@h:1/ now"
    assert logs.redact("at http://u:p@ss@h:1 now") == "at http://<redacted>@h:1 now"
    assert logs.redact("http://h:1/path ok, mail a@b") == "http://h:1/path ok, mail a@b"
    assert logs.redact("'http://u:x@h' 'http://v:y@k'") == (
        "'http://<redacted>@h' 'http://<redacted>@k'"
    )
    assert logs.redact("http://user@host/path/@x") == "http://<redacted>@host/path/@x"


@pytest.mark.parametrize(
    "data",
    [
        "pk=S:/users/alice@example.com/avatar.png",  # a key as describe_key writes it
        "pk=S:https://medium.com/@alice",
        '{"S": "https://www.npmjs.com/package/@scope/pkg"}',
        "s3://bucket/users/alice@example.com/f.json",
        "http://localhost:8000/users/a@b.com",
        "file:/run/user@1000/x",
    ],
)
def test_an_at_in_a_urls_path_is_data_left_as_it_is(data: str) -> None:
    """A key or an attribute holding a URL with an ``@`` in its path was cut from the
    scheme to the ``@`` in every log line naming it (a dead letter's, a conflict's)."""
    assert logs.redact(data) == data


def test_what_a_command_prints_goes_through_the_redacting_echo() -> None:
    """A command's one-line errors may quote what AWS said, so what a command prints
    goes through ``logs.echo``, which redacts stderr lines as the logs are (its output's
    error text is redacted by the report that quotes it); the one exception says why it
    is printed verbatim."""
    root = Path(logs.__file__).parent
    direct = []
    for path in sorted(set(root.rglob("*.py")) - {Path(logs.__file__)}):
        lines = ["", *path.read_text().splitlines()]
        direct += [
            f"{path.relative_to(root)}:{number}"
            for number, line in enumerate(lines)
            if "click.echo(" in line and "# verbatim:" not in lines[number - 1]
        ]
    assert direct == []


def test_echo_prints_a_quoted_credential_redacted(capsys: pytest.CaptureFixture[str]) -> None:
    logs.echo("refused: 'X-Amz-Security-Token': 'ECHOqqqTOKEN99'", err=True)
    assert capsys.readouterr().err == "refused: 'X-Amz-Security-Token': '<redacted>'\n"


class _Recording(io.StringIO):
    """A stream that keeps every write call, and can hold one back until released."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[str] = []
        self.entered = threading.Event()
        self.release = threading.Event()
        self.hold = False

    def write(self, text: str) -> int:
        self.writes.append(text)
        if self.hold:
            self.entered.set()
            assert self.release.wait(30)
        return super().write(text)


def test_a_line_and_its_newline_are_one_write_and_an_ending_process_waits_for_it() -> None:
    """A processor ends with os._exit as soon as a writer fails; a line another thread
    was writing then must be whole (newline included), or the runtime's next line, on
    the same stderr, is glued to it."""
    original = sys.stderr
    stream = _Recording()
    logs.configure("info", "json", stream)
    try:
        structlog.get_logger("test").error("destination writer failed", shard="s")
        logging.getLogger("botocore.test").warning("from the logging module")
        assert len(stream.writes) == 2
        assert all(text.endswith("\n") and text.count("\n") == 1 for text in stream.writes)
        for line in stream.getvalue().splitlines():
            json.loads(line)
        stream.hold = True
        writer = threading.Thread(
            target=structlog.get_logger("test").error, args=("being written",), daemon=True
        )
        writer.start()
        assert stream.entered.wait(30)
        # The line is being written: the ending process does not get past it...
        assert logs.finish_lines(timeout_s=0.05) is False
        stream.release.set()
        writer.join(30)
        # ...and once it is complete, it holds the lock until it ends.
        assert logs.finish_lines() is True
        logs._WRITING.release()
        lines = stream.getvalue().splitlines()
        assert [json.loads(line)["event"] for line in lines][-1] == "being written"
    finally:
        logs.configure("info", "json", original)


def _printed(level: str, write: Any) -> list[str]:
    """What ``write(printed_lines)`` logged, with the log configured at ``level``."""
    original = sys.stderr
    stream = io.StringIO()
    logs.configure(level, "json", stream)
    try:
        write(logs.PrintedLines(stream))
    finally:
        logs.configure("info", "json", original)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert all(line["event"] == "printed" and line["level"] == "info" for line in lines)
    return [line["text"] for line in lines]


def test_printed_lines_are_log_lines_at_every_level() -> None:
    """At logging.level warning a user's print reached the log raw before: it must not
    vanish now that it is a JSON line."""

    def write(out: Any) -> None:
        print("one", "two", file=out)
        print("three", end="", file=out)
        print("-four", file=out)
        print("", file=out)

    assert _printed("warning", write) == ["one two", "three-four", ""]


def test_a_line_printed_without_its_end_is_logged_at_a_flush_or_when_long() -> None:
    def write(out: Any) -> None:
        for _ in range(logs.PRINTED_LINE_MAX):
            out.write(".")  # progress dots, one write each
        out.write("tail")
        out.flush()
        out.flush()  # nothing left: no empty line

    assert _printed("info", write) == ["." * logs.PRINTED_LINE_MAX, "tail"]


def test_each_threads_printed_line_is_its_own() -> None:
    """print() writes its text and its end in two calls: two threads' lines ran into
    one when the unended line was shared."""
    barrier = threading.Barrier(2)

    def write(out: Any) -> None:
        def printing(name: str) -> None:
            out.write(name * 3)
            barrier.wait(30)  # both halfway through a line
            out.write("\n")

        threads = [threading.Thread(target=printing, args=(name,)) for name in "AB"]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)

    assert sorted(_printed("info", write)) == ["AAA", "BBB"]


def test_every_threads_unended_line_is_logged_as_the_work_ends() -> None:
    """A writer thread's ``print(..., end="")`` was lost as a tool or a processor ended:
    their flush is the main thread's, whose own line alone it logged."""

    def write(out: Any) -> None:
        threads = [
            threading.Thread(target=lambda n=name: print(f"{n}-unended", end="", file=out))
            for name in "AB"
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        out.flush()  # the main thread's: nothing of its own
        out.flush_all()

    assert sorted(_printed("info", write)) == ["A-unended", "B-unended"]


def test_threads_gone_with_nothing_unended_are_not_kept() -> None:
    """A processor runs for days while threads come and go: each thread that printed was
    kept for flush_all for ever."""

    def write(out: Any) -> None:
        for index in range(50):
            thread = threading.Thread(target=lambda i=index: print(f"line {i}", file=out))
            thread.start()
            thread.join(30)
        assert len(out._every_threads) <= 2  # the last one, at most one other

    assert len(_printed("info", write)) == 50


def test_printed_lines_keep_the_streams_file_number() -> None:
    """A resolver may hand ``sys.stdout`` to a child process (subprocess.run): it takes
    the stream's file number (it raised io.UnsupportedOperation)."""
    assert logs.PrintedLines(sys.__stderr__).fileno() == sys.__stderr__.fileno()


def test_a_credential_variables_value_is_redacted_from_the_documented_length(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The value of a credential variable is replaced wherever it appears once it is
    ``SECRET_MIN_CHARS`` long (every real AWS credential is), and docs/security.md says
    so; a shorter stand-in (moto's ``testing``) stays an ordinary word, unless a text
    names it as the credential."""
    from replicator.logs import REDACTED, SECRET_MIN_CHARS, redact

    real = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"  # AWS's example: 40 characters
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", real)
    monkeypatch.setenv("AWS_SESSION_TOKEN", "s" * SECRET_MIN_CHARS)
    said = redact(f"signature for {real} refused; token {'s' * SECRET_MIN_CHARS} expired")
    assert said == f"signature for {REDACTED} refused; token {REDACTED} expired"

    short = "testing"
    assert len(short) == SECRET_MIN_CHARS - 1
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", short)
    assert redact("table testing-eu not found") == "table testing-eu not found"
    assert redact(f"aws_secret_access_key={short}") == f"aws_secret_access_key={REDACTED}"

    security = (Path(__file__).parent.parent / "docs" / "security.md").read_text()
    assert f"**{SECRET_MIN_CHARS} characters or more**" in " ".join(security.split())


# Credentials as an environment can hold them by mistake: a CRLF env file leaves a
# carriage return at the end, a pasted token a line break or a tab inside; a backslash
# or a letter outside ASCII is escaped by every kind of quoting.
_AWKWARD_CREDENTIALS = (
    "IQoJb3JpZ2luX2VjLeakyTokenSECRET123\r",
    "IQoJb3JpZ2luX2Vj\nLeakyTokenSECRET123",
    "wJalrXUtnFEMI\\K7MDENG\tbPxRfiCYEXAMPLEKEY",
    "tökenSECRETwithé'quote\"",
)


def _quoted_forms(value: str) -> dict[str, str]:
    """Texts that quote ``value`` as the libraries under the replicator quote a header or
    a field: http.client's refusal (a bytes repr), a str repr, JSON, one inside another,
    and ``excerpt``'s one line (every run of whitespace one space)."""
    refusal = f"Invalid header value {value.encode()!r}"
    return {
        "as is": f"token {value} refused",
        "stripped": f"token {value.strip()} refused",
        "str repr": f"headers {{'x-token': {value!r}}}",
        "bytes repr": refusal,
        "json": json.dumps({"error": value}),
        "json, ascii kept": json.dumps({"error": value}, ensure_ascii=False),
        "repr of a repr": repr(f"An HTTP Client raised an unhandled exception: {refusal}"),
        "json of a repr": json.dumps({"event": refusal}),
        "one line": " ".join(f"token {value} refused".split()),
    }


@pytest.mark.parametrize("variable", ["AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"])
@pytest.mark.parametrize("value", _AWKWARD_CREDENTIALS)
def test_a_credential_with_characters_a_quote_escapes_is_redacted_in_every_quoted_form(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    """http.client refuses a header holding a CR or LF with its value as a bytes repr
    (``\\r`` as a backslash and an r), which botocore's error and the command's last line
    quote: the credential is redacted in that form and in every other a quote gives it,
    and so is each part of it a line break or an ``excerpt`` would leave apart."""
    from replicator.logs import REDACTED, SECRET_MIN_CHARS, redact

    monkeypatch.setenv(variable, value)
    # What survives any quoting of the secret: its runs of letters and digits.
    words = re.findall(r"[A-Za-z0-9]{6,}", value)
    assert words and all(len(part) >= SECRET_MIN_CHARS for part in value.split())
    for form, text in _quoted_forms(value).items():
        assert all(word in text for word in words), form
        said = redact(text)
        assert REDACTED in said, form
        assert [word for word in words if word in said] == [], f"{form}: {said}"


def test_a_named_credential_quoted_as_bytes_or_twice_is_redacted() -> None:
    """A credential named by its header, of any length: as a bytes repr (a header dict as
    urllib3 prints it), and quoted twice (JSON in a JSON line, a repr in a repr), its
    escapes included; what quotes it stays well-formed."""
    from replicator.logs import REDACTED, redact

    said = redact("{'X-Amz-Security-Token': b'shortTk', 'Host': b'dynamodb'}")
    assert said == f"{{'X-Amz-Security-Token': b'{REDACTED}', 'Host': b'dynamodb'}}"
    header = {"X-Amz-Security-Token": "short\rTk\r", "Host": "dynamodb"}
    said = redact(json.dumps({"event": json.dumps(header)}))
    assert json.loads(json.loads(said)["event"]) == {**header, "X-Amz-Security-Token": REDACTED}
    twice = repr(repr({key: value.encode() for key, value in header.items()}))
    assert "short\\\\rTk" in twice  # the escape's backslash escaped
    said = redact(twice)
    assert said == twice.replace("short\\\\rTk\\\\r", REDACTED)


def test_an_item_key_or_a_word_named_token_or_external_id_is_not_redacted() -> None:
    """Data is never redacted: an item key whose attribute is named ``token`` or
    ``external_id`` (in a log line's or a dead letter's reason) keeps its value, and so
    do botocore's words after ``Token``."""
    from replicator.logs import redact

    for kept in (
        "key token=S:user-42 sk=N:1",
        "device_token=S:abc",
        "ExternalId=S:cust-9",
        "Error loading SSO Token: Token for x does not exist",
        "ExpiredToken: The security token included in the request is expired",
    ):
        assert redact(kept) == kept


def test_a_password_option_or_url_password_with_escapes_is_redacted() -> None:
    """The JVM options and URLs quoted by repr (a list of arguments, a bytes URL)."""
    from replicator.logs import REDACTED, redact

    said = redact(repr(["java", "-Dhttps.proxyPassword=hunter22\r", "-Xmx1g"]))
    assert "hunter22" not in said and f"-Dhttps.proxyPassword={REDACTED}'" in said
    said = redact(repr(b"http://admin:Pw\r\nSecret@proxy:3128/"))
    assert "Secret" not in said and "admin" not in said
    assert said == f"b'http://{REDACTED}@proxy:3128/'"


def test_a_report_that_cannot_be_written_gives_stdout_back_and_says_so() -> None:
    """``report_kept_apart`` with stdout a pipe nobody reads: the report's flush fails,
    and that error is the command's; descriptor 1 was left pointing at stderr, and the
    report's own descriptor open, when the failing flush skipped the rest."""
    code = (
        "import os, sys\n"
        "from replicator import logs\n"
        "r, w = os.pipe(); os.dup2(w, 1); os.close(w); os.close(r)\n"
        "pipe = os.readlink('/proc/self/fd/1'); before = sorted(os.listdir('/proc/self/fd'))\n"
        "try:\n"
        "    with logs.report_kept_apart():\n"
        "        logs.echo('x' * 100)\n"
        "except Exception as error:\n"
        "    sys.stderr.write(f'{type(error).__name__}: {error}\\n')\n"
        "assert os.readlink('/proc/self/fd/1') == pipe, 'fd 1 not given back'\n"
        "assert sorted(os.listdir('/proc/self/fd')) == before, 'a descriptor left open'\n"
        "sys.stderr.write('restored\\n')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.stderr.splitlines()[-2:] == [
        "ReportUnwritten: the report could not be written to stdout: [Errno 32] Broken pipe",
        "restored",
    ], done.stderr


def test_what_a_module_does_with_the_held_stdout_works_as_on_a_text_stream(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """While a resolver's import is held: click's echo (which asks a stream whether it
    takes bytes by writing ``b""``) made the held text bytes, and the release a
    traceback; ``reconfigure(encoding="ascii")`` reached stderr, whose later lines with
    an accent then failed; a ``sys.stdout`` kept by the module writes once released."""
    import click

    stderr = io.TextIOWrapper(io.BytesIO(), encoding="utf-8")
    monkeypatch.setattr(sys, "stderr", stderr)
    monkeypatch.setattr(logs, "_AS_JSON", [False])
    with logs.HeldPrints() as held:
        click.echo("echoed")
        sys.stdout.reconfigure(encoding="ascii")  # type: ignore[attr-defined]
        with pytest.raises(TypeError):
            sys.stdout.write(b"")  # type: ignore[arg-type]
        kept = sys.stdout
        print("café")
    assert stderr.encoding == "utf-8"
    assert stderr.buffer.getvalue() == b""  # held
    held.release()
    kept.write("later\n")
    kept.flush()
    assert stderr.buffer.getvalue().decode() == "echoed\ncafé\nlater\n"  # type: ignore[attr-defined]


def test_a_stdout_a_module_wraps_anew_while_held_does_not_close_stderr(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``sys.stdout = io.TextIOWrapper(sys.stdout.buffer, ...)`` at import wraps stderr's
    buffer: dropped as the held stdout was put back, the wrapper closed stderr as it was
    collected, and every later log line failed ("lost sys.stderr")."""
    import gc

    stderr = io.TextIOWrapper(io.BytesIO(), encoding="utf-8")
    monkeypatch.setattr(sys, "stderr", stderr)
    monkeypatch.setattr(logs, "_AS_JSON", [False])
    with logs.HeldPrints() as held:
        sys.stdout = io.TextIOWrapper(sys.stdout.buffer, encoding="utf-8")
        print("through the module's own wrapper")
    held.release()
    gc.collect()
    assert not stderr.closed
    stderr.write("a later line\n")
    stderr.flush()
    assert stderr.buffer.getvalue().decode() == (  # type: ignore[attr-defined]
        "through the module's own wrapper\na later line\n"
    )
