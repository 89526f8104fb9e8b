"""A custom resolver's module is imported by ``validate``, ``run`` and the tools that write
before anything starts: whatever its import does (exit, raise, not exist) is a problem of
the job file at the resolver's key and line, reported with the file's other problems;
only Ctrl-C stops the command."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.support import ROOT
from tests.support.cli import replicator

JOB = """\
source: {region: us-east-1, table: orders}
destinations:
  - {region: eu-west-1, table: orders}
conflict: {policy: custom, resolver: 'resolver_module:decide'}
"""


def _command(
    tmp_path: Path, command: str, module: str, job: str = JOB
) -> subprocess.CompletedProcess[str]:
    """``replicator COMMAND`` on ``job``, with ``module`` as resolver_module.py on the
    import path, and no AWS endpoint listening: a run that got past its checks exits 3."""
    (tmp_path / "resolver_module.py").write_text(
        module + "\ndef decide(change, existing):\n    return True\n"
    )
    path = tmp_path / "job.yaml"
    path.write_text(job)
    env = {
        "PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}",
        "AWS_ENDPOINT_URL": "http://127.0.0.1:9",
    }
    return replicator(command, "--config", str(path), env=env)


def _problems(result: subprocess.CompletedProcess[str]) -> list[str]:
    """The job file's problems, one a line, as ``validate`` lists them (exit 2)."""
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    return [line for line in result.stderr.splitlines() if line.startswith("  ")]


