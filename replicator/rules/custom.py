"""``custom``: the user's own function decides, with optimistic concurrency.

The writer reads the destination's item (strongly consistent), calls the function
with the incoming change and that item, and writes the outcome on the condition that
the item is still exactly what was read. If another writer got there first, the
condition fails and the writer reads and decides again, up to ``max_attempts`` times.

The function is named in the job file as ``module.path:function`` and must be
importable by the worker. It receives the :class:`~replicator.records.Change` and the
existing item (``None`` when there is none), both in boto3's attribute-value form,
and returns:

* ``True``: write the change as it is (put the new image, or delete); a new image the
  function changed in place (``incoming.new_image["tag"] = ...``) is written as changed;
* ``False``: keep the destination's item (counted and recorded as a lost conflict, unless
  that item is already what the change leaves there, its new image or, for a delete, no
  item: then the outcome is ``unchanged`` and nothing is recorded);
* an item (a dict of attribute values, key attributes included): put that item.

The function is asked about every change, also when the destination already holds what
the change leaves there: it may answer with a write all the same (a soft-delete marker
for a delete of an item that is not there, its own version of an image). It is not asked
about its own write: when a write's answer was lost, every later read (and the item a
failed condition returns) is compared with what each such write leaves, as one may land
after a read that did not show it, and finding it counts the write applied.
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import inspect
import signal
import sys
import threading
import traceback
from collections.abc import Callable
from typing import Any, cast

import msgspec
from boto3.dynamodb.types import Binary

from replicator.entry import StopNow
from replicator.exceptions import PlanError, ResolverFailed
from replicator.items import AttributeValue, Item, describe_key, same_item
from replicator.records import Change, Event
from replicator.rules.requests import (
    Skip,
    Verdict,
    WriteRequest,
    holds_outcome,
    write_over,
)

Resolver = Callable[[Change, Item | None], bool | Item]


def load_resolver(dotted: str) -> Resolver:
    """Import ``module.path:function``; errors name the path and what went wrong."""
    module_name, _, attribute = dotted.partition(":")
    # What the module prints as it is imported goes to stderr in an operator command,
    # whose stdout is its report (``verify --json``, ``validate``'s summary); the
    # processor has its stdout logged already (``printed`` lines). Only on the main
    # thread, where the commands load it: the swap is the whole process's.
    on_main = threading.current_thread() is threading.main_thread()
    redirected = on_main and sys.stdout is sys.__stdout__
    try:
        with contextlib.redirect_stdout(sys.stderr) if redirected else contextlib.nullcontext():
            module = importlib.import_module(module_name)
    except StopNow:
        raise  # a second stop signal while ``run`` starts: the operator's, not the module's
    except BaseException as error:  # the user's module: a SyntaxError, its own error, sys.exit()
        if isinstance(error, KeyboardInterrupt) and _ctrl_c_raises():
            # Ctrl-C during the import stops the command. A module that raises
            # KeyboardInterrupt itself cannot be told from it, and stops it the same way.
            raise
        hint = ""
        if module_name.endswith(".py"):
            hint = " (give the module's dotted name, not a file: the worker imports it)"
        elif isinstance(error, ImportError):
            hint = " (is it installed, or on PYTHONPATH, where the worker runs?)"
        raise PlanError(
            f"custom resolver {dotted!r}: cannot import {module_name}: {_failure(error)}{hint}"
        ) from None
    function = getattr(module, attribute, None)
    if function is None:
        raise PlanError(f"custom resolver {dotted!r}: {module_name} has no function {attribute}")
    if not callable(function):
        kind = type(function).__name__
        article = "an" if kind[:1].lower() in "aeiou" else "a"
        raise PlanError(
            f"custom resolver {dotted!r}: {module_name}.{attribute} is {article} {kind}, "
            "not a function"
        )
    problem = _uncallable_as_resolver(function)
    if problem is not None:
        raise PlanError(f"custom resolver {dotted!r}: {module_name}.{attribute} {problem}")
    return cast(Resolver, function)


def _uncallable_as_resolver(function: object) -> str | None:
    """Why ``function`` cannot decide a change as the writer calls it, ``function(incoming,
    existing)``, taking its answer as it returns it: each of these was accepted, and then
    dead-lettered every change of the job. None when nothing says so (a function whose
    signature Python cannot read is taken as it is)."""
    if inspect.isclass(function):
        return "is a class, not a function: calling it makes an instance, not a decision"
    # What runs when it is called: the function, or an instance's __call__.
    called = [function, type(function).__call__]
    if any(inspect.iscoroutinefunction(f) or inspect.isasyncgenfunction(f) for f in called):
        return (
            "is an async function: the writer calls the resolver and does not await it, "
            "so its answer would be a coroutine; make it a plain def"
        )
    if any(inspect.isgeneratorfunction(f) for f in called):
        return "is a generator function (it yields): its answer would be a generator"
    try:
        # The wrapper a decorator made is what is called, not the function it wraps,
        # which functools.wraps would otherwise have the signature read from.
        signature = inspect.signature(function, follow_wrapped=False)  # type: ignore[arg-type]
    except (TypeError, ValueError):  # a builtin without a signature Python can read
        return None
    try:
        signature.bind(None, None)
    except TypeError as error:
        return (
            f"cannot be called as resolver(incoming, existing): its signature is "
            f"{signature} ({error})"
        )
    return None


def _ctrl_c_raises() -> bool:
    """Whether SIGINT raises KeyboardInterrupt in this process (Python's own handler):
    where it is held (``run`` starting) or ignored (a processor), a KeyboardInterrupt is
    the module's own doing."""
    return signal.getsignal(signal.SIGINT) is signal.default_int_handler


def _ctrl_c_may_be_met_here() -> bool:
    """Whether a KeyboardInterrupt raised here may be Ctrl-C's: only on the main thread
    (Python raises a signal's exception nowhere else) of a process where SIGINT raises
    it. A processor ignores SIGINT, and the tools route it to their own handler: there,
    a KeyboardInterrupt is the resolver's own, and let through it crash-looped the shard
    (the processor then said SIGINT received, which it never was)."""
    return threading.current_thread() is threading.main_thread() and _ctrl_c_raises()


def _failure(error: BaseException) -> str:
    """What the module's import did, in words: a ``sys.exit()`` there, let through, would
    end ``validate`` or ``run`` with the module's exit code and no word (0 passing for
    a clean stop that a service manager does not restart)."""
    if isinstance(error, SystemExit):
        return (
            f"it raised SystemExit({error.code!r}) (a sys.exit() call) as it was imported, "
            "which would end every process that loads it; a resolver's module must not exit"
        )
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__


class CustomRule:
    name = "custom"
    reads_existing = True

    def __init__(self, resolver: Resolver, key_names: list[str] | None = None) -> None:
        self.resolver = resolver
        self._named = f"custom resolver {_name_of(resolver)}"  # for its refusals
        self.key_names = key_names

    def plan(self, change: Change, existing: Item | None = None) -> WriteRequest | Skip:
        # Copies: a resolver may change what it is given (``existing["v"] = ...; return
        # existing``), while the write's condition is the item as read, and the change
        # is shared by every destination's writer and each retry.
        incoming = _own_copy(change)
        try:
            decision = self.resolver(incoming, copy.deepcopy(existing))
        except BaseException as error:  # the user's code: dead-letter, go on
            if isinstance(error, KeyboardInterrupt) and _ctrl_c_may_be_met_here():
                # Ctrl-C, which a command resolving on its main thread may meet inside
                # the call: the operator stopping the process, not this change failing.
                raise
            # SystemExit (a sys.exit() in the resolver), GeneratorExit, CancelledError
            # too: nothing but the resolver raises them inside this call (no stop signal
            # handler of the replicator raises them), and let through they would end the
            # writer and crash-loop the shard, naming neither the resolver nor the change.
            raise ResolverFailed(
                f"{self._named} raised {type(error).__name__}: {error}{_where(error)}"
            ) from error
        given = "returned an item"
        if decision is True:
            if change.event is Event.REMOVE:
                return write_over("delete", change.keys, existing, first=change.keys)
            changed = _changed_image(change, incoming)
            if changed is None:
                return write_over("put", change.keys, existing, change.new_image, first=change.keys)
            decision = changed  # the new image, changed in place by the resolver
            given = "answered True with incoming.new_image changed in place into an item"
        if decision is False:
            return Skip("the custom resolver kept the destination's item")
        if isinstance(decision, dict):
            decision = _plain_binaries(decision)
            unformed = next(
                (
                    found
                    for name, value in decision.items()
                    if (found := _unformed(repr(name), value)) is not None
                ),
                None,
            )
            if unformed is not None:
                where, value, expected = unformed
                raise PlanError(
                    f"{self._named} {given} not in attribute-value form: its "
                    f"{where} is {_shown(value)}, where {expected}"
                )
            decision = {name: _text_as_bytes(value) for name, value in decision.items()}
            missing = [name for name in change.keys if name not in decision]
            if missing:
                raise PlanError(f"{self._named} {given} without key attributes {missing}")
            # A put under another key would write another item and leave this one as it
            # was, counted as applied: the change's own key or nothing.
            moved = [
                name for name, value in change.keys.items() if not _same_key(decision[name], value)
            ]
            if moved:
                raise PlanError(
                    f"{self._named} {given} whose key attributes {moved} differ "
                    f"from the change's ({describe_key(change.keys)}): it may only decide "
                    "what this item holds"
                )
            return write_over("put", change.keys, existing, decision, first=change.keys)
        raise PlanError(
            f"{self._named} returned {type(decision).__name__}; expected True, False or an item"
        )

    def shows_applied(self, change: Change, existing: Item | None) -> bool:
        return holds_outcome(change, existing)

    def reconsider(self, change: Change, existing: Item | None) -> WriteRequest | Verdict:
        return Verdict.LOST

    def explain_loss(self, change: Change, existing: Item | None) -> str:
        return "the custom resolver kept the destination's item"


def _own_copy(change: Change) -> Change:
    """``change`` as the resolver may change it: its key, images and record are its own
    (the images decoded again when read). ``corrects`` and ``tombstone`` stay shared:
    only the active-active stage sets them, which takes an ordered rule, never custom."""
    return msgspec.structs.replace(
        change,
        keys=copy.deepcopy(change.keys),
        new=None if change.new is None else change.new.copy(),
        old=None if change.old is None else change.old.copy(),
        raw=change.raw.copy(),
    )


def _changed_image(change: Change, incoming: Change) -> Item | None:
    """The new image the resolver changed in place before it answered True (adding an
    attribute to ``incoming.new_image``, say): what it means to write. None if unchanged."""
    read = None if incoming.new is None else incoming.new.decoded
    if read is None or read == change.new_image:
        return None
    return read


def _plain_binaries(value: Any) -> Any:
    """``value`` with boto3's ``Binary`` wrappers as the bytes they hold: the form every
    other item here has (botocore refuses a ``Binary`` where it expects bytes, and then
    fails to say so)."""
    if isinstance(value, Binary):
        return cast(Any, value).value  # the stubs do not declare it
    if isinstance(value, dict):
        return {name: _plain_binaries(inner) for name, inner in value.items()}
    if isinstance(value, list):
        return [_plain_binaries(inner) for inner in value]
    if isinstance(value, tuple):  # a plain one: a namedtuple's type takes no iterable
        return tuple(_plain_binaries(inner) for inner in value)
    if isinstance(value, set | frozenset):
        return type(value)(_plain_binaries(inner) for inner in value)
    return value


_TYPE_KEYS = frozenset({"S", "N", "B", "SS", "NS", "BS", "M", "L", "NULL", "BOOL"})


def _attribute_value(value: object) -> bool:
    """Whether ``value`` has an attribute value's form at its top (one type key)."""
    return isinstance(value, dict) and len(value) == 1 and next(iter(value)) in _TYPE_KEYS


_ONE_TYPE_KEY = "one type key and its value are expected (such as {'S': 'text'} or {'N': '1'})"
_SCALARS: dict[str, tuple[tuple[type, ...], str]] = {
    "S": ((str,), "a string is expected"),
    "N": ((str,), "the number as a string is expected (such as '1')"),
    # A string is taken too: the SDK sends its UTF-8 bytes.
    "B": ((bytes, bytearray, str), "bytes are expected"),
    "BOOL": ((bool,), "True or False is expected"),
    "NULL": ((bool,), "True is expected"),
}
_SETS: dict[str, tuple[tuple[type, ...], str]] = {
    "SS": ((str,), "a list of strings is expected"),
    "NS": ((str,), "a list of numbers as strings is expected"),
    "BS": ((bytes, bytearray, str), "a list of bytes is expected"),
}


def _text_as_bytes(value: Any) -> Any:
    """An attribute value in the form ``_unformed`` took, its binaries as bytes: a string
    under ``B`` or ``BS`` as its UTF-8 bytes, which is what the SDK sends, so that the
    write compares with what the destination then holds (a string never equals bytes)."""
    ((kind, inner),) = value.items()
    if kind == "B" and isinstance(inner, str):
        return {"B": inner.encode("utf-8")}
    if kind == "BS":
        return {"BS": [m.encode("utf-8") if isinstance(m, str) else m for m in inner]}
    if kind == "M":
        return {"M": {name: _text_as_bytes(v) for name, v in inner.items()}}
    if kind == "L":
        return {"L": [_text_as_bytes(v) for v in inner]}
    return value


def _unformed(where: str, value: object) -> tuple[str, object, str] | None:
    """Where ``value`` (an attribute value named ``where``) first leaves the form the SDK
    sends, what is there and what is expected; None when it has that form. The SDK
    refuses such an item before any request (``{'N': 5}``: not a string), and the change
    was dead-lettered as the destination's refusal; it is the resolver's answer that
    cannot be planned. What DynamoDB itself checks (an empty set, a number's digits) is
    left to it."""
    if not _attribute_value(value):
        return where, value, _ONE_TYPE_KEY
    assert isinstance(value, dict)
    ((kind, inner),) = value.items()
    at = f"{where}.{kind}"
    if kind in _SCALARS:
        types, expected = _SCALARS[kind]
        return None if isinstance(inner, types) else (at, inner, expected)
    if kind in _SETS:
        types, expected = _SETS[kind]
        if isinstance(inner, list | tuple) and all(isinstance(m, types) for m in inner):
            return None
        return at, inner, expected
    if kind == "M":
        if not isinstance(inner, dict) or not all(isinstance(name, str) for name in inner):
            return at, inner, "a dict of attribute values by name is expected"
        return next(
            (found for name, v in inner.items() if (found := _unformed(f"{at}[{name!r}]", v))),
            None,
        )
    if not isinstance(inner, list | tuple):  # L
        return at, inner, "a list of attribute values is expected"
    return next(
        (found for index, v in enumerate(inner) if (found := _unformed(f"{at}[{index}]", v))),
        None,
    )


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:57]}..."


def _where(error: BaseException) -> str:
    """Where in the user's code the resolver raised (the dead letter and the log carry the
    message only, no traceback): the line of the resolver that raised, and the innermost
    line when that is deeper (in a function it called)."""
    frames = traceback.extract_tb(error.__traceback__)[1:]  # the first is plan's own
    if not frames:
        return ""
    outer, inner = frames[0], frames[-1]
    where = f" (at {outer.filename}:{outer.lineno}, in {outer.name}"
    if inner is not outer:
        where += f"; raised at {inner.filename}:{inner.lineno}, in {inner.name}"
    return where + ")"


def _same_key(returned: object, value: AttributeValue) -> bool:
    """Whether a key attribute the resolver returned is the change's (a value of another
    shape is not, and is said to be so rather than raising here)."""
    try:
        return isinstance(returned, dict) and same_item({"k": returned}, {"k": value})
    except (AttributeError, TypeError, ValueError):
        return False


def _name_of(resolver: Resolver) -> str:
    module = getattr(resolver, "__module__", None) or "?"
    return f"{module}:{getattr(resolver, '__qualname__', repr(resolver))}"
