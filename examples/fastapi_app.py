"""A FastAPI app that starts workflows and answers for them by token.

    uvicorn fastapi_app:app --app-dir examples    # configuration: see examples/README.md

    POST /runs/{workflow_id}     body: the JSON payload -> 202 {"token": ...}
    GET  /runs/{token}           one status poll        -> {"status", "raw_status", "steps", ...}
    GET  /runs/{token}/result    waits for the end      -> {"status", "result", "error", ...}

How it works. ``workflow_trigger.fastapi`` does the plumbing: its
``open_client`` (inside this app's lifespan) opens one ``AsyncClient`` for the
whole app, so every request shares its connection pool and its concurrency
limit, and shutdown closes it; the ``WorkflowClient`` annotation hands it to
each handler. The token (``Execution.token()``) is all the state there is: it
holds no secret and no URL, so the caller keeps it, and any worker process of
the app can answer for it with ``Execution.from_token``.

Starlette does not cancel an endpoint whose client went away. The result
endpoint sits on a router whose route class is ``CancelOnDisconnectRoute``: when
the caller hangs up, the handler is cancelled and its wait stops polling at
once, rather than polling on for nobody. (The workflow itself goes on;
cancelling a run is a separate, explicit operation, or ``cancel_remote_on_exit``.)
The trigger endpoint is deliberately not on it: a trigger cancelled half-way
leaves it unknown whether a run started, and it takes one request anyway.

Errors from the SDK become HTTP answers in one place, ``workflow_error``.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, FastAPI, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel

import workflow_trigger as wt
from workflow_trigger.fastapi import CancelOnDisconnectRoute, WorkflowClient, open_client


def poll_from_env() -> wt.PollPolicy | None:
    """``WORKFLOW_POLL_INTERVAL`` seconds between polls; unset, Codika's documented schedule."""
    interval = os.environ.get("WORKFLOW_POLL_INTERVAL")
    return wt.PollPolicy(interval=float(interval)) if interval else None


# -- the answers' shapes (they make the OpenAPI page at /docs) ----------------------------


class Triggered(BaseModel):
    token: str
    workflow_id: str
    execution_id: str


class StepView(BaseModel):
    id: str
    name: str | None
    status: str
    raw_status: str


class RunStatus(BaseModel):
    token: str
    workflow_id: str
    status: str
    raw_status: str
    steps: list[StepView]
    observed_at: datetime


class ErrorView(BaseModel):
    message: str
    code: str | None
    details: Any


class RunResult(BaseModel):
    token: str
    workflow_id: str
    status: str
    raw_status: str | None
    result: Any
    error: ErrorView | None
    polls: int


# -- endpoints -----------------------------------------------------------------------------


router = APIRouter()
#: its handlers are cancelled when their caller hangs up
waits = APIRouter(route_class=CancelOnDisconnectRoute)


@router.post("/runs/{workflow_id}", status_code=202)
async def start_run(
    workflow_id: str,
    client: WorkflowClient,
    response: Response,
    request: Request,
    payload: Annotated[Any, Body()] = None,
) -> Triggered:
    # Not raced against a disconnect: a trigger cancelled half-way leaves it
    # unknown whether a run started, and it takes one request anyway.
    execution = await client.trigger(workflow_id, payload)
    token = execution.token()
    response.headers["Location"] = str(request.url_for("run_status", token=token))
    return Triggered(token=token, workflow_id=workflow_id, execution_id=execution.execution_id)


@router.get("/runs/{token}", name="run_status")
async def run_status(token: str, client: WorkflowClient) -> RunStatus:
    execution = wt.Execution.from_token(token)
    snapshot = await client.status(execution)
    return RunStatus(
        token=token,
        workflow_id=execution.workflow_id,
        status=snapshot.status.value,
        raw_status=snapshot.raw_status,
        steps=[
            StepView(id=s.id, name=s.name, status=s.status.value, raw_status=s.raw_status)
            for s in snapshot.steps
        ],
        observed_at=snapshot.observed_at,
    )


@waits.get("/runs/{token}/result")
async def run_result(
    token: str,
    client: WorkflowClient,
    timeout: Annotated[float | None, Query(gt=0, description="seconds; default 120")] = None,
) -> RunResult:
    """Wait until the run ends. A remote failure is a 200 with ``status: failed``; our own
    deadline passing is a 504 (the run may go on: ask again with the same token)."""
    execution = wt.Execution.from_token(token)
    outcome = await client.wait(execution, timeout=wt.DEFAULT if timeout is None else timeout)
    error = outcome.error
    return RunResult(
        token=token,
        workflow_id=execution.workflow_id,
        status=outcome.status.value if outcome.status else "unknown",
        raw_status=outcome.raw_status,
        result=outcome.result,
        error=ErrorView(message=error.message, code=error.code, details=error.details)
        if error
        else None,
        polls=outcome.polls,
    )


# -- errors --------------------------------------------------------------------------------


def http_status(exc: wt.WorkflowTriggerError) -> int:
    """Which HTTP status tells the caller what happened."""
    if isinstance(exc, wt.PollTimeout):
        return 504
    if isinstance(exc, wt.NotFoundError):
        return 404  # no such workflow or execution
    if isinstance(exc, wt.PayloadTooLarge):
        return 413
    if isinstance(exc, wt.InvalidInputError):
        return 422  # a bad token, or a payload the platform refused
    if isinstance(exc, wt.RateLimitError):
        return 503
    # Everything else is between this app and the platform, not the caller's
    # doing: a 401 here would wrongly suggest the caller's credentials failed.
    return 502


async def workflow_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, wt.WorkflowTriggerError)
    body: dict[str, Any] = {"error": type(exc).__name__, "detail": str(exc)}
    headers: dict[str, str] = {}
    if isinstance(exc, wt.PollTimeout):
        body["token"] = exc.execution.token()  # to wait again later
    if isinstance(exc, wt.RateLimitError) and exc.retry_after is not None:
        headers["Retry-After"] = str(max(1, round(exc.retry_after)))
    return JSONResponse(body, status_code=http_status(exc), headers=headers)


# -- the app -------------------------------------------------------------------------------


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    # Codika.from_env reads CODIKA_PROCESS_INSTANCE_ID, CODIKA_API_KEY and CODIKA_BASE_URL,
    # so the same code runs against the emulator or the platform.
    async with open_client(app, wt.Codika.from_env, poll=poll_from_env()):
        yield


def create_app() -> FastAPI:
    """A new app; the environment is read when it starts, not when this module is imported."""
    app = FastAPI(title="workflow_trigger example", lifespan=lifespan)
    app.include_router(router)
    app.include_router(waits)
    app.add_exception_handler(wt.WorkflowTriggerError, workflow_error)
    return app


app = create_app()
