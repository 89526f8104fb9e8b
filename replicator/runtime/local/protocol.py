"""The daemon's side of the KCL MultiLang protocol, for one processor child process.

This is what the Java MultiLangDaemon does for each shard: write one JSON action per
line to the child's stdin, serve the child's ``checkpoint`` requests while the action
runs, and wait for ``{"action": "status", "responseFor": <action>}``. A wrong or
missing status is a protocol failure, as it is for the daemon: the child is killed.
The child's stderr is passed through to ours (its structured logs), or to the
descriptor the runtime is given for it.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import structlog

from replicator import lastwords
from replicator.exceptions import ChildFailed

log = structlog.get_logger(__name__)

# Called for each checkpoint request: (sequence number or None, sub-sequence number);
# returns None on success or the KCL exception name the child should see.
CheckpointHandler = Callable[[str | None, int | None], str | None]

_EOF = object()

# The local runtime's stop, told to a processor child that may be holding a batch while
# its buffer is full (backpressure): it answers that batch without room, so that it
# takes the shutdownRequested the runtime sends next (ReplicationProcessor.stop_waiting).
# The MultiLangDaemon sends it no signal: it too sends shutdownRequested only between
# actions, and a processor under it holds a batch for as long as the buffer is full.
RELEASE_SIGNAL = signal.SIGUSR1


# How long a child whose input broke is given to be seen exited (it is, or is about to be).
_EXIT_AFTER_BROKEN_PIPE_S = 5.0


def exit_status(code: int) -> str:
    """A child's exit status as the logs say it: a signal by name (Popen gives -N)."""
    if code >= 0:
        return f"exited with status {code}"
    try:
        return f"killed by {signal.Signals(-code).name}"
    except ValueError:
        return f"killed by signal {-code}"


