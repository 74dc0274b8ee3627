"""The public API's types: typed usage passes ``mypy --strict``, and mistakes are caught."""

from __future__ import annotations

import pathlib
import re

from mypy import api

HERE = pathlib.Path(__file__).parent / "typing"


def _mypy(path: pathlib.Path) -> tuple[str, int]:
    out, err, status = api.run(["--strict", "--no-incremental", "--hide-error-context", str(path)])
    return out + err, status


def test_typed_usage_passes_strict_mypy() -> None:
    out, status = _mypy(HERE / "usage_ok.py")
    assert status == 0, out


def test_typos_and_wrong_result_types_are_errors() -> None:
    path = HERE / "usage_mistakes.py"
    out, status = _mypy(path)
    assert status == 1, out
    flagged = {int(n) for n in re.findall(rf"{re.escape(path.name)}:(\d+): error", out)}
    expected = {
        number
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if "# E:" in line
    }
    assert expected <= flagged, out
