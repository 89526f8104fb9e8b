"""Reads a job file: YAML with ``${VAR}`` expansion, validated, every error reported at once.

Operators fix job files under pressure, so an error names the file, the key path
(``destinations[1].region``), the line, and what was expected, and all problems are
listed in one go rather than one per attempt.
"""

from __future__ import annotations

import datetime
import difflib
import errno
import math
import os
import re
import reprlib
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from replicator.config.cross_checks import FILE_CHECK_KEYS, Problems, cross_checks, disk_checks
from replicator.config.fields import shown
from replicator.config.model import NULL_FOR_A_DEFAULT, JobConfig, ResolvedJob
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
_INT_TAG = _YAML_TAG + "int"
_FLOAT_TAG = _YAML_TAG + "float"
_STR_TAG = _YAML_TAG + "str"
_VALUE_TAG = _YAML_TAG + "value"
_MERGE_TAG = _YAML_TAG + "merge"
# The tags plain YAML gives values, implied or written (``!!str 1``): every other one
# (``!!python/...``, ``!!binary``, ``!custom``) is refused.
_PLAIN_TAGS = frozenset(
    _YAML_TAG + name
    for name in ("str", "int", "float", "bool", "null", "timestamp", "map", "seq", "merge")
)
# YAML 1.2's core schema: booleans, integers (decimal, 0o octal, 0x hexadecimal) and
# floats. YAML 1.1 (PyYAML's) also read 010 as octal (8), 0b1 as binary, 1_000 and
# 1:30 (sexagesimal, 90) as numbers: text here, which a number's key refuses.
_BOOL = re.compile(r"true|True|TRUE|false|False|FALSE")
_INT = re.compile(r"[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+")
_FLOAT = re.compile(
    r"[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
    r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN)"
)


def _anchored(pattern: re.Pattern[str]) -> re.Pattern[str]:
    r"""PyYAML's resolver tries ``.match``: the whole text, up to its very end (``\Z``;
    ``$`` would also stop before a final newline)."""
    return re.compile(rf"(?:{pattern.pattern})\Z")


# The events of a YAML text: libyaml's parser where PyYAML has it (some ten times faster
# than its pure Python one, which a file of 200,000 keys takes half a minute in).
_EVENTS: Callable[[str], Any] = (
    yaml.cyaml.CParser if yaml.__with_libyaml__ else yaml.SafeLoader  # type: ignore[attr-defined]
)


class _JobLoader(yaml.composer.Composer, yaml.resolver.Resolver):
    """YAML's nodes of a job file, its plain scalars read as YAML 1.2's core schema does.

    Only ``true``/``false`` (and their capitalized forms) are booleans: YAML 1.1's
    ``yes``, ``no``, ``on``, ``off`` and ``y``/``n`` stay text, so that a switch refuses
    them (as it refuses the same words from a ``${VAR}``) and a table or name ``no`` is
    not read as false. Integers are YAML 1.2's: ``010`` is ten, as an operator reading
    ``port: 010000`` takes it, not YAML 1.1's octal 4096.

    A plain ``=`` is text too, as YAML 1.2 reads it: YAML 1.1's "value key" type, which
    PyYAML gives it, is no value a job file can hold, and refusing it as a tag would
    name a tag no one wrote."""

    def __init__(self, stream: str) -> None:
        self._events = _EVENTS(stream)
        yaml.composer.Composer.__init__(self)
        yaml.resolver.Resolver.__init__(self)
        # The line each alias is written on, by its parent node and its place there (an
        # index, or the id() of its key's node): the node an alias gives is its
        # anchor's, which has only the anchor's position.
        self.alias_lines: dict[tuple[int, int], int] = {}

    def check_event(self, *choices: type[yaml.Event]) -> bool:
        return bool(self._events.check_event(*choices))

    def peek_event(self) -> Any:
        return self._events.peek_event()

    def get_event(self) -> Any:
        return self._events.get_event()

    def dispose(self) -> None:
        self._events.dispose()

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        if parent is not None and index is not None and self.check_event(yaml.AliasEvent):
            place = index if isinstance(index, int) else id(index)
            self.alias_lines[(id(parent), place)] = self.peek_event().start_mark.line + 1
        return super().compose_node(parent, index)


