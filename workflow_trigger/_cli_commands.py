"""The bodies of the ``workflow-trigger`` commands (argument parsing is in ``cli.py``)."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import anyio

from ._cli_platforms import provider_for, provider_for_token
from .client import DEFAULT, AsyncClient
from .errors import InvalidInputError, UnsupportedOperation
from .models import Outcome, Snapshot
from .policies import PollPolicy, RetryPolicy
from .providers import Codika, Provider

__all__ = ["batch", "cancel", "demo", "run", "status", "wait"]


def _rich() -> Any:
    try:
        import rich.console
        import rich.progress
        import rich.table
    except ImportError as exc:  # pragma: no cover - the cli extra installs it
        raise UnsupportedOperation(
            "the command line needs its extra: pip install 'workflow-trigger[cli]'"
        ) from exc
    return rich


def _console() -> Any:
    return _rich().console.Console(stderr=True)


def _print_json(data: Any) -> None:
    print(json.dumps(data, ensure_ascii=False, indent=2, default=str))


def outcome_json(outcome: Outcome[Any]) -> dict[str, Any]:
    """An outcome as one JSON object (what ``run``, ``wait`` and ``batch`` print)."""
    return outcome.to_dict()


def snapshot_json(snapshot: Snapshot) -> dict[str, Any]:
    return {
        "status": snapshot.status.value,
        "raw_status": snapshot.raw_status,
        "steps": [{"id": s.id, "name": s.name, "status": s.status.value} for s in snapshot.steps],
        "observed_at": snapshot.observed_at.isoformat(),
    }


def _client(provider: Provider, args: Any) -> AsyncClient:
    poll = None
    if getattr(args, "interval", None):
        poll = PollPolicy(interval=args.interval, timeout=provider.default_poll.timeout)
    return AsyncClient(provider, poll=poll)


def _timeout(args: Any) -> Any:
    value = getattr(args, "timeout", None)
    return DEFAULT if value is None else value


def _payload(args: Any) -> Any:
    text = args.payload
    if args.payload_file is not None:
        try:
            with open(args.payload_file, encoding="utf-8") as file:
                text = file.read()
        except OSError as exc:
            raise InvalidInputError(f"cannot read {args.payload_file!r}: {exc.strerror}") from exc
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise InvalidInputError(f"the payload is not valid JSON: {exc}") from exc


def _describe(snapshot: Snapshot) -> str:
    steps = ", ".join(f"{s.name or s.id}: {s.raw_status}" for s in snapshot.steps)
    return f"{snapshot.raw_status}" + (f"  [{steps}]" if steps else "")


async def run(args: Any) -> int:
    provider = provider_for(args.platform, key_file=args.api_key_file, base_url=args.base_url)
    payload = _payload(args)
    console = _console()
    async with _client(provider, args) as client:
        with console.status(f"triggering {args.workflow}...") as spinner:
            outcome = await client.run(
                args.workflow,
                payload,
                timeout=_timeout(args),
                on_snapshot=lambda snap: spinner.update(f"{args.workflow}: {_describe(snap)}"),
            )
    _print_json(outcome_json(outcome))
    if not outcome.ok:
        message = outcome.error.message if outcome.error else outcome.raw_status
        console.print(f"[red]{args.workflow} ended {outcome.raw_status}: {message}[/]")
        return 1
    return 0


def _read_payloads(path: str) -> Iterator[Any]:
    try:
        file = open(path, encoding="utf-8")  # noqa: SIM115 - closed by the generator
    except OSError as exc:
        raise InvalidInputError(f"cannot read --input {path!r}: {exc.strerror}") from exc
    with file:
        for number, line in enumerate(file, 1):
            if line.strip():
                try:
                    yield json.loads(line)
                except ValueError as exc:
                    raise InvalidInputError(
                        f"{path}:{number} is not a JSON line ({exc}); fix it and run the same "
                        "command again (with --journal, finished items are not run again)"
                    ) from exc


def _payload_lines(path: str) -> list[int]:
    """The line number of each payload of the input, by index (the lines ``_read_payloads``
    reads: every line that is not blank)."""
    with open(path, "rb") as file:
        return [number for number, line in enumerate(file, 1) if line.strip()]


class _Output:
    """``--output``: one JSON line per outcome. With a journal, each run rewrites the file
    (the journal hands every item's outcome over again), so each item has one line however
    many times the batch was resumed. It is opened at the first outcome, once the batch holds
    its journal: a batch refused because the journal is in use leaves the file alone."""

    def __init__(self, path: str, inputs: str, *, rewrite: bool) -> None:
        self.path, self.inputs = path, inputs
        self.mode = "w" if rewrite else "a"
        self.file: Any = None
        self.lines: list[int] | None = None  # index -> input line, read at the first need

    def write(self, outcome: Outcome[Any]) -> None:
        data = outcome.to_dict()
        if outcome.exception is not None and outcome.execution is None:
            data["exception"]["message"] = f"{self._where(outcome)}{outcome.exception}"
        if self.file is None:
            self.file = open(self.path, self.mode, encoding="utf-8")  # noqa: SIM115
        self.file.write(json.dumps(data, ensure_ascii=False, default=str) + "\n")
        self.file.flush()

    def _where(self, outcome: Outcome[Any]) -> str:
        """``in.jsonl:12: `` for an item never triggered (a duplicate key, a bad payload)."""
        if outcome.index is None:
            return ""
        if self.lines is None:
            try:
                self.lines = _payload_lines(self.inputs)
            except OSError:
                self.lines = []
        if outcome.index >= len(self.lines):
            return ""
        return f"{self.inputs}:{self.lines[outcome.index]}: "

    def __enter__(self) -> _Output:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.file is None and exc_info[0] is None:  # no outcome: still say so
            self.file = open(self.path, self.mode, encoding="utf-8")  # noqa: SIM115
        if self.file is not None:
            self.file.close()


def _count_payloads(path: str) -> int | None:
    """How many payloads the input holds, for the ETA (None when it cannot be read)."""
    try:
        with open(path, "rb") as file:
            return sum(1 for line in file if line.strip())
    except OSError:
        return None


async def batch(args: Any) -> int:
    provider = provider_for(args.platform, key_file=args.api_key_file, base_url=args.base_url)
    rich = _rich()
    console = _console()
    counts: Counter[str] = Counter()
    field = args.key

    def key(payload: Any) -> Any:
        if not isinstance(payload, dict) or field not in payload:
            raise InvalidInputError(f"--key {field!r}: a payload has no such field")
        return payload[field]

    progress = rich.progress.Progress(
        "[progress.description]{task.description}",
        rich.progress.BarColumn(),
        rich.progress.MofNCompleteColumn(),
        rich.progress.TaskProgressColumn(),
        "{task.fields[counts]}",
        rich.progress.TimeRemainingColumn(),
        console=console,
    )
    # Writing one short line per outcome to a local file: blocking briefly is fine.
    started = time.perf_counter()
    flagged = 0
    output = _Output(args.output, args.input, rewrite=args.journal is not None)
    with output, progress:
        total = await anyio.to_thread.run_sync(_count_payloads, args.input)
        task = progress.add_task(args.workflow, total=total, counts="")
        async with _client(provider, args) as client:
            outcomes = client.run_many(
                args.workflow,
                _read_payloads(args.input),
                concurrency=args.concurrency,
                timeout=_timeout(args),
                key=key if field else None,
                journal=args.journal,
            )
            async for outcome in outcomes:
                output.write(outcome)
                flagged += outcome.possibly_duplicated
                label = outcome.status.value if outcome.status else "error"
                counts["error" if outcome.exception else label] += 1
                done = sum(counts.values())
                rate = done / max(time.perf_counter() - started, 1e-9)
                summary = " ".join(f"{name}={n}" for name, n in sorted(counts.items()))
                progress.update(task, advance=1, counts=f"{summary}  {rate:.1f}/s")
            tally = outcomes.counts
    succeeded = counts.pop("succeeded", 0)
    console.print(f"{succeeded} succeeded, {sum(counts.values())} did not; see {args.output}")
    if args.journal:
        console.print(
            f"{tally.from_journal} from the journal, {tally.resumed} resumed from a token, "
            f"{tally.triggered} triggered, {flagged} flagged possibly_duplicated"
        )
    return 0 if not counts else 1


async def status(args: Any) -> int:
    provider, execution = provider_for_token(
        args.token, key_file=args.api_key_file, base_url=args.base_url
    )
    async with _client(provider, args) as client:
        _print_json(snapshot_json(await client.status(execution)))
    return 0


async def wait(args: Any) -> int:
    provider, execution = provider_for_token(
        args.token, key_file=args.api_key_file, base_url=args.base_url
    )
    async with _client(provider, args) as client:
        outcome = await client.wait(execution, timeout=_timeout(args))
    _print_json(outcome_json(outcome))
    return 0 if outcome.ok else 1


async def cancel(args: Any) -> int:
    provider, execution = provider_for_token(
        args.token, key_file=args.api_key_file, base_url=args.base_url
    )
    async with _client(provider, args) as client:
        await client.cancel(execution)
    _console().print(f"cancelled {execution.execution_id}")
    return 0


async def demo(args: Any) -> int:
    from .testing import Emulator, Fault, Scenario

    rich = _rich()
    console = rich.console.Console()
    count, concurrency = args.count, args.concurrency
    async with Emulator(seed=args.seed) as emulator:
        emulator.scenario(
            "enrich-lead",
            Scenario(duration=(0.3, 1.5), result=lambda p: {"lead": p["lead"], "score": 0.9}),
        )
        # A little turbulence, as on a real platform: the client retries through it.
        faults = [
            Fault.server_error(count=5, status=503, on="poll"),
            Fault.rate_limited(count=3, retry_after=0.2, on="poll"),
            Fault.drop(count=2, on="poll"),
        ]
        for fault in faults:
            emulator.add_fault(fault)
        provider = Codika(
            emulator.codika_instance_id, api_key=emulator.codika_api_key, base_url=emulator.base_url
        )
        console.print(
            f"Emulator on [bold]{emulator.base_url}[/]: running {count} executions of "
            f"'enrich-lead', {concurrency} at a time"
        )
        statuses: Counter[str] = Counter()
        started = time.perf_counter()
        policy = PollPolicy(interval=0.25, jitter=0.2, timeout=30)
        retry = RetryPolicy(attempts=4, backoff=0.05)
        async with AsyncClient(provider, poll=policy, retry=retry, seed=args.seed) as client:
            payloads = ({"lead": f"lead-{i}"} for i in range(count))
            with rich.progress.Progress(
                "[progress.description]{task.description}",
                rich.progress.BarColumn(),
                rich.progress.MofNCompleteColumn(),
                rich.progress.TimeElapsedColumn(),
                console=console,
            ) as progress:
                task = progress.add_task("executions", total=count)
                batch = client.run_many("enrich-lead", payloads, concurrency=concurrency)
                async for outcome in batch:
                    label = outcome.status.value if outcome.status else "error"
                    if outcome.exception is not None:
                        label = type(outcome.exception).__name__
                    statuses[label] += 1
                    progress.advance(task)
            wall = time.perf_counter() - started
            sent = client.requests_sent
        survived = sum(f.count for f in faults) - emulator.faults_remaining
        table = rich.table.Table(title="Summary")
        table.add_column("what")
        table.add_column("value", justify="right")
        table.add_row("succeeded", str(statuses.pop("succeeded", 0)))
        table.add_row("failed", str(sum(statuses.values())))
        for label, n in sorted(statuses.items()):
            table.add_row(f"  {label}", str(n))
        table.add_row("requests made", str(sent))
        table.add_row("requests per execution", f"{sent / max(count, 1):.2f}")
        table.add_row("faults survived", str(survived))
        table.add_row("wall time", f"{wall:.2f} s")
        console.print(table)
        return 0 if not statuses else 1
