"""`replicator run` against a destination that answers every write with AWS's bad-signature
error, which quotes the request's session token: the token shows nowhere, neither on
/healthz nor in the log nor in the command's last line."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

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
