"""A pool of worker processes (``workflow_trigger.ray``): started once, it runs batch after
batch, or several side by side. It does not import ray: ``ray.py`` gives it a ``Cluster``.

Starting a worker is the dear part of a batch spread over processes: a Ray
worker process boots (~0.7 s of CPU), imports the SDK and opens a client. A
pool pays that once: each of its workers (``_ray_worker.Worker``) holds one
``AsyncClient`` for the pool's life, and each batch (``_ray_driver.Driver``)
gets a share of every worker (``WorkerLink.share``). A worker that dies is
replaced once, by whichever batch finds it dead first; the others take the
replacement.
"""

from __future__ import annotations

import contextlib
import copyreg
import io
import pickle
import re
from collections.abc import Callable
from typing import Any, Protocol

import attrs

from ._ray_worker import Work
from ._secrets import Secret
from .errors import InvalidInputError, WorkflowTriggerError
from .options import ClientOptions
from .policies import check_count
from .providers.base import Provider

__all__ = [
    "CLOSED",
    "Cluster",
    "Pool",
    "PoolSettings",
    "ShareLink",
    "WorkerLink",
    "pool_settings",
    "provider_bytes",
    "worker_options",
]

#: what a closed pool answers when it is asked for work
CLOSED = "this pool of workers is closed: make a new one"

#: a worker's client's ``max_concurrency`` where the caller set none: each batch's driver
#: bounds its own items, so the worker's client must not bound them again
UNBOUNDED = 1_000_000


class ShareLink(Protocol):
    """A worker's share of one batch (``_ray_worker.Share``), as the batch's driver reaches it."""

    async def exchange(self, works: list[Work]) -> list[tuple[Any, ...]] | None:
        """Hand ``works`` (maybe none) over, then what happened since the last call, once
        something did (``_ray_worker.Share.exchange``); None once all is over."""

    async def served(self) -> None:
        """Once ``exchange`` said None: raise what ended the share, if anything."""

    def submit(self, works: list[Work]) -> None:
        """Hand ``works`` over, waiting for nothing."""

    def stop(self, graceful: bool) -> None: ...


class WorkerLink(Protocol):
    """One worker (a ``_ray_worker.Worker`` somewhere), as the pool reaches it."""

    def share(
        self, batch: str, workflow_id: str, timeout: float | str | None, concurrency: int
    ) -> ShareLink:
        """The worker's share of ``batch``, already running."""

    async def pid(self) -> int: ...

    def kill(self) -> None: ...


class Cluster(Protocol):
    """Where workers run; ``died``: what a call to a dead worker raises."""

    died: tuple[type[BaseException], ...]

    def join(self, address: str | None, workers: int | None) -> bool:
        """Connect this process (once); whether a cluster was started for the pool."""

    def cpus(self) -> int: ...

    def spawn(self, spec: bytes | Callable[[], Provider], options: dict[str, Any]) -> WorkerLink:
        """A new worker, its client opening."""

    def leave(self) -> None:
        """Disconnect, and stop the cluster ``join`` started."""


def _reveal_secret(secret: Secret) -> tuple[Any, ...]:
    return (Secret, (secret.reveal(),))


def provider_bytes(provider: Provider) -> bytes:
    """``provider`` pickled with its secrets: for a worker's constructor, nothing else."""
    buffer = io.BytesIO()
    pickler = pickle.Pickler(buffer)
    pickler.dispatch_table = {**copyreg.dispatch_table, Secret: _reveal_secret}
    pickler.dump(provider)
    return buffer.getvalue()


@attrs.frozen
class PoolSettings:
    """A pool's arguments, checked before anything starts."""

    provider: Provider
    spec: bytes | Callable[[], Provider]
    workers: int | None
    address: str | None
    options: ClientOptions
    #: the client options as given: each worker's client is made of them
    client_options: dict[str, Any]


#: what ``address=`` may be besides None: a node of the cluster ("auto"), its GCS
#: ("host:port") or its Ray Client server ("ray://host:port")
_ADDRESS = re.compile(r"(ray://)?([A-Za-z0-9._-]+|\[[0-9A-Fa-f:.]+\]):[0-9]{1,5}")


