"""The ``workflow-trigger`` command (install the ``cli`` extra for its progress display).

    workflow-trigger demo                               a batch against the built-in emulator
    workflow-trigger run PLATFORM WORKFLOW --payload '{"text": "hi"}'
    workflow-trigger batch PLATFORM WORKFLOW --input in.jsonl --output out.jsonl
    workflow-trigger status|wait|cancel TOKEN
    workflow-trigger emulator --port 8080

Results go to standard output as JSON; progress and messages to standard
error. Exit codes: 0 success, 1 the workflow failed (or some batch items
did), 2 bad usage or input, 3 an error talking to the platform, 130 Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

import anyio

from ._cli_platforms import ENVIRONMENT_HELP, PLATFORMS
from .errors import InvalidInputError, WorkflowTriggerError

__all__ = ["main"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_ERROR, EXIT_INTERRUPTED = 0, 1, 2, 3, 130

_EXAMPLES = {
    "demo": "example:\n  workflow-trigger demo --count 200 --concurrency 50\n",
    "run": (
        "example:\n  export CODIKA_API_KEY=ck_... CODIKA_PROCESS_INSTANCE_ID=pi_123\n"
        '  workflow-trigger run codika main-workflow --payload \'{"text": "hi"}\'\n'
    ),
    "batch": (
        "example:\n  workflow-trigger batch codika main-workflow --input payloads.jsonl "
        "--output outcomes.jsonl \\\n    --concurrency 50 --journal batch.sqlite --key id\n"
        "  (Ctrl-C stops cleanly; the same command resumes from the journal)\n"
    ),
    "status": "example:\n  workflow-trigger status wt1.eyJwIjoi...\n",
    "wait": "example:\n  workflow-trigger wait wt1.eyJwIjoi... --timeout 600\n",
    "cancel": "example:\n  workflow-trigger cancel wt1.eyJwIjoi...\n",
    "emulator": "example:\n  workflow-trigger emulator --port 8080\n",
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="workflow-trigger",
        description="Trigger remote workflows and wait for their results.",
        epilog=ENVIRONMENT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str) -> argparse.ArgumentParser:
        return commands.add_parser(
            name,
            help=help,
            description=help,
            epilog=_EXAMPLES[name] + "\n" + ENVIRONMENT_HELP,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )

    def connection(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--api-key-file", metavar="F", help="read the platform's key from F")
        sub.add_argument("--base-url", metavar="URL", help="the platform's root URL")
        sub.add_argument("--interval", type=float, metavar="S", help="poll interval in seconds")

    demo = command("demo", "run a batch against the built-in emulator (no network, no keys)")
    demo.add_argument("--count", type=int, default=200, help="executions (default 200)")
    demo.add_argument("--concurrency", type=int, default=50, help="in flight (default 50)")
    demo.add_argument("--seed", type=int, default=0, help="seed of the emulator's randomness")

    run = command("run", "trigger one run, show its progress, print its result as JSON")
    run.add_argument("platform", choices=list(PLATFORMS))
    run.add_argument("workflow", help="workflow (or trigger) id")
    source = run.add_mutually_exclusive_group()
    source.add_argument("--payload", metavar="JSON", help="the payload, as JSON")
    source.add_argument("--payload-file", metavar="F", help="read the JSON payload from F")
    run.add_argument("--timeout", type=float, metavar="S", help="give up after S seconds")
    connection(run)

    batch = command("batch", "run a workflow once per line of a JSONL file")
    batch.add_argument("platform", choices=list(PLATFORMS))
    batch.add_argument("workflow", help="workflow (or trigger) id")
    batch.add_argument("--input", required=True, metavar="F", help="payloads, one JSON per line")
    batch.add_argument("--output", required=True, metavar="F", help="outcomes, one per line")
    batch.add_argument("--concurrency", type=int, default=50, help="in flight (default 50)")
    batch.add_argument("--journal", metavar="F", help="SQLite journal: a re-run resumes")
    batch.add_argument("--key", metavar="FIELD", help="payload field naming each item")
    batch.add_argument("--timeout", type=float, metavar="S", help="each item's deadline")
    connection(batch)

    for name, text in (
        ("status", "poll a run once, by its token"),
        ("wait", "wait for a run to end, by its token"),
        ("cancel", "cancel a run on the platform, by its token"),
    ):
        sub = command(name, text)
        sub.add_argument("token", help="the token that run or batch printed")
        if name == "wait":
            sub.add_argument("--timeout", type=float, metavar="S", help="give up after S seconds")
        connection(sub)

    emulator = command("emulator", "serve the emulator of all platforms for your own code")
    emulator.add_argument("--host", default="127.0.0.1")
    emulator.add_argument("--port", type=int, default=8080)
    emulator.add_argument("--seed", type=int, default=0)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args: Any = _parser().parse_args(argv)
    from . import _cli_commands as commands

    try:
        if args.command == "emulator":
            from .testing.__main__ import main as serve_emulator

            serve_emulator(
                ["--host", args.host, "--port", str(args.port), "--seed", str(args.seed)]
            )
            return EXIT_OK
        handler = getattr(commands, args.command)
        code: int = anyio.run(handler, args)
        return code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except InvalidInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except WorkflowTriggerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR


def dumps(data: Any) -> str:
    return json.dumps(data, ensure_ascii=False, default=str)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
