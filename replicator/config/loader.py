"""Reads a job file: YAML with ``${VAR}`` expansion, validated, every error reported at once.

Operators fix job files under pressure, so an error names the file, the key path
(``destinations[1].region``), the line, and what was expected, and all problems are
listed in one go rather than one per attempt.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from replicator.config.model import (
    FILE_CHECK_KEYS,
    JobConfig,
    ResolvedJob,
    cross_checks,
    disk_checks,
)
from replicator.config.resolvers import resolver_problems
from replicator.config.task_name import default_task_name
from replicator.exceptions import ConfigError

# ``$$``, ``${VAR}`` and ``${VAR:-default}`` (a default of text without ``$ { }``); any
# other ``${...}`` or ``$NAME`` is a malformed reference (``${A-x}``, ``${ A }``,
# ``${A:-${B}}``), refused rather than kept as literal text.
_VARIABLE = re.compile(
    r"\$\$"
    r"|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>[^${}]*))?\}"
    r"|(?P<malformed>\$\{[^}]*\}?|\$[A-Za-z_][A-Za-z0-9_]*)"
)
_YAML_TAG = "tag:yaml.org,2002:"
_BOOL_TAG = _YAML_TAG + "bool"
_VALUE_TAG = _YAML_TAG + "value"
_MERGE_TAG = _YAML_TAG + "merge"
# The tags plain YAML gives values, implied or written (``!!str 1``): every other one
# (``!!python/...``, ``!!binary``, ``!custom``) is refused.
_PLAIN_TAGS = frozenset(
    _YAML_TAG + name
    for name in ("str", "int", "float", "bool", "null", "timestamp", "map", "seq", "merge")
)


class _JobLoader(yaml.SafeLoader):
    """PyYAML's safe loader, but only YAML 1.2's core booleans (``true``, ``True``,
    ``TRUE`` and the same of ``false``) are booleans: YAML 1.1's ``yes``, ``no``, ``on``,
    ``off`` and ``y``/``n`` stay text, so that a switch refuses them (as it refuses the
    same words from a ``${VAR}``) and a table or name ``no`` is not read as false.

    A plain ``=`` is text too, as YAML 1.2 reads it: YAML 1.1's "value key" type, which
    PyYAML gives it, is no value a job file can hold, and refusing it as a tag would
    name a tag no one wrote."""


_JobLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != _BOOL_TAG]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_JobLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != _VALUE_TAG]
    for first, resolvers in _JobLoader.yaml_implicit_resolvers.items()
}
_JobLoader.add_implicit_resolver(
    _BOOL_TAG, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)

KeyPath = tuple[str | int, ...]


@dataclass(frozen=True)
class _Problem:
    path: KeyPath
    message: str


def format_path(path: KeyPath) -> str:
    """``('destinations', 1, 'region')`` -> ``destinations[1].region``."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else part
    return text or "(top level)"


