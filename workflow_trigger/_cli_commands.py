"""The bodies of the ``workflow-trigger`` commands (argument parsing is in ``cli.py``)."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import anyio

from ._cli_platforms import provider_for, provider_for_token
from .client import DEFAULT, AsyncClient
from .errors import InvalidInputError, PollTimeout, UnsupportedOperation, WorkflowTriggerError
from .models import Execution, Outcome, Snapshot
from .policies import PollPolicy, RetryPolicy
from .providers import Codika, Provider

__all__ = ["batch", "cancel", "demo", "emulator", "run", "status", "wait"]


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


def _client_options(provider: Provider, args: Any) -> dict[str, Any]:
    poll = None
    if getattr(args, "interval", None):
        poll = PollPolicy(interval=args.interval, timeout=provider.default_poll.timeout)
    return {"poll": poll, "allow_insecure_http": getattr(args, "allow_insecure_http", False)}


def _client(provider: Provider, args: Any) -> AsyncClient:
    return AsyncClient(provider, **_client_options(provider, args))


@contextlib.asynccontextmanager
async def _outcomes(provider: Provider, args: Any, payloads: _Input) -> AsyncIterator[Any]:
    """The batch: in this process, or with ``--workers`` / ``--ray-address`` over Ray."""
    options: dict[str, Any] = {
        "concurrency": args.concurrency,
        "timeout": _timeout(args),
        "key": payloads.key if args.key else None,
        "journal": args.journal,
        "fail_fast": args.fail_fast,
    }
    if args.workers is None and args.ray_address is None:
        async with (
            _client(provider, args) as client,
            client.run_many(args.workflow, payloads, **options) as outcomes,
        ):
            yield outcomes
        return
    try:  # only here: the core never imports ray
        from . import ray as wt_ray
    except ImportError as exc:
        raise InvalidInputError(
            f'--workers and --ray-address need Ray ({exc}): pip install "workflow-trigger[ray]"'
        ) from exc
    options.update(_client_options(provider, args))
    async with wt_ray.run_many_async(
        provider,
        args.workflow,
        payloads,
        workers=args.workers,
        address=args.ray_address,
        **options,
    ) as outcomes:
        yield outcomes


def _not_finished(execution: Execution, snapshot: Snapshot | None, why: str) -> None:
    """The token on stdout and how to wait on it on stderr, for a run we stopped waiting on."""
    token = execution.token()
    _print_json(
        {
            "token": token,
            "workflow_id": execution.workflow_id,
            "execution_id": execution.execution_id,
            "status": snapshot.status.value if snapshot else None,
            "raw_status": snapshot.raw_status if snapshot else None,
            "finished": False,
        }
    )
    sys.stdout.flush()
    print(
        f"{execution.workflow_id} has not finished ({why}); it goes on remotely. "
        f"Wait for it with:\n  workflow-trigger wait {token}",
        file=sys.stderr,
        flush=True,
    )


async def _wait_or_report(
    client: AsyncClient,
    execution: Execution,
    timeout: Any,
    on_snapshot: Callable[[Snapshot], object] | None = None,
) -> Outcome[Any]:
    """``client.wait``; when it ends without an outcome, the token is printed first."""
    last: list[Snapshot] = []

    def seen(snapshot: Snapshot) -> None:
        last[:] = [snapshot]
        if on_snapshot is not None:
            on_snapshot(snapshot)

    try:
        return await client.wait(execution, timeout=timeout, on_snapshot=seen)
    except PollTimeout as exc:
        _not_finished(execution, exc.snapshot or (last[0] if last else None), "--timeout passed")
        raise
    except anyio.get_cancelled_exc_class():
        _not_finished(execution, last[0] if last else None, "interrupted")
        raise


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

            def show(snapshot: Snapshot) -> None:
                spinner.update(f"{args.workflow}: {_describe(snapshot)}")

            timeout = _timeout(args)
            if provider.kind == "awaitstep_function":  # one request: no run to wait on later
                outcome = await client.run(args.workflow, payload, timeout=timeout)
            else:
                # trigger, then wait: the handle is known before the wait, so a timeout or a
                # Ctrl-C can still print the token to wait on
                seconds = client.poll_policy.timeout if timeout is DEFAULT else timeout
                started = anyio.current_time()
                with anyio.move_on_after(seconds) as trigger_scope:
                    execution = await client.trigger(args.workflow, payload)
                if trigger_scope.cancelled_caught:
                    raise WorkflowTriggerError(
                        f"the trigger of {args.workflow!r} did not answer within --timeout; "
                        "the run may have started"
                    )
                spinner.update(f"{args.workflow}: triggered, waiting...")
                left = (
                    None
                    if seconds is None
                    else max(seconds - (anyio.current_time() - started), 0.001)
                )
                outcome = await _wait_or_report(client, execution, left, show)
    _print_json(outcome_json(outcome))
    if not outcome.ok:
        message = outcome.error.message if outcome.error else outcome.raw_status
        console.print(f"[red]{args.workflow} ended {outcome.raw_status}: {message}[/]")
        return 1
    return 0


class _Input:
    """The payloads of a JSONL file, one per non-blank line, read lazily.

    A line that is not JSON, or (with ``--key``) whose payload lacks the key
    field, is not run: it becomes that item's error outcome, handed to
    ``on_bad_line``, and the batch goes on (``fail_fast``: the batch stops,
    naming the line). Without ``--key`` the journal keys each item by a digest
    of its payload, so fixing a bad line and running again with the same
    journal leaves every other item's key as it was.
    """

    def __init__(self, path: str, field: str | None, *, fail_fast: bool) -> None:
        self.path = path
        self.field = field
        self.fail_fast = fail_fast
        self.on_bad_line: Callable[[Outcome[Any]], None] = lambda outcome: None

    def key(self, payload: Any) -> Any:
        return payload[self.field]

    def _problem(self, text: str | bytes) -> str | None:
        try:
            payload = json.loads(text)
        except ValueError as exc:
            return f"not a JSON line ({exc})"
        if self.field is not None and not (isinstance(payload, dict) and self.field in payload):
            return f"the payload has no {self.field!r} field (--key {self.field})"
        return None

    def payload_lines(self) -> list[int]:
        """The line number of each payload yielded, by index (read again when needed)."""
        with open(self.path, "rb") as file:
            return [
                number
                for number, line in enumerate(file, 1)
                if line.strip() and self._problem(line) is None
            ]

    def __iter__(self) -> Iterator[Any]:
        try:
            file = open(self.path, encoding="utf-8")  # noqa: SIM115 - closed below
        except OSError as exc:
            raise InvalidInputError(f"cannot read --input {self.path!r}: {exc.strerror}") from exc
        with file:
            for number, line in enumerate(file, 1):
                if not line.strip():
                    continue
                problem = self._problem(line)
                if problem is None:
                    yield json.loads(line)
                    continue
                message = f"{self.path}:{number}: {problem}"
                if self.fail_fast:
                    raise InvalidInputError(message + "; fix it and run the same command again")
                self.on_bad_line(
                    Outcome(
                        execution=None,
                        status=None,
                        index=None,
                        key=None,
                        exception=InvalidInputError(message),
                    )
                )


class _Output:
    """``--output``: one JSON line per outcome. With a journal, each run rewrites the file
    (the journal hands every item's outcome over again), so each item has one line however
    many times the batch was resumed. It is opened at the first outcome, once the batch holds
    its journal: a batch refused because the journal is in use leaves the file alone."""

    def __init__(
        self, path: str, inputs: str, lines: Callable[[], list[int]], *, rewrite: bool
    ) -> None:
        folder = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(folder) or not os.access(folder, os.W_OK):
            raise InvalidInputError(
                f"cannot write --output {path!r}: {folder!r} is not a folder you can write to"
            )
        self.path, self.inputs, self._read_lines = path, inputs, lines
        self.mode = "w" if rewrite else "a"
        self.file: Any = None
        self.lines: list[int] | None = None  # index -> input line, read at the first need

    def write(self, outcome: Outcome[Any]) -> None:
        data = outcome.to_dict()
        if outcome.exception is not None and outcome.execution is None:
            data["exception"]["message"] = f"{self._where(outcome)}{outcome.exception}"
        if self.file is None:
            self.file = self._open()
        self.file.write(json.dumps(data, ensure_ascii=False, default=str) + "\n")
        self.file.flush()

    def _where(self, outcome: Outcome[Any]) -> str:
        """``in.jsonl:12: `` for an item never triggered (a duplicate key, a bad payload)."""
        if outcome.index is None:
            return ""
        if self.lines is None:
            try:
                self.lines = self._read_lines()
            except OSError:
                self.lines = []
        if outcome.index >= len(self.lines):
            return ""
        return f"{self.inputs}:{self.lines[outcome.index]}: "

    def _open(self) -> Any:
        try:
            return open(self.path, self.mode, encoding="utf-8")
        except OSError as exc:
            raise InvalidInputError(f"cannot write --output {self.path!r}: {exc.strerror}") from exc

    def __enter__(self) -> _Output:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.file is None and exc_info[0] is None:  # no outcome: still say so
            self.file = self._open()
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
    flagged = 0
    payloads = _Input(args.input, args.key, fail_fast=args.fail_fast)
    # With a journal each run rewrites the file; it is opened at the first outcome.
    output = _Output(
        args.output, args.input, payloads.payload_lines, rewrite=args.journal is not None
    )
    progress = rich.progress.Progress(
        "[progress.description]{task.description}",
        rich.progress.BarColumn(),
        rich.progress.MofNCompleteColumn(),
        rich.progress.TaskProgressColumn(),
        "{task.fields[counts]}",
        rich.progress.TimeRemainingColumn(),
        console=console,
    )
    started = time.perf_counter()
    with output, progress:
        total = await anyio.to_thread.run_sync(_count_payloads, args.input)
        task = progress.add_task(args.workflow, total=total, counts="")

        def record(outcome: Outcome[Any]) -> None:
            nonlocal flagged
            output.write(outcome)
            flagged += outcome.possibly_duplicated
            label = outcome.status.value if outcome.status else "error"
            counts["error" if outcome.exception else label] += 1
            done = sum(counts.values())
            rate = done / max(time.perf_counter() - started, 1e-9)
            summary = " ".join(f"{name}={n}" for name, n in sorted(counts.items()))
            progress.update(task, advance=1, counts=f"{summary}  {rate:.1f}/s")

        def bad_line(outcome: Outcome[Any]) -> None:
            assert outcome.exception is not None
            progress.console.print(f"[red]skipped {outcome.exception}[/]")
            record(outcome)

        payloads.on_bad_line = bad_line
        async with _outcomes(provider, args, payloads) as outcomes:
            async for outcome in outcomes:
                record(outcome)
            tally = outcomes.counts
            workers = getattr(outcomes, "workers", None), getattr(outcomes, "workers_lost", 0)
    succeeded = counts.pop("succeeded", 0)
    console.print(f"{succeeded} succeeded, {sum(counts.values())} did not; see {args.output}")
    if workers[0] is not None:
        console.print(f"ran on {workers[0]} Ray workers ({workers[1]} died and were replaced)")
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
        outcome = await _wait_or_report(client, execution, _timeout(args))
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
    console = _console()  # progress and the summary: stderr, as for every command
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


async def emulator(args: Any) -> int:
    from .testing import Emulator, serve
    from .testing._scenario_file import load_scenarios

    scenarios = load_scenarios(args.scenarios) if args.scenarios else {}
    banner = sys.stdout if args.banner_to_stdout else sys.stderr

    def ready(emu: Emulator) -> None:
        print(emu.base_url, flush=True)  # the data: where to point a client
        print(emu.describe(), file=banner, flush=True)
        if scenarios:
            names = ", ".join(sorted(scenarios))
            print(f"scenarios from {args.scenarios}: {names}", file=banner, flush=True)

    try:
        await serve(
            args.host,
            args.port,
            seed=args.seed,
            on_ready=ready,
            scenarios=scenarios,
            awaitstep_trigger_reply=args.awaitstep_trigger_reply,
            runs_api_rate_limit=args.runs_api_rate_limit,
        )
    except OSError as exc:  # the port is taken, the address is not this machine's...
        reason = exc.strerror or str(exc)
        raise InvalidInputError(f"cannot serve on {args.host}:{args.port}: {reason}") from exc
    return 0
