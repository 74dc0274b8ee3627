"""The public :class:`Emulator`: the core plus every platform's route set.

Each platform adds its configuration (constructor arguments prefixed with the
platform's name, exposed as attributes of the same names) and mounts its route
set here. Routes of different platforms do not overlap, so one server and one
``base_url`` serve them all.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import anyio

from ._codika import CodikaConfig, CodikaRoutes
from ._core import EmulatorCore
from ._model import Scenario

__all__ = ["Emulator", "serve"]

_CODIKA = CodikaConfig()


class Emulator(EmulatorCore):
    """A loopback server speaking the workflow platforms' protocols.

    Use it as ``async with Emulator(seed=0) as emu:`` (or ``start()`` /
    ``close()``) on the asyncio backend. See the package docstring for the
    counters, scenarios and faults.
    """

    def __init__(
        self,
        *,
        seed: int | None = 0,
        host: str = "127.0.0.1",
        port: int = 0,
        strict_workflows: bool = False,
        default_scenario: Scenario = Scenario(),  # noqa: B008 - frozen, so sharing is safe
        shutdown_timeout: float = 0.5,
        codika_instance_id: str = _CODIKA.instance_id,
        codika_api_key: str = _CODIKA.api_key,
        codika_org_key: str = _CODIKA.org_key,
        codika_signing_secret: str = _CODIKA.signing_secret,
        codika_foreign_keys: Iterable[str] = _CODIKA.foreign_keys,
    ) -> None:
        super().__init__(
            seed=seed,
            host=host,
            port=port,
            strict_workflows=strict_workflows,
            default_scenario=default_scenario,
            shutdown_timeout=shutdown_timeout,
        )
        self.codika = CodikaConfig(
            instance_id=codika_instance_id,
            api_key=codika_api_key,
            org_key=codika_org_key,
            signing_secret=codika_signing_secret,
            foreign_keys=frozenset(codika_foreign_keys),
        )
        self.add_route_set(CodikaRoutes(self, self.codika))

    @property
    def codika_instance_id(self) -> str:
        return self.codika.instance_id

    @property
    def codika_api_key(self) -> str:
        return self.codika.api_key

    @property
    def codika_org_key(self) -> str:
        return self.codika.org_key

    @property
    def codika_signing_secret(self) -> str:
        return self.codika.signing_secret

    @property
    def inactive(self) -> bool:
        """While true, every Codika trigger answers 412 (the process instance is inactive)."""
        return self.codika.inactive

    @inactive.setter
    def inactive(self, value: bool) -> None:
        self.codika.inactive = value


async def serve(
    host: str = "127.0.0.1",
    port: int = 8080,
    *,
    seed: int | None = 0,
    on_ready: Callable[[Emulator], object] | None = None,
) -> None:
    """Run an :class:`Emulator` on ``host:port`` until cancelled.

    ``on_ready`` is called with the running emulator (with ``port=0``, read the
    chosen port from ``emulator.base_url``); use it to register scenarios.
    """
    async with Emulator(seed=seed, host=host, port=port) as emulator:
        if on_ready is not None:
            on_ready(emulator)
        await anyio.sleep_forever()
