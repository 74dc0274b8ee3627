"""workflow_trigger: trigger workflows on remote automation platforms and wait for their results.

import workflow_trigger as wt

async with wt.AsyncClient(wt.Codika("pi_123", api_key="ck_...")) as client:
    outcome = await client.run("main-workflow", {"text": "hi"})

with wt.Client(wt.Codika("pi_123", api_key="ck_...")) as client:
    outcome = client.run("main-workflow", {"text": "hi"})
"""

from ._batch import Batch
from .client import DEFAULT, AsyncClient
from .errors import (
    APIError,
    AuthenticationError,
    InvalidInputError,
    JournalInUse,
    NotFoundError,
    PayloadTooLarge,
    PollTimeout,
    ProtocolError,
    RateLimitError,
    ResultTypeError,
    ServerError,
    TransportError,
    UnsupportedOperation,
    WorkflowFailed,
    WorkflowTriggerError,
)
from .events import (
    Event,
    FailureEvent,
    OutcomeEvent,
    RateLimitEvent,
    RequestEvent,
    RetryEvent,
    StartEvent,
)
from .models import Artifact, ErrorInfo, Execution, Outcome, Snapshot, Status, Step
from .options import ClientOptions
from .policies import PollPolicy, RetryPolicy
from .providers import AwaitStep, AwaitStepFunction, Codika, Pinkfish, Provider, RunsApi
from .sync import BlockingIterator, Client

__version__ = "0.1.0"

__all__ = [
    "APIError",
    "Artifact",
    "AsyncClient",
    "AuthenticationError",
    "AwaitStep",
    "AwaitStepFunction",
    "Batch",
    "BlockingIterator",
    "Client",
    "ClientOptions",
    "Codika",
    "DEFAULT",
    "ErrorInfo",
    "Event",
    "Execution",
    "FailureEvent",
    "InvalidInputError",
    "JournalInUse",
    "NotFoundError",
    "Outcome",
    "OutcomeEvent",
    "PayloadTooLarge",
    "Pinkfish",
    "PollPolicy",
    "PollTimeout",
    "ProtocolError",
    "Provider",
    "RateLimitError",
    "RateLimitEvent",
    "RequestEvent",
    "ResultTypeError",
    "RetryEvent",
    "RetryPolicy",
    "RunsApi",
    "ServerError",
    "Snapshot",
    "StartEvent",
    "Status",
    "Step",
    "TransportError",
    "UnsupportedOperation",
    "WorkflowFailed",
    "WorkflowTriggerError",
]
