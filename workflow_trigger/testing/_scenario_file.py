"""Scenarios from a JSON file, for ``workflow-trigger emulator --scenarios FILE``.

The file is one JSON object: workflow id -> the fields of a :class:`Scenario`,
in JSON terms::

    {
      "http-direct-messaging": {"duration": [0.2, 0.5], "result": {"total_sent": 1}},
      "broken": {"status": "failed", "error": {"message": "node exploded"}},
      "trigger_123": {"files": {"poem.txt": "roses are red"}, "designated_output": "poem.txt"},
      "*": {"duration": 0.1}
    }

``duration`` is seconds or ``[low, high]``; ``files`` maps names to text;
``designated_output`` (or ``designated``) names one of them; ``"*"`` is the
scenario of every workflow the file does not name. Every mistake is an
:class:`~workflow_trigger.errors.InvalidInputError` naming the file, the
workflow and the field.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

from ..errors import InvalidInputError
from ._model import OUTCOMES, Scenario

__all__ = ["DEFAULT_KEY", "load_scenarios", "parse_scenarios"]

#: the entry that applies to every workflow not named
DEFAULT_KEY = "*"

_ALIASES = {"designated_output": "designated"}
#: field -> what it must be, in JSON words
_FIELDS = {
    "duration": "a number of seconds >= 0, or [low, high]",
    "status": "one of " + ", ".join(OUTCOMES),
    "result": "any JSON value",
    "error": "an object (the platform's error)",
    "register_delay": "a number of seconds >= 0",
    "queued": "a number of seconds >= 0",
    "steps": "a list of step names",
    "wait_for_event": "an event type (a string)",
    "required_inputs": "a list of input field names",
    "files": "an object: file name -> text",
    "designated": "the name of one of the files",
    "id_field": "a string, or null",
}


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _names(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


_CHECKS: dict[str, Callable[[Any], bool]] = {
    "duration": lambda v: (
        (_number(v) and v >= 0)
        or (
            isinstance(v, list) and len(v) == 2 and all(_number(x) for x in v) and 0 <= v[0] <= v[1]
        )
    ),
    "status": lambda v: v in OUTCOMES,
    "result": lambda v: True,
    "error": lambda v: v is None or isinstance(v, dict),
    "register_delay": lambda v: _number(v) and v >= 0,
    "queued": lambda v: v is None or (_number(v) and v >= 0),
    "steps": _names,
    "wait_for_event": lambda v: v is None or isinstance(v, str),
    "required_inputs": _names,
    "files": lambda v: isinstance(v, dict) and all(isinstance(t, str) for t in v.values()),
    "designated": lambda v: v is None or isinstance(v, str),
    "id_field": lambda v: v is None or isinstance(v, str),
}


def _scenario(where: str, fields: Any) -> Scenario:
    if not isinstance(fields, dict):
        raise InvalidInputError(f"{where}: expected an object of Scenario fields")
    values: dict[str, Any] = {}
    for name, value in fields.items():
        field = _ALIASES.get(name, name)
        if field not in _FIELDS:
            known = ", ".join(sorted([*_FIELDS, *_ALIASES]))
            raise InvalidInputError(f"{where}: unknown field {name!r} (known: {known})")
        if not _CHECKS[field](value):
            raise InvalidInputError(f"{where}: {name} must be {_FIELDS[field]}, got {value!r}")
        values[field] = tuple(value) if field == "duration" and isinstance(value, list) else value
    designated, files = values.get("designated"), values.get("files", {})
    if designated is not None and designated not in files:
        raise InvalidInputError(f"{where}: designated_output {designated!r} is not in files")
    try:
        return Scenario(**values)
    except (TypeError, ValueError) as exc:  # pragma: no cover - the checks above come first
        raise InvalidInputError(f"{where}: {exc}") from exc


def parse_scenarios(text: str, source: str = "scenarios") -> dict[str, Scenario]:
    """Workflow id -> :class:`Scenario` from the JSON ``text`` (``source`` names it in errors)."""
    try:
        document = json.loads(text)
    except ValueError as exc:
        raise InvalidInputError(f"{source} is not valid JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise InvalidInputError(f"{source}: expected a JSON object, workflow id -> Scenario fields")
    return {
        workflow: _scenario(f"{source}: workflow {workflow!r}", fields)
        for workflow, fields in document.items()
    }


def load_scenarios(path: str | os.PathLike[str]) -> dict[str, Scenario]:
    """Workflow id -> :class:`Scenario` from the JSON file at ``path``."""
    try:
        with open(path, encoding="utf-8") as file:
            text = file.read()
    except OSError as exc:
        raise InvalidInputError(f"cannot read --scenarios {str(path)!r}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise InvalidInputError(f"{path} is not UTF-8 text: {exc.reason}") from exc
    return parse_scenarios(text, str(path))