def check_address(address: object) -> None:
    """Refuse an ``address`` Ray could not join, before anything starts."""
    if address is None or address == "auto":
        return
    if isinstance(address, str) and _ADDRESS.fullmatch(address):
        return
    shown = repr(address) if isinstance(address, str) else type(address).__name__
    raise InvalidInputError(
        f"address must be None (a local cluster), 'auto' (the cluster this node is in), "
        f"'host:port' (its GCS) or 'ray://host:port' (its Ray Client server), not {shown}"
    )


def gcs_host_port(address: str) -> tuple[str, int] | None:
    """The host and port of a ``host:port`` address (None for "auto" and "ray://")."""
    if address == "auto" or address.startswith("ray://"):
        return None
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


def pool_settings(
    provider: Provider | Callable[[], Provider],
    *,
    workers: int | None,
    address: str | None,
    client_options: dict[str, Any],
) -> PoolSettings:
    spec: bytes | Callable[[], Provider]
    if isinstance(provider, Provider):
        made, spec = provider, provider_bytes(provider)
    elif callable(provider):
        made, spec = provider(), provider
        if not isinstance(made, Provider):
            raise InvalidInputError(f"provider() made a {type(made).__name__}, not a provider")
    else:
        raise InvalidInputError(
            "provider must be a platform such as wt.RunsApi(...), or a function that builds one"
        )
    if workers is not None:
        check_count("workers", workers)
    check_address(address)
    return PoolSettings(
        provider=made,
        spec=spec,
        workers=workers,
        address=address,
        options=ClientOptions.build(dict(client_options)),
        client_options=dict(client_options),
    )


def worker_options(settings: PoolSettings, count: int) -> dict[str, Any]:
    """Each worker's client options: the rate limit split between ``count`` workers (each
    batch's driver bounds its ``concurrency`` over all of them)."""
    options = dict(settings.client_options)
    rate = settings.options.rate_limit or settings.provider.default_rate_limit
    if rate:
        options["rate_limit"] = rate / count
    options.setdefault("max_concurrency", UNBOUNDED)
    return options


class Pool:
    """Workers started once for many batches (see the module's docstring)."""

    def __init__(self, settings: PoolSettings, cluster: Cluster) -> None:
        self.s = settings
        self.cluster = cluster
        #: the live workers, as far as the pool knows (a dead one stays until replaced)
        self.workers: list[WorkerLink] = []
        self.started = self.closed = False
        self._joined = self._started_cluster = False
        self._options: dict[str, Any] = {}
        self._replaced: dict[WorkerLink, WorkerLink] = {}

    @property
    def provider(self) -> Provider:
        return self.s.provider

    def join(self) -> None:
        """Connect this process to the cluster (once), starting one for ``address=None``."""
        if not self._joined:
            self._joined = True
            self._started_cluster = self.cluster.join(self.s.address, self.s.workers)

    def start(self) -> None:
        """Start the workers (once)."""
        if self.closed:
            raise WorkflowTriggerError(CLOSED)
        if self.started:
            return
        self.join()
        count = self.s.workers if self.s.workers is not None else self.cluster.cpus()
        self._options = worker_options(self.s, count)
        self.workers = [self.cluster.spawn(self.s.spec, self._options) for _ in range(count)]
        self.started = True

    def replace(self, dead: WorkerLink) -> WorkerLink | None:
        """The worker that takes ``dead``'s place, started by the first batch that asks; None
        once the pool is closed."""
        if self.closed:
            return None
        fresh = self._replaced.get(dead)
        if fresh is None:
            fresh = self._replaced[dead] = self.cluster.spawn(self.s.spec, self._options)
            self.workers = [fresh if w is dead else w for w in self.workers]
        return fresh

    def close(self) -> None:
        """Stop every worker, and the cluster if the pool started it."""
        if self.closed:
            return
        self.closed = True
        for worker in self.workers:
            with contextlib.suppress(Exception):
                worker.kill()
        self.workers = []
        self._replaced.clear()
        if self._started_cluster:
            self.cluster.leave()
