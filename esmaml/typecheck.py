"""Config values against a component's constructor annotations (``shots: int``,
``sigma: float``, ``hidden: Sequence[int]``), so ``shots=ten`` or ``sigma=abc`` is refused
naming the key before the component runs, even when the component checks nothing itself.

Only the annotation vocabulary a YAML value can have is judged: ``int``, ``float``, ``bool``,
``str``, ``None``, lists / tuples / sequences, dicts / mappings, ``Literal`` and unions of
these. Any other class (a ``torch.device``, a callable) is the component's own business: a value
for it is accepted here.
"""

from __future__ import annotations

import collections.abc
import inspect
import types
import typing
from collections.abc import Callable
from typing import Any

#: ``matches`` answer for an annotation this module does not judge.
UNKNOWN = None


def parameter_hints(function: Callable[..., Any]) -> dict[str, Any]:
    """Resolved annotations of ``function``'s parameters; {} when they cannot be resolved
    (a name only imported under TYPE_CHECKING): then nothing is judged."""
    try:
        hints = typing.get_type_hints(function)
    except Exception:  # any failure to resolve means: no opinion
        return {}
    hints.pop("return", None)
    return hints


def matches(value: Any, hint: Any) -> bool | None:
    """Whether ``value`` fits ``hint``; ``None`` when the hint is outside this module's
    vocabulary (the caller then accepts the value)."""
    if hint is Any or hint is inspect.Parameter.empty:
        return UNKNOWN
    if hint is None or hint is type(None):
        return value is None
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is typing.Union or origin is types.UnionType:
        answers = [matches(value, arg) for arg in args]
        if any(answers):
            return True
        return UNKNOWN if UNKNOWN in answers else False
    if origin is typing.Literal:
        return value in args
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    container = origin or hint
    if container in (list, tuple, collections.abc.Sequence):
        if not isinstance(value, (list, tuple)):
            return False
        if not args:
            return True
        if container is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            if len(value) != len(args):
                return False
            pairs = list(zip(value, args))
        else:
            pairs = [(item, args[0]) for item in value]
        return not any(matches(item, arg) is False for item, arg in pairs)
    if container in (dict, collections.abc.Mapping):
        if not isinstance(value, dict):
            return False
        if len(args) != 2:
            return True
        return not any(
            matches(k, args[0]) is False or matches(v, args[1]) is False for k, v in value.items()
        )
    return UNKNOWN


def describe(hint: Any) -> str:
    """The hint in words: ``an int``, ``a float``, ``a list of int``, ``one of 'a', 'b'``."""
    if hint is None or hint is type(None):
        return "null"
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is typing.Union or origin is types.UnionType:
        return " or ".join(describe(arg) for arg in args)
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(arg) for arg in args)
    simple = {bool: "true or false", int: "an int", float: "a number", str: "a string"}
    if hint in simple:
        return simple[hint]
    container = origin or hint
    if container in (list, tuple, collections.abc.Sequence):
        if args and (container is not tuple or (len(args) == 2 and args[1] is Ellipsis)):
            return f"a list of {_bare(describe(args[0]))}"
        if args:
            return f"a list of {len(args)} ({', '.join(_bare(describe(a)) for a in args)})"
        return "a list"
    if container in (dict, collections.abc.Mapping):
        return "a mapping"
    return getattr(hint, "__name__", str(hint))


def _bare(text: str) -> str:
    return text.removeprefix("an ").removeprefix("a ")
