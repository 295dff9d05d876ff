"""Check a config dataclass's fields against their type annotations, when it is loaded.

Every site backend and every pool gets this for free: :func:`check_fields` reads each
field's annotation (``str``, ``bool``, ``int``, ``float``, ``X | None``, ``tuple[X, ...]``,
``list[X]``, ``dict[K, V]``, ``Literal[...]``, ``Any`` or a class) and refuses a value
of another type, naming the file, the field, the type expected, what was given and a
valid example, so a wrong site file fails at load and never at the first submit.

Fields in human units are annotated with a :class:`~executor.model.units.Unit`
(``Annotated[float, DURATION]``, aliased :data:`~executor.model.units.Seconds`); they take a
number or text such as ``10s`` or ``4GB`` and are converted here.

Python is looser than YAML: ``True`` is an ``int``. A boolean is therefore refused
where a number is expected, and ``1`` or ``"yes"`` where ``true``/``false`` is.
"""

from __future__ import annotations

import dataclasses
import json
import re
import types
import typing
from collections.abc import Mapping
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from executor.errors import ConfigError
from executor.model.units import Unit

__all__ = ["check_fields", "describe"]

_NONE = type(None)
_PLAIN = re.compile(r"^[A-Za-z0-9_./@:+-]+$")  # YAML text that needs no quotes
# Plain scalars YAML would read as something other than text: they need quotes.
_NOT_TEXT = re.compile(
    r"^(?:true|false|yes|no|on|off|y|n|null|~|[-+]?[0-9._]+(?:e[-+]?[0-9]+)?)$", re.IGNORECASE
)
_FIELDS: dict[type, tuple[tuple[dataclasses.Field, Any], ...]] = {}
_GENERIC_EXAMPLES = {bool: "true", int: "1", float: "0.5", str: "text"}


class _WrongType(Exception):
    """The value is not of the annotated type (as opposed to a bad value of the right type)."""


def check_fields(config: Any, where: str) -> None:
    """Check (and convert, for units) every field of the frozen dataclass ``config``.

    A field's metadata may override what messages say it takes (``expected``) and
    the valid value they show (``example``, as written in YAML); by default these
    come from its annotation, its unit and its default.

    Parameters
    ----------
    config
        A dataclass instance, typically from its ``__post_init__``.
    where
        Where its values came from, to start messages: ``"site_configs/x.yaml"``,
        ``"pool 'small'"``.

    Raises
    ------
    ConfigError
        ``{where}: {field}: expected {type}, got {value} ({its type}); write e.g. ...``.
    TypeError
        A field's annotation is of a kind this module cannot check (a programming
        error in the backend: use one of the supported annotations).
    """
    for field, hint in _annotated_fields(type(config)):
        value = getattr(config, field.name)
        try:
            converted = _convert(value, hint)
        except _WrongType:
            raise ConfigError(
                f"{where}: {field.name}: expected "
                f"{field.metadata.get('expected') or describe(hint)}, got {_shown(value, hint)}; "
                f"write e.g. `{field.name}: {_example(field, hint)}`"
            ) from None
        except ValueError as exc:  # a unit's parser: the message shows valid forms
            raise ConfigError(f"{where}: {field.name}: {exc}") from exc
        if converted is not value:
            object.__setattr__(config, field.name, converted)


def _annotated_fields(cls: type) -> tuple[tuple[dataclasses.Field, Any], ...]:
    """Each field of ``cls`` with its resolved annotation (read once per class)."""
    if cls not in _FIELDS:
        hints = typing.get_type_hints(cls, include_extras=True)
        _FIELDS[cls] = tuple((field, hints[field.name]) for field in dataclasses.fields(cls))
    return _FIELDS[cls]


def _is_union(origin: Any) -> bool:
    return origin is Union or origin is types.UnionType


