"""Run the emulator standalone: ``python -m workflow_trigger.testing [--host H] [--port P]``.

Prints the base URL on its first line of output (useful with ``--port 0``),
then, for every platform, the keys and ids it accepts and a ready-to-run curl
line, and serves until interrupted. Any workflow id works (no scenario needed).
"""

from __future__ import annotations

import argparse
import contextlib

import anyio

from ._emulator import Emulator, serve


def _ready(emulator: Emulator) -> None:
    print(emulator.base_url, flush=True)
    print(emulator.describe(), flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m workflow_trigger.testing")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        anyio.run(lambda: serve(args.host, args.port, seed=args.seed, on_ready=_ready))


if __name__ == "__main__":
    main()
