"""Structuring a workflow's JSON result into the caller's ``result_type``.

One cattrs converter, built by ``make_converter``, does all of it: attrs
classes, dataclasses, ``TypedDict``s, containers and plain ``dict``. ISO 8601
strings become aware ``datetime``s. A result that does not fit raises
``ResultTypeError`` listing every offending field path.

Structuring is strict: a JSON value is never turned into a ``str``, ``bool``,
``int`` or ``float`` of another JSON type (cattrs' own hooks would call
``str(dict)``, ``bool(dict)``, ``int("1")``). The one widening allowed is an
integer for a ``float``, since JSON does not tell ``1`` from ``1.0``. To be lax
for a type or a field, register your own hook on a converter and pass it as
``converter=`` (the README's "Typed results" shows how).
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, TypeVar

import attrs
import cattrs

from .errors import InvalidInputError, ResultTypeError
from .models import Outcome, Status, parse_iso_datetime

T = TypeVar("T")

_JSON_NAMES = {
    dict: "an object",
    list: "an array",
    str: "a string",
    bool: "a boolean",
    int: "a number",
    float: "a number",
    type(None): "null",
}


def _json_type(value: Any) -> str:
    return _JSON_NAMES.get(type(value), type(value).__name__)


def _structure_datetime(value: Any, _: type) -> datetime:
    if isinstance(value, str):
        return parse_iso_datetime(value)
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    raise TypeError(f"expected an ISO 8601 string, got {_json_type(value)}")


def _structure_str(value: Any, _: type) -> str:
    if isinstance(value, str):
        return value
    raise TypeError(f"expected a string, got {_json_type(value)}")


def _structure_bool(value: Any, _: type) -> bool:
    if isinstance(value, bool):
        return value
    raise TypeError(f"expected a boolean, got {_json_type(value)}")


def _structure_int(value: Any, _: type) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise TypeError(f"expected an integer, got {_json_type(value)}")


def _structure_float(value: Any, _: type) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    raise TypeError(f"expected a number, got {_json_type(value)}")


def make_converter() -> cattrs.Converter:
    """The converter ``result_type=`` goes through; pass your own with ``converter=``."""
    converter = cattrs.Converter(forbid_extra_keys=False)
    converter.register_structure_hook(datetime, _structure_datetime)
    converter.register_structure_hook(str, _structure_str)
    converter.register_structure_hook(bool, _structure_bool)
    converter.register_structure_hook(int, _structure_int)
    converter.register_structure_hook(float, _structure_float)
    return converter


def _say(exc: BaseException, type_: Any) -> str:
    """One field's problem: our hooks' own words, else cattrs'."""
    if isinstance(exc, TypeError) and str(exc).startswith("expected "):
        return str(exc)
    return cattrs.v.format_exception(exc, type_)


def _name(result_type: Any) -> str:
    return getattr(result_type, "__name__", None) or repr(result_type)


def check_result_type(converter: cattrs.Converter, result_type: Any) -> None:
    """``InvalidInputError`` unless ``converter`` can structure ``result_type`` (None
    is fine: the raw JSON). Called before anything is sent, so a bad ``result_type``
    never costs a run."""
    if result_type is None:
        return
    if isinstance(result_type, str):
        raise InvalidInputError(
            f"result_type must be a type, not the string {result_type[:80]!r}: pass the class "
            "itself (result_type=Point, not 'Point'), or import it where the name is a "
            "forward reference"
        )
    try:
        converter.get_structure_hook(result_type)
    except (cattrs.StructureHandlerNotFoundError, TypeError, NameError, ValueError) as exc:
        raise InvalidInputError(
            f"result_type={_name(result_type)} cannot be structured ({exc}); pass an attrs "
            "class, a dataclass, a TypedDict, a container of those or of JSON types, or "
            "register a structure hook for it on your converter= (None: the raw JSON)"
        ) from None


def structure_result(converter: cattrs.Converter, data: Any, result_type: type[T]) -> T:
    """``data`` as ``result_type``, or ``ResultTypeError`` naming each field that does not fit."""
    try:
        return converter.structure(data, result_type)
    except cattrs.BaseValidationError as exc:
        fields = tuple(cattrs.transform_error(exc, path="", format_exception=_say))
    except (TypeError, ValueError, KeyError, AttributeError, RecursionError) as exc:
        fields = (f"{type(exc).__name__}: {str(exc)[:200]} @ $",)
    except cattrs.StructureHandlerNotFoundError as exc:
        fields = (f"{str(exc)[:200]} @ $",)
    raise ResultTypeError(
        f"the workflow's result does not fit {_name(result_type)}: {'; '.join(fields)}. "
        "Fix the type, or leave result_type unset to get the raw JSON",
        fields=fields,
    )


def replayed(
    converter: cattrs.Converter,
    outcome: Outcome[Any],
    result_type: type[Any] | None,
    **fields: Any,
) -> Outcome[Any]:
    """An outcome read back from a journal, its raw result structured again into
    ``result_type`` (where it succeeded), with a batch's ``fields`` (index, key)."""
    result = outcome.raw_result
    if result_type is not None and outcome.status is Status.SUCCEEDED:
        result = structure_result(converter, result, result_type)
    return attrs.evolve(outcome, result=result, **fields)