def _convert(value: Any, hint: Any) -> Any:
    """``value`` as the field holds it; raises ``_WrongType`` or a unit's ``ValueError``."""
    origin, args = get_origin(hint), get_args(hint)
    if origin is Annotated:
        unit = next((extra for extra in hint.__metadata__ if isinstance(extra, Unit)), None)
        if unit is None:
            return _convert(value, args[0])
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise _WrongType
        parsed = unit.parse(value)
        if unit.as_written:
            return value
        return float(parsed) if args[0] is float else parsed
    if _is_union(origin):
        if value is None and _NONE in args:
            return None
        problem: ValueError | None = None
        for member in args:
            try:
                return _convert(value, member)
            except _WrongType:
                continue
            except ValueError as exc:  # right kind, bad value: report it unless another fits
                problem = problem or exc
        if problem is not None:
            raise problem
        raise _WrongType
    if origin is Literal:
        if any(value == arg and type(value) is type(arg) for arg in args):
            return value
        raise _WrongType
    if origin in (tuple, list):
        if not isinstance(value, (tuple, list)):
            raise _WrongType
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            raise TypeError(f"cannot check {hint!r}; use tuple[X, ...]")
        items = [_convert(item, args[0]) for item in value]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, Mapping):
            raise _WrongType
        return {_convert(key, args[0]): _convert(item, args[1]) for key, item in value.items()}
    if origin is not None:
        raise TypeError(f"cannot check a field of type {hint!r}; see executor.model.fields")
    if hint is Any:
        return value
    if hint is _NONE:
        if value is None:
            return None
        raise _WrongType
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise _WrongType
    if isinstance(value, bool):  # True is an int, but never a number of anything here
        raise _WrongType
    if hint is float:
        if isinstance(value, (int, float)):
            return float(value)
        raise _WrongType
    if isinstance(hint, type):
        if isinstance(value, hint):
            return value
        raise _WrongType
    raise TypeError(f"cannot check a field of type {hint!r}; see executor.model.fields")


def describe(hint: Any) -> str:
    """What a field of type ``hint`` takes, for people: ``"a whole number"``."""
    origin, args = get_origin(hint), get_args(hint)
    if origin is Annotated:
        unit = next((extra for extra in hint.__metadata__ if isinstance(extra, Unit)), None)
        return unit.expected if unit else describe(args[0])
    if _is_union(origin):
        members = [member for member in args if member is not _NONE]
        if float in members and int in members:
            members.remove(int)  # "a number" covers it
        return " or ".join(dict.fromkeys(describe(member) for member in members))
    if origin is Literal:
        return "one of " + ", ".join(_yaml(arg) for arg in args)
    if origin in (tuple, list):
        return f"a list (each {describe(args[0])})"
    if origin is dict:
        return f"a mapping (keys: {describe(args[0])}; values: {describe(args[1])})"
    names = {bool: "true or false", int: "a whole number", float: "a number", str: "text"}
    if hint in names:
        return names[hint]
    if hint is Any:
        return "anything"
    return f"a {getattr(hint, '__name__', hint)}"


def _shown(value: Any, hint: Any) -> str:
    """The value given and what YAML made of it: ``'2' (text; remove the quotes ...)``."""
    kinds = [(bool, "a boolean"), (int, "a whole number"), (float, "a number"), (str, "text"),
             (list, "a list"), (tuple, "a list"), (Mapping, "a mapping")]  # fmt: skip
    if value is None:
        return "nothing"
    kind = next((name for cls, name in kinds if isinstance(value, cls)), type(value).__name__)
    shown = _yaml(value) if isinstance(value, bool) else repr(value)
    return f"{shown} ({kind}{_quote_hint(value, hint)})"


def _quote_hint(value: Any, hint: Any) -> str:
    """``max_blocks: "2"`` is text in YAML; say that the quotes are the problem."""
    if not isinstance(value, str):
        return ""
    for number in (int, float):
        try:
            _convert(number(value), hint)
        except (ValueError, _WrongType):
            continue
        return "; remove the quotes to make it a number"
    return ""


def _example(field: dataclasses.Field, hint: Any) -> str:
    """A valid value in YAML: the field's ``example`` metadata, its unit's, or its default."""
    if "example" in field.metadata:
        return str(field.metadata["example"])
    members = get_args(hint) if _is_union(get_origin(hint)) else (hint,)
    for member in members:
        for extra in getattr(member, "__metadata__", ()):
            if isinstance(extra, Unit):
                return extra.example
    if field.default not in (dataclasses.MISSING, None, "", ()):
        return _yaml(field.default)
    return _generic_example(members[0] if members[0] is not _NONE else members[-1])


def _generic_example(hint: Any) -> str:
    """A value of type ``hint`` for a field with no default or example: ``[text]``."""
    origin, args = get_origin(hint), get_args(hint)
    if origin is Literal:
        return _yaml(args[0])
    if origin in (tuple, list):
        return f"[{_generic_example(args[0])}]"
    if origin is dict:
        return f"{{{_generic_example(args[0])}: {_generic_example(args[1])}}}"
    if origin is Annotated:
        return _generic_example(args[0])
    return _GENERIC_EXAMPLES.get(hint, "...")


def _yaml(value: Any) -> str:
    """``value`` as one would write it in a YAML file."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str) and _PLAIN.match(value) and not _NOT_TEXT.match(value):
        return value
    return json.dumps(value)  # a JSON string is a valid YAML double-quoted scalar
