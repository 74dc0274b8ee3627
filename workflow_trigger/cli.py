"""The ``workflow-trigger`` command (install the ``cli`` extra for its progress display).

    workflow-trigger demo                               a batch against the built-in emulator
    workflow-trigger run PLATFORM WORKFLOW --payload '{"text": "hi"}'
    workflow-trigger batch PLATFORM WORKFLOW --input in.jsonl --output out.jsonl
    workflow-trigger status|wait|cancel TOKEN
    workflow-trigger emulator --port 8080

Results go to standard output as JSON; progress, summaries and messages to
standard error. Exit codes, the same for every command:

    0    success
    1    the workflow failed (or some batch items did not succeed)
    2    bad usage or input: a flag, a file, a payload, a token, a missing
         variable, an operation the platform does not have
    3    an error talking to the platform (refused, unreachable, broken answers),
         or --timeout passed before the run ended (it goes on: wait on its token)
    130  interrupted (Ctrl-C)
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

import anyio

from . import __version__
from ._cli_platforms import ENVIRONMENT_HELP, PLATFORMS
from .errors import InvalidInputError, UnsupportedOperation, WorkflowTriggerError

__all__ = ["main"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_ERROR, EXIT_INTERRUPTED = 0, 1, 2, 3, 130

EXIT_CODES = """\
exit codes: 0 success, 1 the workflow (or a batch item) did not succeed, 2 bad usage
or input, 3 an error talking to the platform or --timeout passed, 130 interrupted
"""


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number of seconds > 0, got {text!r}")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(
            f"a port is a number from 0 to 65535 (0: any free port), got {text!r}"
        )
    return value


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
    "emulator": (
        "example:\n  workflow-trigger emulator --port 8080 --scenarios examples/scenarios.json\n"
        "  (--scenarios: a JSON object, workflow id -> the fields of a Scenario: duration\n"
        "  (seconds, or [low, high]), status, result, error, steps, files, designated,\n"
        "  wait_for_event, register_delay, queued, required_inputs)\n"
    ),
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="workflow-trigger",
        description="Trigger remote workflows and wait for their results.",
        epilog=ENVIRONMENT_HELP + "\n" + EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str) -> argparse.ArgumentParser:
        return commands.add_parser(
            name,
            help=help,
            description=help,
            epilog=_EXAMPLES[name] + "\n" + ENVIRONMENT_HELP + "\n" + EXIT_CODES,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )

    def connection(sub: argparse.ArgumentParser, *, polls: bool = True) -> None:
        sub.add_argument("--api-key-file", metavar="F", help="read the platform's key from F")
        sub.add_argument("--base-url", metavar="URL", help="the platform's root URL")
        sub.add_argument(
            "--allow-insecure-http",
            action="store_true",
            help="send credentials over plain http:// to a host that is not loopback",
        )
        if polls:
            sub.add_argument("--interval", type=_seconds, metavar="S", help="seconds between polls")

    demo = command("demo", "run a batch against the built-in emulator (no network, no keys)")
    demo.add_argument("--count", type=_positive_int, default=200, help="executions (default 200)")
    demo.add_argument(
        "--concurrency", type=_positive_int, default=50, help="in flight (default 50)"
    )
    demo.add_argument("--seed", type=int, default=0, help="seed of the emulator's randomness")

    run = command("run", "trigger one run, show its progress, print its result as JSON")
    run.add_argument("platform", choices=list(PLATFORMS))
    run.add_argument("workflow", help="workflow (or trigger) id")
    source = run.add_mutually_exclusive_group()
    source.add_argument("--payload", metavar="JSON", help="the payload, as JSON")
    source.add_argument("--payload-file", metavar="F", help="read the JSON payload from F")
    run.add_argument(
        "--timeout", type=_seconds, metavar="S", help="stop waiting after S s (default 120)"
    )
    connection(run)

    batch = command("batch", "run a workflow once per line of a JSONL file")
    batch.add_argument("platform", choices=list(PLATFORMS))
    batch.add_argument("workflow", help="workflow (or trigger) id")
    batch.add_argument("--input", required=True, metavar="F", help="payloads, one JSON per line")
    batch.add_argument("--output", required=True, metavar="F", help="outcomes, one per line")
    batch.add_argument(
        "--concurrency", type=_positive_int, default=50, help="in flight (default 50)"
    )
    batch.add_argument("--journal", metavar="F", help="SQLite journal: a re-run resumes")
    batch.add_argument(
        "--key", metavar="FIELD", help="payload field naming each item (default: its position)"
    )
    batch.add_argument(
        "--timeout", type=_seconds, metavar="S", help="each item's deadline (default 120)"
    )
    batch.add_argument(
        "--fail-fast",
        action="store_true",
        help="stop at the first item that fails or the first bad input line",
    )
    batch.add_argument(
        "--workers",
        type=_positive_int,
        metavar="N",
        help="spread the batch over N worker processes with Ray (the ray extra); without "
        "--ray-address, on a local cluster started for it",
    )
    batch.add_argument(
        "--ray-address",
        metavar="ADDR",
        help="run the workers on this Ray cluster ('auto', 'ray://host:10001'); "
        "--workers defaults to one per CPU of the cluster",
    )
    connection(batch)

    for name, text in (
        ("status", "poll a run once, by its token"),
        ("wait", "wait for a run to end, by its token"),
        ("cancel", "cancel a run on the platform, by its token"),
    ):
        sub = command(name, text)
        sub.add_argument("token", help="the token that run or batch printed")
        if name == "wait":
            sub.add_argument(
                "--timeout", type=_seconds, metavar="S", help="stop waiting after S s (default 120)"
            )
        connection(sub, polls=name == "wait")

    emulator = command("emulator", "serve the emulator of all platforms for your own code")
    emulator.add_argument("--host", default="127.0.0.1")
    emulator.add_argument("--port", type=_port, default=8080, help="0: any free port")
    emulator.add_argument("--seed", type=int, default=0, help="seed of its randomness")
    emulator.add_argument(
        "--scenarios", metavar="FILE", help="JSON: workflow id -> how its runs behave"
    )
    emulator.add_argument(
        "--awaitstep-trigger-reply",
        choices=["run", "instance"],
        default="run",
        help="run: the whole run record (as the platform does); instance: the documented "
        '{"instanceId"} (runs are then found by instance id too)',
    )
    emulator.add_argument(
        "--runs-api-rate-limit",
        type=_positive_int,
        metavar="N",
        help="enforce N runs per minute per key, announced in X-RateLimit-* (default: off)",
    )
    emulator.add_argument("--banner-to-stdout", action="store_true", help=argparse.SUPPRESS)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args: Any = _parser().parse_args(argv)
    from . import _cli_commands as commands

    try:
        handler = getattr(commands, args.command)
        code: int = anyio.run(handler, args)
        return code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BaseException as exc:
        error = _unwrap(exc)
        if isinstance(error, KeyboardInterrupt):
            print("interrupted", file=sys.stderr)
            return EXIT_INTERRUPTED
        if isinstance(error, (InvalidInputError, UnsupportedOperation)):
            message = str(error)
            if "allow_insecure_http=True" in message:
                message += " (on the command line: --allow-insecure-http)"
            print(f"error: {message}", file=sys.stderr)
            return EXIT_USAGE
        if isinstance(error, WorkflowTriggerError):
            print(f"error: {error}", file=sys.stderr)
            return EXIT_ERROR
        raise


def _unwrap(exc: BaseException) -> BaseException:
    """The one exception inside (nested) groups of one, else ``exc`` itself."""
    inner: Any
    while len(inner := getattr(exc, "exceptions", ())) == 1:  # a group of one (Python 3.10 too)
        exc = inner[0]
    return exc


def dumps(data: Any) -> str:
    return json.dumps(data, ensure_ascii=False, default=str)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
