"""Run the emulator standalone: ``python -m workflow_trigger.testing [--port P] ...``.

The same as ``workflow-trigger emulator`` (see its ``--help``: ``--scenarios
FILE``, ``--awaitstep-trigger-reply instance``...), except that the banner goes
to standard output with the base URL: its first line is the base URL (useful
with ``--port 0``), then, for every platform, the keys and ids it accepts and a
ready-to-run curl line. Any workflow id works (no scenario needed).
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> None:
    from ..cli import main as cli

    arguments = sys.argv[1:] if argv is None else argv
    sys.exit(cli(["emulator", "--banner-to-stdout", *arguments]))


if __name__ == "__main__":
    main()