class _Document:
    """A YAML document as plain values, remembering the line of every key path."""

    def __init__(self, source: str, file: Path) -> None:
        self.file = file
        self.lines: dict[KeyPath, int] = {}
        self.problems: list[_Problem] = []
        self._constructor = yaml.constructor.SafeConstructor()
        self._building: set[int] = set()
        try:
            node = yaml.compose(source, Loader=_JobLoader)
        except yaml.MarkedYAMLError as error:
            mark = error.problem_mark or error.context_mark
            where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown line"
            raise ConfigError(
                f"{file}: YAML syntax error at {where}: {error.problem or error}"
            ) from None
        except yaml.YAMLError as error:
            raise ConfigError(f"{file}: YAML error: {error}") from None
        self.value: Any = {} if node is None else self._build(node, ())

    def _build(self, node: yaml.Node, path: KeyPath) -> Any:
        self._check_tag(node)
        self.lines[path] = node.start_mark.line + 1
        if id(node) in self._building:
            # An alias inside the node it names (a: &x [*x]) would never end.
            self.problems.append(_Problem(path, "refers to itself (an alias inside its anchor)"))
            return None
        self._building.add(id(node))
        try:
            if isinstance(node, yaml.MappingNode):
                return self._mapping(node, path)
            if isinstance(node, yaml.SequenceNode):
                return [self._build(item, (*path, index)) for index, item in enumerate(node.value)]
        finally:
            self._building.discard(id(node))
        value = self._scalar(node, path)
        if isinstance(value, str):
            return self._expand(value, path)
        return value

    def _mapping(self, node: yaml.MappingNode, path: KeyPath) -> dict[str, Any]:
        """A mapping, with YAML's merge key: ``<<: *defaults`` (or a list of aliases)
        gives the keys of those mappings that the mapping does not set itself, the first
        mapping listed winning, as YAML defines it."""
        result: dict[str, Any] = {}
        own = [(key, value) for key, value in node.value if key.tag != _MERGE_TAG]
        merges = 0
        for key_node, value_node in node.value:
            if key_node.tag != _MERGE_TAG:
                continue
            self.lines[(*path, "<<")] = key_node.start_mark.line + 1
            merges += 1
            if merges > 1:
                # Keys are unique in YAML, << too: a second would silently win.
                self.problems.append(_Problem((*path, "<<"), "key appears twice"))
                continue
            sources = (
                value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
            )
            # The last first, so that an earlier one's keys (and their lines) replace it.
            for source in reversed(sources):
                if not isinstance(source, yaml.MappingNode):
                    self.problems.append(
                        _Problem(
                            (*path, "<<"),
                            "the merge key << takes a mapping or a list of mappings (such "
                            "as *defaults or [*a, *b])",
                        )
                    )
                    continue
                merged = self._build(source, path)
                if isinstance(merged, dict):
                    result.update(merged)
        self.lines[path] = node.start_mark.line + 1
        given: set[str] = set()
        for key_node, value_node in own:
            if not isinstance(key_node, yaml.ScalarNode):
                raise ConfigError(
                    f"{self.file}: line {key_node.start_mark.line + 1}, column "
                    f"{key_node.start_mark.column + 1}: a key must be a word, not a list or "
                    "mapping (a ? key)"
                )
            key = self._scalar(key_node, path)
            if not isinstance(key, str):
                key = str(key)
            if key in given:
                self.problems.append(_Problem((*path, key), "key appears twice"))
            given.add(key)
            # What a merged mapping gave this key is replaced, lines and all.
            for stale in [known for known in self.lines if known[: len(path) + 1] == (*path, key)]:
                del self.lines[stale]
            result[key] = self._build(value_node, (*path, key))
        return result

    def _check_tag(self, node: yaml.Node) -> None:
        """Only the tags plain YAML gives its values (written or implied) are read: a job
        file is data, and a tag such as ``!!python/name:...`` or ``!custom`` asks for an
        object that a safe loader does not make."""
        if node.tag in _PLAIN_TAGS:
            return
        tag = node.tag.replace(_YAML_TAG, "!!", 1) if node.tag.startswith(_YAML_TAG) else node.tag
        raise ConfigError(
            f"{self.file}: line {node.start_mark.line + 1}, column {node.start_mark.column + 1}: "
            f"the tag {tag} is not supported: a job file is plain YAML (text, numbers, true "
            "or false, lists and mappings; anchors, aliases and << merge keys); remove the tag"
        )

    def _scalar(self, node: yaml.Node, path: KeyPath) -> Any:
        self._check_tag(node)
        try:
            return self._constructor.construct_object(node, deep=True)
        except (yaml.YAMLError, ValueError, KeyError, AttributeError):
            # A value its tag cannot read: `!!int ten`, or a date such as 2026-13-45.
            tag = node.tag.replace(_YAML_TAG, "", 1)
            raise ConfigError(
                f"{self.file}: line {node.start_mark.line + 1}, column "
                f"{node.start_mark.column + 1}: {node.value!r} is not a valid {tag} "
                "(quote it to give it as text)"
            ) from None

    def _expand(self, text: str, path: KeyPath) -> str:
        def replace(match: re.Match[str]) -> str:
            if match.group(0) == "$$":
                return "$"
            malformed = match.group("malformed")
            if malformed is not None:
                self.problems.append(
                    _Problem(
                        path,
                        f"malformed variable reference {malformed!r}: write ${{VAR}} or "
                        "${VAR:-default} (a default without $, { or }), and $$ for a "
                        "literal $",
                    )
                )
                return malformed
            name, default = match.group("name"), match.group("default")
            value = os.environ.get(name)
            if value is None or (value == "" and default is not None):
                if default is not None:
                    return default
                self.problems.append(
                    _Problem(path, f"environment variable {name} is not set (and has no default)")
                )
                return ""
            return value

        return _VARIABLE.sub(replace, text)

    def line_of(self, path: KeyPath) -> int | None:
        """The line of the deepest part of ``path`` that the file actually contains."""
        for end in range(len(path), -1, -1):
            line = self.lines.get(path[:end])
            if line is not None:
                return line
        return None


