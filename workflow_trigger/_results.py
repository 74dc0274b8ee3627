"""Structuring a workflow's JSON result into the caller's ``result_type``.

One cattrs converter, built by ``make_converter``, does all of it: attrs
classes, dataclasses, ``TypedDict``s, containers and plain ``dict``. ISO 8601
strings become aware ``datetime``s. A result that does not fit raises
``ResultTypeError`` listing every offending field path.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, TypeVar

import cattrs

from .errors import ResultTypeError
from .models import parse_iso_datetime

T = TypeVar("T")


def _structure_datetime(value: Any, _: type) -> datetime:
    if isinstance(value, str):
        return parse_iso_datetime(value)
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    raise TypeError(f"expected an ISO 8601 string, got {type(value).__name__}")


def make_converter() -> cattrs.Converter:
    """The converter ``result_type=`` goes through; pass your own with ``converter=``."""
    converter = cattrs.Converter(forbid_extra_keys=False)
    converter.register_structure_hook(datetime, _structure_datetime)
    return converter


def structure_result(converter: cattrs.Converter, data: Any, result_type: type[T]) -> T:
    """``data`` as ``result_type``, or ``ResultTypeError`` naming each field that does not fit."""
    try:
        return converter.structure(data, result_type)
    except cattrs.BaseValidationError as exc:
        fields = tuple(cattrs.transform_error(exc, path=""))
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        fields = (f"{type(exc).__name__}: {exc} @ $",)
    name = getattr(result_type, "__name__", repr(result_type))
    raise ResultTypeError(
        f"the workflow's result does not fit {name}: {'; '.join(fields)}. "
        "Fix the type, or leave result_type unset to get the raw JSON",
        fields=fields,
    )