_REPLACED = {_BOOL_TAG, _INT_TAG, _FLOAT_TAG, _VALUE_TAG}
_JobLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag not in _REPLACED]
    for first, resolvers in yaml.resolver.Resolver.yaml_implicit_resolvers.items()
}
# Integers before floats: 10 is an integer, though the float pattern takes it too.
for _tag, _pattern, _firsts in (
    (_BOOL_TAG, _BOOL, "tTfF"),
    (_INT_TAG, _INT, "-+0123456789"),
    (_FLOAT_TAG, _FLOAT, "-+.0123456789"),
):
    _JobLoader.add_implicit_resolver(_tag, _anchored(_pattern), list(_firsts))


# The most digits an integer of a job file may have: the largest number a key takes (a
# KCL decimal property, a Java double) has 309. Python turns no integer of more than
# 4,300 decimal digits into text, so a longer one could not even be quoted in a message.
MAX_NUMBER_DIGITS = 1000


def _digits(text: str) -> str:
    """The digits of an integer as YAML 1.2 writes it, without its sign or base prefix."""
    unsigned = text.lstrip("+-")
    return unsigned[2:] if unsigned.startswith(("0x", "0o")) else unsigned


class _LongNumber(Exception):
    """An integer written with more than MAX_NUMBER_DIGITS digits: a problem at its key,
    quoted by its length (its value is never made, nor shown)."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.shortened = text[:16] + "…"
        self.message = (
            f"got a number of {len(_digits(text)):,} digits ({self.shortened}): no setting "
            f"takes a number of more than {MAX_NUMBER_DIGITS:,} digits"
        )


class _JobConstructor(yaml.constructor.SafeConstructor):
    """Numbers as YAML 1.2 reads them, written (``!!int 010``) or implied alike."""

    def construct_int(self, node: yaml.ScalarNode) -> int:
        text = self.construct_scalar(node)
        if not _INT.fullmatch(text):
            # int() itself would take 1_000 and spaces; YAML 1.2 takes neither.
            raise ValueError(text)
        if len(_digits(text)) > MAX_NUMBER_DIGITS:
            raise _LongNumber(text)
        if text.startswith("0o"):
            return int(text[2:], 8)
        if text.startswith("0x"):
            return int(text[2:], 16)
        return int(text, 10)

    def construct_float(self, node: yaml.ScalarNode) -> float | str:
        text = self.construct_scalar(node)
        if not _FLOAT.fullmatch(text):
            raise ValueError(text)
        if text.lstrip("+-").lower() in {".inf", ".nan"}:
            return self.construct_yaml_float(node)
        value = float(text)
        # 1e999 is past any float: kept as written, each key refuses it quoting the
        # text, rather than an infinity that no one wrote.
        return value if math.isfinite(value) else text


_JobConstructor.yaml_constructors = {
    **yaml.constructor.SafeConstructor.yaml_constructors,
    _INT_TAG: _JobConstructor.construct_int,
    _FLOAT_TAG: _JobConstructor.construct_float,
}

# How many values a job file's anchors, aliases and merge keys may add to what it
# writes out (each alias counts the values it repeats, each merge the keys it copies).
# A real job repeats a few dozen; a "billion laughs" file (aliases of lists of
# aliases) multiplies them at each level, into gigabytes for a file of 600 bytes.
MAX_REPEATED_VALUES = 1_000_000

KeyPath = tuple[str | int, ...]


@dataclass(frozen=True)
class _Problem:
    path: KeyPath
    message: str


class _Repeats:
    """The keys of one mapping given more than once, each one problem naming every line
    that gives it (the problem's own line is the last, whose value would win): ``key
    appears twice (lines 4, 9)``. The problem takes its place among the others where the
    key is first repeated, before the problems of that repeat's value."""

    def __init__(self, problems: list[_Problem], path: KeyPath) -> None:
        self._problems = problems
        self._path = path
        self._lines: dict[str, list[tuple[int, int]]] = {}  # (line, column) of each
        self._places: dict[str, int] = {}  # where in ``problems`` each repeated key's goes

    def seen(self, key: str, node: yaml.Node) -> bool:
        """Note ``key`` written at ``node``; whether it was written before."""
        lines = self._lines.setdefault(key, [])
        lines.append((node.start_mark.line + 1, node.start_mark.column + 1))
        if len(lines) == 2:
            self._places[key] = len(self._problems)
            self._problems.append(_Problem((*self._path, key), ""))  # its text: report()
        return len(lines) > 1

    def report(self) -> None:
        """Give each repeated key's problem its text, once the mapping is read."""
        for key, place in self._places.items():
            places = self._lines[key]
            times = "twice" if len(places) == 2 else f"{len(places)} times"
            numbers = [line for line, _ in places]
            if len(set(numbers)) == len(numbers):
                where = f"lines {', '.join(str(line) for line in numbers)}"
            else:  # twice on one line, in a {...} mapping: the columns tell them apart
                where = ", ".join(f"line {line} column {column}" for line, column in places)
            self._problems[place] = _Problem((*self._path, key), f"key appears {times} ({where})")


def format_path(path: KeyPath) -> str:
    """``('destinations', 1, 'region')`` -> ``destinations[1].region``."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else part
    return text or "(top level)"


def _too_deep(file: Path) -> str:
    # Hundreds of [ or { inside each other (libyaml stops at 1,000): no job nests more
    # than a few, and Python's stack ends before such a file does.
    return (
        f"{file}: lists and mappings nested too deeply to read (hundreds of [ or {{ inside "
        "each other); a job file nests a few levels"
    )


def _unacceptable(source: str, error: yaml.reader.ReaderError) -> str:
    """A character YAML does not allow (a control character, U+FFFE), placed as the other
    syntax errors are: the reader gives only an offset into the text (libyaml's in
    bytes), which no editor shows. The first such character is the one it stopped at."""
    character = error.character if isinstance(error.character, int) else -1
    offset = source.find(chr(character)) if 0 <= character <= 0x10FFFF else -1
    if offset < 0:
        return f"YAML error: {error}"
    line = source.count("\n", 0, offset) + 1
    column = offset - source.rfind("\n", 0, offset)
    return (
        f"YAML syntax error at line {line}, column {column}: unacceptable character "
        f"#x{character:04x}: {error.reason}"
    )


def _documents_hint(error: yaml.MarkedYAMLError) -> str:
    """What to do about a second YAML document (a ``---`` after the job), which YAML's
    own words ("but found another document") do not say."""
    if "another document" not in str(error.problem):
        return ""
    return (
        " (a job file holds one job, one YAML document: remove the --- that starts a "
        "second one, or put each job in a file of its own)"
    )


def _flow_hint(source: str, error: yaml.MarkedYAMLError) -> str:
    """A hint for the usual cause of a syntax error in braces with ``${VAR}`` in them
    (``{table: ${TABLE}}``): in YAML's flow style ``{`` and ``}`` end the value, so an
    unquoted ``${...}`` there breaks the mapping. Quoted, it is expanded as anywhere.
    Looked for from where the flow mapping or sequence began to where the error is."""
    marks = [mark for mark in (error.context_mark, error.problem_mark) if mark is not None]
    if not marks or "flow" not in f"{error.context or ''} {error.problem or ''}":
        return ""
    lines = source.splitlines()[min(m.line for m in marks) : max(m.line for m in marks) + 1]
    if any(_UNQUOTED_VARIABLE.search(line) for line in lines):
        return (
            '; a ${VAR} inside { } or [ ] must be quoted (table: "${TABLE}"): in YAML\'s '
            "flow style { and } end a value"
        )
    return ""


# ``${`` that does not open a quoted value (``"${`` or ``'${``).
_UNQUOTED_VARIABLE = re.compile(r"""(?<!["'])\$\{""")


class _Document:
    """A YAML document as plain values, and the line of each key path in it.

    Built as YAML builds it: an alias is the very value its anchor built, not a copy,
    so that a file of aliases of aliases (600 bytes can stand for gigabytes) costs what
    its text does, and the values the aliases repeat are counted and bounded
    (MAX_REPEATED_VALUES). The line of a key path is found, when a problem needs it,
    by following the path through the composed nodes: a line kept for every path would
    be as large as the aliases make the document."""

    def __init__(self, source: str, file: Path) -> None:
        self.file = file
        self.problems: list[_Problem] = []
        self._constructor = _JobConstructor()
        self._built: dict[int, Any] = {}  # by id() of the node: nodes live as long as _root
        self._sizes: dict[int, int] = {}  # values in a node with its aliases written out
        self._building: set[int] = set()
        self._repeated = 0
        self._entries: dict[int, dict[str, tuple[yaml.Node, int]]] = {}
        self._flagged: set[int] = set()  # nodes whose ${VAR} did not expand
        loader: _JobLoader | None = None
        try:
            loader = _JobLoader(source)
            node = loader.get_single_node()
        except yaml.MarkedYAMLError as error:
            mark = error.problem_mark or error.context_mark
            where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown line"
            raise ConfigError(
                f"{file}: YAML syntax error at {where}: {error.problem or error}"
                + _flow_hint(source, error)
                + _documents_hint(error)
            ) from None
        except yaml.reader.ReaderError as error:
            raise ConfigError(f"{file}: {_unacceptable(source, error)}") from None
        except (yaml.YAMLError, UnicodeError) as error:
            raise ConfigError(f"{file}: YAML error: {error}") from None
        except RecursionError:
            raise ConfigError(_too_deep(file)) from None
        finally:
            if loader is not None:
                loader.dispose()
        self._alias_lines = loader.alias_lines
        # A document of a null alone (``~``, ``---`` then ``...``) is as empty as an empty
        # file, and is told the same: which keys it needs.
        if isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:null":
            node = None
        self._root: yaml.Node | None = node
        self.empty = node is None
        try:
            self.value: Any = {} if node is None else self._build(node, ())
        except RecursionError:
            raise ConfigError(_too_deep(file)) from None

    def _build(self, node: yaml.Node, path: KeyPath) -> Any:
        known = id(node)
        if known in self._building:
            # An alias inside the node it names (a: &x [*x]) would never end.
            self.problems.append(_Problem(path, "refers to itself (an alias inside its anchor)"))
            return None
        if known in self._built:
            self._repeat(self._sizes[known], path)
            return self._built[known]
        self._check_tag(node)
        self._building.add(known)
        try:
            value: Any
            if isinstance(node, yaml.MappingNode):
                value, size = self._mapping(node, path)
            elif isinstance(node, yaml.SequenceNode):
                value = [self._build(item, (*path, index)) for index, item in enumerate(node.value)]
                size = 1 + sum(self._sizes.get(id(item), 1) for item in node.value)
            else:
                size = 1
                try:
                    value = self._scalar(node, path)
                except _LongNumber as error:
                    value = error.shortened  # a list that holds it quotes it so
                    self.problems.append(_Problem(path, error.message))
                    self._flagged.add(known)
                if isinstance(value, str):
                    value = self._expand(value, node, path)
        finally:
            self._building.discard(known)
        self._built[known] = value
        self._sizes[known] = size
        return value

    def _repeat(self, count: int, path: KeyPath) -> None:
        """Count values an alias or a merge key repeats; past the bound, the file is
        refused at the key where it was passed."""
        self._repeated += count
        if self._repeated > MAX_REPEATED_VALUES:
            line = self.line_of(path)
            raise ConfigError(
                f"{self.file}: {format_path(path)}{f' (line {line})' if line else ''}: the "
                f"anchors and aliases of the job file repeat more than "
                f"{MAX_REPEATED_VALUES:,} values by here (aliases of lists of aliases "
                "multiply at each level, as in a 'billion laughs' file); a job file repeats "
                "a few settings: write them out, or alias fewer levels"
            )

    def _mapping(self, node: yaml.MappingNode, path: KeyPath) -> tuple[dict[str, Any], int]:
        """A mapping, and its size, with YAML's merge key: ``<<: *defaults`` (or a list
        of aliases) gives the keys of those mappings that the mapping does not set
        itself, the first mapping listed winning, as YAML defines it."""
        result: dict[str, Any] = {}
        size = 1
        # Keys are unique in YAML, << too: a second would silently win.
        repeats = _Repeats(self.problems, path)
        for key_node, value_node in node.value:
            if key_node.tag != _MERGE_TAG:
                continue
            if repeats.seen("<<", key_node):
                continue
            sources = (
                value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
            )
            if not all(isinstance(source, yaml.MappingNode) for source in sources):
                self.problems.append(
                    _Problem(
                        (*path, "<<"),
                        "the merge key << takes a mapping or a list of mappings (such as "
                        "*defaults or [*a, *b])",
                    )
                )
            # The last first, so that an earlier one's keys replace it.
            for source in reversed(sources):
                if not isinstance(source, yaml.MappingNode):
                    continue
                merged = self._build(source, path)
                if isinstance(merged, dict):
                    self._repeat(len(merged), (*path, "<<"))
                    result.update(merged)
                    size += self._sizes.get(id(source), 1)
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                continue
            key = self._key(key_node)
            repeats.seen(key, key_node)
            result[key] = self._build(value_node, (*path, key))
            size += 1 + self._sizes.get(id(value_node), 1)
        repeats.report()
        return result, size

    def _key(self, node: yaml.Node) -> str:
        """A key as it is written: ``null:``, ``true:`` or ``010:`` is the key ``null``,
        ``true`` or ``010`` (no key of a job file is anything but a word)."""
        if not isinstance(node, yaml.ScalarNode):
            raise ConfigError(
                f"{self.file}: line {node.start_mark.line + 1}, column "
                f"{node.start_mark.column + 1}: a key must be a word, not a list or "
                "mapping (a ? key)"
            )
        try:
            key = self._scalar(node, ())
        except _LongNumber as error:
            return error.shortened
        return key if isinstance(key, str) else str(node.value)

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
        except _LongNumber:
            # PyYAML keeps a node it did not finish as one under construction, which
            # would read as a recursive node when it is read again (a key is read twice).
            self._constructor.recursive_objects.pop(node, None)
            raise
        except (yaml.YAMLError, ValueError, KeyError, AttributeError):
            # A value its tag cannot read: `!!int ten`, or a date such as 2026-13-45.
            tag = node.tag.replace(_YAML_TAG, "", 1)
            raise ConfigError(
                f"{self.file}: line {node.start_mark.line + 1}, column "
                f"{node.start_mark.column + 1}: {shown(str(node.value))} is not a valid {tag} "
                "(quote it to give it as text)"
            ) from None

    def _expand(self, text: str, node: yaml.Node, path: KeyPath) -> str:
        def problem(message: str) -> None:
            self.problems.append(_Problem(path, message))
            self._flagged.add(id(node))

        def replace(match: re.Match[str]) -> str:
            if match.group(0) == "$$":
                return "$"
            malformed = match.group("malformed")
            if malformed is not None:
                problem(
                    f"malformed variable reference {malformed!r}: write ${{VAR}} or "
                    "${VAR:-default} (a default without $, { or }), and $$ for a literal $"
                )
                return malformed
            name, default = match.group("name"), match.group("default")
            value = os.environ.get(name)
            if value is None or (value == "" and default is not None):
                if default is not None:
                    return default
                problem(f"environment variable {name} is not set (and has no default)")
                return ""
            return value

        return _VARIABLE.sub(replace, text)

    def _nodes(self, path: KeyPath) -> list[tuple[yaml.Node, int]]:
        """The nodes along ``path`` as far as the file has it, each with its line (an
        alias's own line, not its anchor's)."""
        if self._root is None:
            return []
        found = [(self._root, self._root.start_mark.line + 1)]
        for part in path:
            node = found[-1][0]
            step: tuple[yaml.Node, int] | None = None
            if isinstance(node, yaml.MappingNode) and isinstance(part, str):
                step = self._entries_of(node, set()).get(part)
            elif (
                isinstance(node, yaml.SequenceNode)
                and isinstance(part, int)
                and 0 <= part < len(node.value)
            ):
                item = node.value[part]
                line = self._alias_lines.get((id(node), part), item.start_mark.line + 1)
                step = (item, line)
            if step is None:
                break
            found.append(step)
        return found

    def _entries_of(
        self, node: yaml.MappingNode, seen: set[int]
    ) -> dict[str, tuple[yaml.Node, int]]:
        """A mapping's keys, as _mapping reads them, each with its value's node and line
        (``<<``: the merge key's own line); made once per mapping."""
        known = self._entries.get(id(node))
        if known is not None:
            return known
        entries: dict[str, tuple[yaml.Node, int]] = {}
        seen.add(id(node))
        merges = [(key, value) for key, value in node.value if key.tag == _MERGE_TAG]
        if merges:
            # Only the first << merges (a second is refused as a key given twice, and
            # is the line that names it).
            value_node = merges[0][1]
            sources = (
                value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
            )
            for source in reversed(sources):
                if isinstance(source, yaml.MappingNode) and id(source) not in seen:
                    entries.update(self._entries_of(source, seen))
            entries["<<"] = (merges[-1][0], merges[-1][0].start_mark.line + 1)
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG or not isinstance(key_node, yaml.ScalarNode):
                continue
            line = self._alias_lines.get((id(node), id(key_node)), value_node.start_mark.line + 1)
            entries[self._key(key_node)] = (value_node, line)
        seen.discard(id(node))
        self._entries[id(node)] = entries
        return entries

    def line_of(self, path: KeyPath) -> int | None:
        """The line of the deepest part of ``path`` that the file actually contains; None
        when it contains none of it (the document's first line is not where a section
        the file leaves out would be)."""
        found = self._nodes(path)
        return found[-1][1] if len(found) > (1 if path else 0) else None

    def written(self, path: KeyPath) -> str | None:
        """The text written for the scalar at ``path``, if the file has one there."""
        found = self._nodes(path)
        if len(found) == len(path) + 1 and isinstance(found[-1][0], yaml.ScalarNode):
            return str(found[-1][0].value)
        return None

    def reported(self, path: KeyPath) -> bool:
        """Whether the value at ``path`` had a problem of its own already (a ${VAR} that
        did not expand, also where an alias repeats it)."""
        found = self._nodes(path)
        return len(found) == len(path) + 1 and id(found[-1][0]) in self._flagged


def _pydantic_problems(error: ValidationError, document: _Document) -> list[_Problem]:
    problems = []
    for item in error.errors(include_url=False):
        path: KeyPath = tuple(
            part for part in item["loc"] if isinstance(part, int | str) and not _is_tag(part)
        )
        kind = item["type"]
        if kind == "extra_forbidden":
            message = "unknown key" + _did_you_mean(path)
        elif kind == "missing":
            message = "required key is missing"
        elif kind == NULL_FOR_A_DEFAULT:
            written = document.written(path)
            message = (
                f"got {written or 'null'}, an empty value: give a value, or leave the key "
                "out for its default"
            )
        else:
            message = _in_plain_words(kind, item["msg"], item.get("ctx") or {})
            written = document.written(path)
            set_by = _set_by(written)
            said = [set_by] if set_by else []
            if "input" in item and kind not in {"value_error", "assertion_error"}:
                said.insert(0, _got(item["input"], written, text_expected=kind == "string_type"))
            if said:
                message += f" ({', '.join(said)})"
        problems.append(_Problem(path, message))
    return problems


# pydantic's words for a value of the wrong kind name its classes (``instance of
# SourceConfig``) and its steps (``after validation``): a job file's reader knows keys.
_PLAIN_WORDS = {
    "model_type": "expected a section of keys (key: value lines, or {key: value})",
    "dict_type": "expected a section of keys (key: value lines, or {key: value})",
    "list_type": "expected a list (- item lines, or [item, ...])",
    "string_type": "expected text",
    "int_type": "expected a whole number",
    "int_parsing": "expected a whole number",
    "int_from_float": "expected a whole number",
    "float_type": "expected a number",
    "float_parsing": "expected a number",
}
_BOUND_WORDS = {
    "greater_than_equal": ("ge", "must be at least"),
    "greater_than": ("gt", "must be more than"),
    "less_than_equal": ("le", "must be at most"),
    "less_than": ("lt", "must be less than"),
}


def _in_plain_words(kind: str, message: str, context: Mapping[str, Any]) -> str:
    """pydantic's message for a problem of ``kind``, in the words of a job file."""
    if kind in _PLAIN_WORDS:
        return _PLAIN_WORDS[kind]
    if kind in _BOUND_WORDS and _BOUND_WORDS[kind][0] in context:
        bound, words = _BOUND_WORDS[kind]
        return f"{words} {context[bound]}"
    if kind == "too_short" and "min_length" in context:
        least = context["min_length"]
        return f"needs at least {least} entr{'y' if least == 1 else 'ies'}"
    message = message.removeprefix("Value error, ")
    return (
        f"expected {message.removeprefix('Input should be ')}"
        if message.startswith("Input should be ")
        else message
    )


def _set_by(written: str | None) -> str:
    """Where a value came from when the environment gave it (``${VAR}`` in the file, the
    variable set): the variable is what to change, not the file's line."""
    if not written:
        return ""
    names = []
    for match in _VARIABLE.finditer(written):
        name = match.group("name")
        if name is None or name not in os.environ:
            continue
        if os.environ[name]:
            names.append(name)
        elif match.group("default") is None:  # set but empty, and no default in its place
            names.append(f"{name} (set, empty)")
    if not names:
        return ""
    return f"from the environment: {', '.join(dict.fromkeys(names))}"


def _did_you_mean(path: KeyPath) -> str:
    """A hint naming the key an unknown one was meant to be: where it belongs, when it is
    another section's (``kcl: {metrics: ...}``, ``worker_id`` at the top level), else
    the section's key closest to it (a typo such as ``resolvr`` or ``max_inflight``), or
    nothing when none is close."""
    if not path or not isinstance(path[-1], str):
        return ""
    section: Any = JobConfig
    for part in path[:-1]:
        if isinstance(part, int):
            continue
        field = section.model_fields.get(part) if _is_model(section) else None
        section = _model_in(field.annotation) if field is not None else None
        if section is None:
            return ""
    if not _is_model(section):
        return ""
    # A key of another section written here (``worker_id`` at the top level for
    # ``kcl.worker_id``) is named where it belongs when one other section alone has it,
    # before a close spelling here (``conflict.origin_attribute`` is not the
    # ``version_attribute`` next to it).
    here = tuple(part for part in path[:-1] if isinstance(part, str))
    elsewhere = [text for where, text in _places_of(path[-1], JobConfig) if where != here]
    if len(elsewhere) == 1:
        return f" (did you mean {elsewhere[0]}?)"
    keys = list(section.model_fields)
    close = difflib.get_close_matches(path[-1], keys, n=1, cutoff=0.7)
    # A key cut short (``role`` for role_arn) is too short for difflib's ratio; told
    # only when one key begins so (``max`` could be any of several).
    begun = [key for key in keys if key.startswith(f"{path[-1]}_")]
    close = close or (begun if len(begun) == 1 else [])
    return f" (did you mean {close[0]}?)" if close else ""


def _places_of(
    name: str,
    section: type[BaseModel],
    within: tuple[str, ...] = (),
    shown: tuple[str, ...] = (),
) -> list[tuple[tuple[str, ...], str]]:
    """Each section holding a key called ``name``: its path of keys and the key as a
    reader would write it (``kcl.worker_id``, ``destinations[].role_arn``)."""
    found: list[tuple[tuple[str, ...], str]] = []
    for key, field in section.model_fields.items():
        if key == name:
            found.append((within, ".".join((*shown, key)) if shown else f"the top-level {key}"))
        inner = _model_in(field.annotation)
        if inner is not None:
            written = f"{key}[]" if _is_list(field.annotation) else key
            found.extend(_places_of(name, inner, (*within, key), (*shown, written)))
    return found


def _is_list(annotation: Any) -> bool:
    """Whether an annotation is a list (through Optional and Annotated)."""
    return typing.get_origin(annotation) is list or any(
        _is_list(argument) for argument in typing.get_args(annotation)
    )


def _is_model(kind: Any) -> bool:
    return isinstance(kind, type) and issubclass(kind, BaseModel)


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The section model an annotation holds (through Optional, Annotated and list)."""
    if _is_model(annotation):
        return typing.cast(type[BaseModel], annotation)
    for argument in typing.get_args(annotation):
        found = _model_in(argument)
        if found is not None:
            return found
    return None


# An input shown in a message: a list or mapping to a few items and levels, as one
# repeated by aliases may hold a million values.
_SHOWN = reprlib.Repr()
_SHOWN.maxlevel, _SHOWN.maxlist, _SHOWN.maxdict = 2, 4, 4
_SHOWN.maxstring = _SHOWN.maxother = 200


def _got(value: object, written: str | None, *, text_expected: bool = False) -> str:
    """What a value was, in the words of the file: a date is the date written (YAML reads
    2026-01-01 as a date, not the text ``datetime.date(2026, 1, 1)`` shows). Where text
    is expected, a number or a boolean YAML read from a bare word is named as such, with
    the quotes that make it text (``table: 12345`` is a fine table name), and a null as
    YAML writes it, not as Python's None."""
    if text_expected and value is None:
        return f"got {written or 'null'}, an empty value: give the text"
    if text_expected and isinstance(value, bool | int | float):
        # A number of more than MAX_NUMBER_DIGITS digits was refused as it was read
        # (_LongNumber), so its text can be made (Python refuses above 4,300).
        literal = written or repr(value)
        what = "a boolean" if isinstance(value, bool) else "a number"
        return (
            f"got {literal if len(literal) <= 40 else shown(literal)}, which YAML reads as "
            f"{what}: write it in quotes, "
            f'"{literal}", to give it as text'
        )
    if isinstance(value, datetime.date):
        date = written or value.isoformat()
        return (
            f"got {date}, which YAML reads as a date: write it in quotes, "
            f'"{date}", to give it as text'
        )
    if isinstance(value, list | dict):
        return f"got {_SHOWN.repr(value)}"
    if isinstance(value, str):
        return f"got {shown(value)}"
    return f"got {value!r}"


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


def job_file_path(path: Path) -> Path:
    """``path`` made absolute with its links followed, as the commands name the job in
    their logs; a loop of symbolic links is the job file's problem (exit 2), as reading
    it says, where Python 3.11's ``resolve`` raised a RuntimeError (a traceback, exit 1)."""
    try:
        return path.resolve()
    except RuntimeError:
        raise ConfigError(f"{path}: cannot read job file: {os.strerror(errno.ELOOP)}") from None
    except OSError as error:
        raise ConfigError(f"{path}: cannot read job file: {error.strerror or error}") from None


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
        reported = {problem.path for problem in document.problems}

        def unexpanded(path: KeyPath) -> bool:
            return path in reported or document.reported(path)

        try:
            job = JobConfig.model_validate(document.value)
        except ValidationError as error:
            field_problems = _pydantic_problems(error, document)
            problems.extend(p for p in field_problems if not unexpanded(p.path))
            invalid = _top_keys([*document.problems, *field_problems])
            checked = _without(document.value, invalid)
        else:
            invalid = _top_keys(document.problems)
            checked = job
        if checked is not None:
            problems.extend(
                _Problem(path, message)
                for path, message in cross_checks(checked, invalid, file)
                if not unexpanded(path)
            )
            if on_disk and FILE_CHECK_KEYS.isdisjoint(invalid):
                problems.extend(
                    _Problem(path, message)
                    for path, message in disk_checks(checked)
                    if not unexpanded(path)
                )
        if resolvers:
            problems.extend(_Problem(*problem) for problem in resolver_problems(document.value))
    if problems or job is None:
        raise _listed(file, document, problems)
    return ResolvedJob(
        job=job, path=file, task_name=job.task_name or default_task_name(job), text=source
    )


def _listed(file: Path, document: _Document | None, problems: list[_Problem]) -> ConfigError:
    """The job file's problems, each at its key and (where the file has it) its line."""
    lines = []
    for problem in problems:
        line = document.line_of(problem.path) if document is not None else None
        where = f" (line {line})" if line else ""
        lines.append(f"  {format_path(problem.path)}{where}: {problem.message}")
    count = len(problems)
    empty = document is not None and document.empty
    said = " (it holds no job: it is empty, comments alone, or a null)" if empty else ""
    return ConfigError(
        f"{file}: {count} problem{'s' if count != 1 else ''} in the job file{said}:\n"
        + "\n".join(lines)
    )


def job_file_error(resolved: ResolvedJob, problems: Problems) -> ConfigError:
    """Problems of a loaded job that only what it reaches tells (a source table's key
    schema), listed as ``validate`` lists the file's own: all at once, each at its key
    and line, found again in the text the job was loaded from."""
    document = None
    if resolved.text is not None:
        try:
            document = _Document(resolved.text, resolved.path)
        except ConfigError:  # not the text it was loaded from: no lines, then
            document = None
    return _listed(resolved.path, document, [_Problem(*problem) for problem in problems])


def refuse_directory(resolved: ResolvedJob, section: str, *, any_kind: bool = False) -> None:
    """The file of ``section`` (``dead_letter`` or ``conflict_log``) naming a directory
    that exists (``any_kind``: or anything else but a regular file, such as a FIFO that
    reading would wait on for ever), refused as ``validate`` refuses it: a problem of
    the job file, at its key and line (a start or a command meets it only when it
    reaches the file)."""
    problems = [
        problem
        for problem in disk_checks(resolved.job, directories_only=not any_kind)
        if problem[0][0] == section
    ]
    if problems:
        raise job_file_error(resolved, problems)