class ProcessorChild:
    def __init__(
        self,
        argv: Sequence[str],
        env: Mapping[str, str],
        on_checkpoint: CheckpointHandler,
        name: str,
        stderr: int | None = None,
    ) -> None:
        """``stderr``: a file descriptor for the child's log lines (None: ours)."""
        self.argv = list(argv)
        self.env = dict(env)
        self.on_checkpoint = on_checkpoint
        self.name = name
        self.stderr = stderr
        self._process: subprocess.Popen[str] | None = None
        self._lines: queue.Queue[object] = queue.Queue()
        self._last_words: Path | None = None  # where the child leaves why it exits

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def start(self) -> None:
        descriptor, path = tempfile.mkstemp(prefix="replicator-child-", suffix=".why")
        os.close(descriptor)
        self._last_words = Path(path)
        self._process = subprocess.Popen(  # noqa: S603  # argv is our own processor command
            self.argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            env={**self.env, lastwords.ENV: path},
            text=True,
            bufsize=1,
            # Ctrl-C at a terminal reaches only the runtime, which then shuts the
            # children down in order instead of having them die mid-batch.
            start_new_session=True,
        )
        assert self._process.stdout is not None
        threading.Thread(
            target=self._read_output,
            args=(self._process.stdout,),
            daemon=True,
            name=f"child-out-{self.name}",
        ).start()

    def _read_output(self, stream: IO[str]) -> None:
        for line in stream:
            self._lines.put(line)
        self._lines.put(_EOF)

    # -- actions --------------------------------------------------------------------------

    def initialize(self, shard_id: str, sequence_number: str | None, sub: int | None) -> None:
        self.send(
            {
                "action": "initialize",
                "shardId": shard_id,
                "sequenceNumber": sequence_number,
                "subSequenceNumber": sub,
            }
        )

    def process_records(self, records: list[dict[str, Any]], millis_behind: int | None) -> None:
        """``millis_behind``: None when not known (an empty DynamoDB Streams read)."""
        self.send(
            {"action": "processRecords", "records": records, "millisBehindLatest": millis_behind}
        )

    def shard_ended(self) -> None:
        self.send({"action": "shardEnded"})

    def shutdown_requested(self, timeout: float | None = None) -> None:
        self.send({"action": "shutdownRequested"}, timeout=timeout)

    def lease_lost(self, timeout: float | None = None) -> None:
        self.send({"action": "leaseLost"}, timeout=timeout)

    def send(self, message: dict[str, Any], timeout: float | None = None) -> None:
        """Send one action and serve the child until it reports the action done."""
        process = self._require()
        action = message["action"]
        try:
            assert process.stdin is not None
            process.stdin.write(json.dumps(message, separators=(",", ":")) + "\n")
            process.stdin.flush()
        except (BrokenPipeError, OSError) as error:
            raise self._failed(self._unsent(action, error)) from None
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            reply = self._next_message(action, deadline)
            kind = reply.get("action")
            if kind == "checkpoint":
                self._serve_checkpoint(reply)
                continue
            if kind == "status":
                if reply.get("responseFor") != action:
                    self.kill()
                    raise ChildFailed(
                        f"{self.name}: status for {reply.get('responseFor')!r} while "
                        f"waiting for {action!r}"
                    )
                return
            self.kill()
            raise ChildFailed(f"{self.name}: unexpected message {reply!r} during {action}")

    def _next_message(self, action: str, deadline: float | None) -> dict[str, Any]:
        while True:
            wait = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                line = self._lines.get(timeout=wait)
            except queue.Empty:
                self.kill()
                raise ChildFailed(
                    f"{self.name}: no answer to {action} in time", timed_out=True
                ) from None
            if line is _EOF:
                code = self._require().wait()
                raise self._failed(f"{exit_status(code)} during {action}")
            assert isinstance(line, str)
            text = line.strip()
            if not text:
                continue  # amazon-kclpy surrounds its lines with blank lines
            try:
                message = json.loads(text)
            except json.JSONDecodeError:
                self.kill()
                raise ChildFailed(
                    f"{self.name}: wrote non-protocol output {text[:200]!r}"
                ) from None
            if not isinstance(message, dict):
                self.kill()
                raise ChildFailed(f"{self.name}: wrote non-protocol output {text[:200]!r}")
            return message

    def _serve_checkpoint(self, request: dict[str, Any]) -> None:
        sequence_number = request.get("sequenceNumber")
        sub = request.get("subSequenceNumber")
        error = self.on_checkpoint(sequence_number, sub)
        reply = {
            "action": "checkpoint",
            "sequenceNumber": sequence_number,
            "subSequenceNumber": sub,
            "error": error,
        }
        process = self._require()
        assert process.stdin is not None
        try:
            process.stdin.write(json.dumps(reply) + "\n")
            process.stdin.flush()
        except (BrokenPipeError, OSError) as error_:
            raise self._failed(self._unsent("the checkpoint's answer", error_)) from None

    # -- lifecycle ------------------------------------------------------------------------

    def close(self, timeout: float = 10.0) -> int | None:
        """Close the child's input (it exits when it reads EOF) and wait for it."""
        process = self._process
        if process is None:
            return None
        try:
            if process.stdin:
                process.stdin.close()
        except OSError:
            pass
        try:
            return process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            log.warning("processor child did not exit; killing it", child=self.name)
            self.kill()
            return process.wait()
        finally:
            self._forget_last_words()

    def release(self) -> None:
        """Have the child answer the action it holds for room in its buffer, if any
        (:data:`RELEASE_SIGNAL`). Only once it has answered ``initialize``: its handler
        is in place by then, and the signal's default action would end it. Nothing once
        it has exited."""
        process = self._process
        if process is not None:
            process.send_signal(RELEASE_SIGNAL)  # a no-op once the child has exited

    def kill(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
        self._forget_last_words()

    def poll(self) -> int | None:
        return self._require().poll()

    def _unsent(self, what: str, error: OSError) -> str:
        """Why ``what`` could not be written to the child. Its end is the news when it
        has ended; the broken pipe is only how it was met (it read like a second failure
        after the reason the child gave)."""
        gone = self._gone()
        if gone is None:
            return f"closed its input and is still running; cannot send {what}: {error}"
        # Not "before processRecords": a processor that ran for hours had answered many.
        return (
            f"{gone} before {'the next ' if what == 'processRecords' else ''}{what} could be sent"
        )

    def _gone(self) -> str | None:
        """How the child whose input just broke ended (None: it still runs): its input
        closes as it exits, so its status follows at once (a child killed by the OOM
        killer shows SIGKILL here, where the broken pipe alone says nothing of it)."""
        try:
            return exit_status(self._require().wait(timeout=_EXIT_AFTER_BROKEN_PIPE_S))
        except subprocess.TimeoutExpired:
            return None

    def _failed(self, what: str) -> ChildFailed:
        """``what`` the runtime saw of a failed child, with the reason the child gave."""
        said, exit_code = "", None
        path = self._last_words  # kill() on another thread may let go of it meanwhile
        if path is not None:
            said, exit_code = lastwords.read(path)
        message = f"{self.name}: {said} ({what})" if said else f"{self.name}: {what}"
        return ChildFailed(message, reason=said or None, exit_code=exit_code)

    def _forget_last_words(self) -> None:
        path, self._last_words = self._last_words, None
        if path is not None:
            with contextlib.suppress(OSError):
                path.unlink()

    def _require(self) -> subprocess.Popen[str]:
        if self._process is None:
            raise ChildFailed(f"{self.name}: not started")
        return self._process