def test_what_a_resolver_module_prints_as_it_is_imported_is_kept_off_stdout(
    tmp_path: Path,
) -> None:
    """It was the first line of ``validate``'s summary (and of any command's report a
    script reads from stdout)."""
    result = _command(
        tmp_path,
        "validate",
        'import os, subprocess, sys\nprint("hello from import")\nos.write(1, b"raw fd 1\\n")\n'
        "subprocess.run([sys.executable, '-c', 'print(\"a child\")'], check=True)",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("job file:"), result.stdout
    # What is written below sys.stdout too (os.write, a child): it went into the summary.
    for said in ("hello from import", "raw fd 1", "a child"):
        assert said not in result.stdout
        assert said in result.stderr


@pytest.mark.parametrize(
    ("module", "did"),
    [
        pytest.param("import sys\nsys.exit(0)", "SystemExit(0)", id="exit-0"),
        pytest.param("raise SystemExit(7)", "SystemExit(7)", id="exit-7"),
        pytest.param("import sys\nsys.exit()", "SystemExit(None)", id="exit-none"),
        pytest.param("import sys\nsys.exit('bye')", "SystemExit('bye')", id="exit-text"),
    ],
)
@pytest.mark.parametrize("command", ["validate", "run"])
def test_a_resolver_module_that_exits_as_it_is_imported_is_refused(
    tmp_path: Path, command: str, module: str, did: str
) -> None:
    """Let through, its exit was the command's: ``run`` ending 0 with nothing replicated
    looked like a clean stop, which a service manager does not restart."""
    (line,) = _problems(_command(tmp_path, command, module))
    assert line.startswith(
        "  conflict.resolver (line 4): custom resolver 'resolver_module:decide': cannot "
        f"import resolver_module: it raised {did} (a sys.exit() call) as it was imported"
    ), line


@pytest.mark.parametrize(
    "module",
    [
        pytest.param("import signal\nsignal.raise_signal(signal.SIGINT)", id="sigint"),
        pytest.param("raise KeyboardInterrupt", id="raised"),
    ],
)
def test_ctrl_c_while_validate_imports_a_resolver_stops_it_with_130(
    tmp_path: Path, module: str
) -> None:
    """A SIGINT during the import (sent by the module to itself, as Ctrl-C would arrive)
    is the operator's stop: one line and 130, not a problem of the job file, nor click's
    "Aborted!" and 1. A module raising KeyboardInterrupt itself is taken the same way."""
    result = _command(tmp_path, "validate", module)
    assert result.returncode == 130, result.stderr
    assert result.stderr == (
        "replicator: interrupted (SIGINT) while importing the custom resolver "
        "'resolver_module:decide'\n"
    )


def test_a_keyboard_interrupt_a_resolver_module_raises_under_run_is_its_own(
    tmp_path: Path,
) -> None:
    """``run`` holds SIGINT from its first moment (a stop during start-up is a clean
    stop), so a KeyboardInterrupt during the import can only be the module's."""
    (line,) = _problems(_command(tmp_path, "run", "raise KeyboardInterrupt('no')"))
    assert "cannot import resolver_module: KeyboardInterrupt: no" in line


def test_a_second_sigint_while_run_imports_a_resolver_stops_it_at_once(tmp_path: Path) -> None:
    """The second stop signal while ``run`` starts ends it with 130 from inside the
    import too: it is not the module's exit."""
    twice = "import signal\nsignal.raise_signal(signal.SIGINT)\nsignal.raise_signal(signal.SIGINT)"
    result = _command(tmp_path, "run", twice)
    assert result.returncode == 130, result.stderr
    assert result.stderr == "replicator: SIGINT again while starting; stopping now\n"


@pytest.mark.parametrize("command", ["validate", "run"])
def test_resolvers_that_do_not_load_are_reported_with_the_other_problems(
    tmp_path: Path, command: str
) -> None:
    """Every problem at once, each at its line: a resolver whose own section (its policy
    and resolver) is valid is imported whatever else is wrong, in the section or in the
    file; one whose policy is not valid is not."""
    job = """\
source: {region: us-east-1, table: orders}
destinations:
  - region: eu-west-1
    table: orders
    conflict:
      policy: custom
      resolver: no_such_module_a:decide
  - {region: nowhere, table: t22}
  - {region: ap-south-1, table: t33, conflict: {policy: custm, resolver: 'no_such_module_c:f'}}
conflict: {policy: custom, resolver: 'no_such_module_b:decide', max_attempts: 0}
metrics: {port: 99999}
"""
    result = _command(tmp_path, command, "", job)
    problems = _problems(result)
    assert "6 problems in the job file:" in result.stderr
    assert [line.split(": ")[0] for line in problems] == [
        "  destinations[1].region (line 8)",
        "  destinations[2].conflict.policy (line 9)",
        "  conflict.max_attempts (line 10)",
        "  metrics.port (line 11)",
        "  conflict.resolver (line 10)",
        "  destinations[0].conflict.resolver (line 7)",
    ]
    assert "No module named 'no_such_module_b'" in problems[4]
    assert "No module named 'no_such_module_a'" in problems[5]


SIGNATURES = """
import collections
import functools

def one_arg(change):
    return True

def three_args(change, existing, extra):
    return True

async def awaited(change, existing):
    return True

def yields(change, existing):
    yield True

def keyword_only(change, *, existing):
    return True

Kind = collections.OrderedDict

def with_defaults(change, existing=None, extra=1):
    return True

def any_args(*args, **kwargs):
    return True

def inject(function):
    @functools.wraps(function)
    def wrapper(*args):
        return function("logger", *args)
    return wrapper

@inject
def injected(logger, change, existing):
    return True

class AsyncDecider:
    async def __call__(self, change, existing):
        return True

class YieldingDecider:
    def __call__(self, change, existing):
        yield True

class Decider:
    def __call__(self, change, existing):
        return True

async_instance = AsyncDecider()
yielding_instance = YieldingDecider()
instance = Decider()
"""


REFUSED = [
    ("one_arg", "cannot be called as resolver(incoming, existing): its signature is "
     "(change) (too many positional arguments)"),
    ("three_args", "its signature is (change, existing, extra) (missing a required "
     "argument: 'extra')"),
    ("keyword_only", "its signature is (change, *, existing)"),
    ("awaited", "is an async function: the writer calls the resolver and does not await "
     "it"),
    ("yields", "is a generator function (it yields)"),
    ("Kind", "is a class, not a function"),
    ("async_instance", "is an async function"),
    ("yielding_instance", "is a generator function (it yields)"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("command", "function", "says"),
    [("validate", *case) for case in REFUSED] + [("run", *case) for case in REFUSED[::3]],
)
def test_a_resolver_that_cannot_decide_as_it_is_called_is_refused(
    tmp_path: Path, command: str, function: str, says: str
) -> None:
    """Each was accepted, and every change of the job then dead-lettered (resolver_failed
    or unplannable) with the destination left empty."""
    job = JOB.replace("resolver_module:decide", f"resolver_module:{function}")
    (line,) = _problems(_command(tmp_path, command, SIGNATURES, job))
    assert line.startswith(
        f"  conflict.resolver (line 4): custom resolver 'resolver_module:{function}': "
        f"resolver_module.{function} "
    ), line
    assert says in line, line


# ``injected``: a decorator's wrapper takes (change, existing) and passes the function
# one more argument; its signature, read through functools.wraps, would not.
@pytest.mark.parametrize(
    "function", ["with_defaults", "any_args", "decide", "injected", "instance"]
)
def test_a_resolver_callable_with_incoming_and_existing_passes(
    tmp_path: Path, function: str
) -> None:
    job = JOB.replace("resolver_module:decide", f"resolver_module:{function}")
    result = _command(tmp_path, "validate", SIGNATURES, job)
    assert result.returncode == 0, result.stdout + result.stderr