def _pydantic_problems(error: ValidationError) -> list[_Problem]:
    problems = []
    for item in error.errors(include_url=False):
        path: KeyPath = tuple(
            part for part in item["loc"] if isinstance(part, int | str) and not _is_tag(part)
        )
        kind = item["type"]
        if kind == "extra_forbidden":
            message = "unknown key"
        elif kind == "missing":
            message = "required key is missing"
        else:
            message = item["msg"].removeprefix("Value error, ")
            if "input" in item and kind not in {"value_error", "assertion_error"}:
                message += f" (got {item['input']!r})"
        problems.append(_Problem(path, message))
    return problems


def _is_tag(part: int | str) -> bool:
    # pydantic inserts model/union tags such as 'function-after[...]' into locations.
    return isinstance(part, str) and ("[" in part or part.startswith("function-"))


def _top_keys(problems: list[_Problem]) -> set[str]:
    return {str(problem.path[0]) for problem in problems if problem.path}


# What stands in for an invalid required key while the cross-field checks that read
# none of the invalid keys run (those that read it are skipped: it is never judged).
_STAND_INS: dict[str, Any] = {
    "source": {"region": "us-east-1", "table": "stand-in"},
    "destinations": [{"region": "us-west-2", "table": "stand-in"}],
}


def _without(value: Mapping[str, Any], invalid: set[str]) -> JobConfig | None:
    """The job with its invalid top-level keys at their defaults (or stand-ins), for the
    cross-field checks that read none of them."""
    valid = {key: item for key, item in value.items() if key not in invalid}
    try:
        return JobConfig.model_validate(
            {**{key: _STAND_INS[key] for key in invalid if key in _STAND_INS}, **valid}
        )
    except ValidationError:
        return None


def load_job(
    path: str | os.PathLike[str],
    *,
    named: str | os.PathLike[str] | None = None,
    on_disk: bool = False,
    resolvers: bool = False,
) -> ResolvedJob:
    """Load, expand and validate a job file, or raise ConfigError listing every problem.

    ``named``: the path messages give, and the job's ``path``, when ``path`` is a copy
    (the KCL processors read the copy ``replicator run`` made of the operator's file).
    ``on_disk``: also check the job's files as they are on disk (``validate``).
    ``resolvers``: also import the custom resolvers (the commands that write).
    """
    file = Path(path) if named is None else Path(named)
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{file}: job file not found") from None
    except OSError as error:
        raise ConfigError(f"{file}: cannot read job file: {error.strerror}") from None
    try:
        source = data.decode("utf-8")
    except UnicodeDecodeError as error:
        # Named by offset and line: an editor or `od -c` finds it there.
        line = data.count(b"\n", 0, error.start) + 1
        raise ConfigError(
            f"{file}: not UTF-8 text: byte 0x{data[error.start]:02x} at offset {error.start} "
            f"(line {line}); job files are UTF-8"
        ) from None
    return parse_job(source, file, on_disk=on_disk, resolvers=resolvers)


def parse_job(
    source: str, file: Path, *, on_disk: bool = False, resolvers: bool = False
) -> ResolvedJob:
    document = _Document(source, file)
    problems = list(document.problems)
    job: JobConfig | None = None
    if not isinstance(document.value, Mapping):
        problems.append(_Problem((), "expected a mapping of keys (runtime, source, ...)"))
    else:
        # A key whose ${VAR} did not expand has already been reported once.
        unexpanded = {problem.path for problem in document.problems}
        try:
            job = JobConfig.model_validate(document.value)
        except ValidationError as error:
            field_problems = _pydantic_problems(error)
            problems.extend(p for p in field_problems if p.path not in unexpanded)
            invalid = _top_keys([*document.problems, *field_problems])
            checked = _without(document.value, invalid)
        else:
            invalid = _top_keys(document.problems)
            checked = job
        if checked is not None:
            problems.extend(
                _Problem(path, message)
                for path, message in cross_checks(checked, invalid, file)
                if path not in unexpanded
            )
            if on_disk and FILE_CHECK_KEYS.isdisjoint(invalid):
                problems.extend(
                    _Problem(path, message)
                    for path, message in disk_checks(checked)
                    if path not in unexpanded
                )
        if resolvers:
            problems.extend(_Problem(*problem) for problem in resolver_problems(document.value))
    if problems or job is None:
        lines = []
        for problem in problems:
            line = document.line_of(problem.path)
            where = f" (line {line})" if line else ""
            lines.append(f"  {format_path(problem.path)}{where}: {problem.message}")
        count = len(problems)
        raise ConfigError(
            f"{file}: {count} problem{'s' if count != 1 else ''} in the job file:\n"
            + "\n".join(lines)
        )
    return ResolvedJob(
        job=job, path=file, task_name=job.task_name or default_task_name(job), text=source
    )
