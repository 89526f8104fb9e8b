"""`replicator run` against a destination that answers every write with AWS's bad-signature
error, which quotes the request's session token: the token shows nowhere, neither on
/healthz nor in the log nor in the command's last line. Nor does a token with a line
break in it, which the HTTP client refuses, quoting it escaped."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import pytest

from tests.support.cli import replicator
from tests.support.e2e import PATIENCE, Job, wait_until
from tests.support.faults.proxy import Fault, FaultProxy, Mode
from tests.support.metrics import health, logged_metrics_port

TOKEN = "SESSIONTOKENSECRET"


def test_a_session_token_quoted_by_a_refusal_is_redacted_on_healthz_and_in_the_output(
    moto_endpoint: str, unique: Any, tmp_path: Path
) -> None:
    name = unique("secret")
    job = Job(moto_endpoint, name, tmp_path, destinations=[("eu-west-1", f"{name}-eu")])
    proxy = FaultProxy(moto_endpoint).start()
    try:
        proxy.set(Mode(Fault.BAD_SIGNATURE, operations=frozenset({"PutItem", "DeleteItem"})))
        eu = f"{{region: eu-west-1, table: {name}-eu, endpoint_url: '{moto_endpoint}'}}"
        text = job.path.read_text()
        assert eu in text
        job.path.write_text(
            text.replace(eu, eu.replace(moto_endpoint, proxy.url)).replace(
                "writer: {max_in_flight: 16}",
                "writer: {max_in_flight: 16, access_denied_limit: 3, "
                "retry: {base_delay_ms: 1, max_delay_ms: 20}}",
            )
        )
        job.source.put_item(TableName=job.source_table, Item={"pk": {"S": "a"}, "sk": {"N": "1"}})
        log = tmp_path / "secret.log"
        runtime = job.start(log=log, env={"AWS_SESSION_TOKEN": TOKEN})
        try:
            port = logged_metrics_port(log)
            failures: list[list[str]] = []

            def failure_reported() -> bool:
                if runtime.poll() is not None:
                    return True
                with contextlib.suppress(OSError, ValueError):
                    status, body = health(port)
                    reasons = [str(reason) for reason in body.get("reasons", [])]
                    if status == 503 and any("last failure" in r for r in reasons):
                        failures.append(reasons)
                return bool(failures)

            wait_until(
                failure_reported, 60 * PATIENCE, "/healthz to report the failing processor", 0.02
            )
            assert runtime.wait(120 * PATIENCE) == 3
        finally:
            if runtime.poll() is None:
                runtime.kill()
                runtime.wait(10)
    finally:
        proxy.stop()
    assert proxy.counts("PutItem")["bad_signature"] >= 3
    (reasons,) = failures[:1]
    shown = "\n".join(reasons)
    assert "InvalidSignatureException" in shown and TOKEN not in shown
    assert "x-amz-security-token:<redacted>" in shown
    output = log.read_text()
    assert "x-amz-security-token:<redacted>" in output and TOKEN not in output
    assert output.splitlines()[-1].startswith("replicator: destination ")


@pytest.mark.parametrize(
    "token",
    ["IQoJb3JpZ2luX2VjLeakyTokenSECRET123\r", "IQoJb3JpZ2luX2Vj\nLeakyTokenSECRET123"],
    ids=["carriage return at the end", "line feed inside"],
)
def test_a_session_token_with_a_line_break_is_redacted_where_the_http_client_refuses_it(
    moto_endpoint: str, unique: Any, tmp_path: Path, token: str
) -> None:
    """A token read from an env file with CRLF line ends keeps its ``\\r``: http.client
    refuses the header and quotes its value as a bytes repr, which botocore's error and
    the command's last line carry. The start-up check stops with exit 3, the token
    redacted in that form; no part of it is printed."""
    name = unique("crlf")
    job = tmp_path / "job.yaml"
    job.write_text(
        f"task_name: {name}\n"
        f"source: {{region: us-east-1, table: {name}-src, endpoint_url: '{moto_endpoint}'}}\n"
        f"destinations: [{{region: eu-west-1, table: {name}-eu, "
        f"endpoint_url: '{moto_endpoint}'}}]\n"
        "metrics: {host: 127.0.0.1, port: 0}\n"
    )
    done = replicator(
        "run", "-c", str(job), timeout=120 * PATIENCE, env={"AWS_SESSION_TOKEN": token}
    )
    assert done.returncode == 3, done.stderr
    last = done.stderr.splitlines()[-1]
    assert last.startswith(f"replicator: source table {name}-src: cannot reach "), last
    assert "Invalid header value b'<redacted>'" in last, last
    printed = done.stdout + done.stderr
    assert not [part for part in ("IQoJb3JpZ2luX2Vj", "LeakyTokenSECRET123") if part in printed]
