"""``python -m replicator.demo.endpoint``: the demo's endpoint served on its own, for trying
an active-active pair by hand (a stock moto_server cannot show one converge)."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading

from tests.support.aws import client, create_table


def test_the_endpoint_serves_until_sigterm_and_exits_0() -> None:
    server = subprocess.Popen(
        [sys.executable, "-m", "replicator.demo.endpoint", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        # Never blocks for good: the server is killed after 60 s whatever it printed.
        timer = threading.Timer(60, server.kill)
        timer.start()
        try:
            url = server.stdout.readline().strip()
        finally:
            timer.cancel()
        assert url.startswith("http://127.0.0.1:"), url
        ddb = client("dynamodb", "us-east-1", url)
        create_table(ddb, "orders")
        ddb.put_item(TableName="orders", Item={"pk": {"S": "a"}})
        assert ddb.get_item(TableName="orders", Key={"pk": {"S": "a"}})["Item"] == {
            "pk": {"S": "a"}
        }
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=30) == 0
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


def test_a_port_in_use_is_refused_with_exit_3_naming_it() -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        refused = subprocess.run(
            [sys.executable, "-m", "replicator.demo.endpoint", "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert refused.returncode == 3, refused
    assert refused.stderr.startswith(f"replicator.demo.endpoint: cannot serve on 127.0.0.1:{port}:")


def test_a_port_out_of_range_is_refused_with_exit_2() -> None:
    refused = subprocess.run(
        [sys.executable, "-m", "replicator.demo.endpoint", "--port", "70000"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert refused.returncode == 2, refused
    assert "'70000' is no port: give 0 to 65535" in refused.stderr
