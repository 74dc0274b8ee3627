"""Secrets stay secret, on every platform and every way of holding a credential.

One test per variant drives a full run (with retries), a failed run, auth
failures, lost connections, protocol errors, a redirect, a deadline and an
unknown execution, and captures everything the SDK shows a user: every log
record at DEBUG, every exception (message, repr, args and chained causes,
formatted as a traceback would print them), every repr (client, provider,
Execution, Outcome, Snapshot, Request), every ``on_event`` event and every
token. Then it greps all of it for each credential, raw and URL-encoded.

Also: redirects are never followed (so credentials never reach another
host), credentials never go over plain ``http://`` beyond loopback unless
``allow_insecure_http=True`` (and then not even a DNS lookup happens), and
TLS verification is on unless the caller passes its own ``ssl`` context.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import socket
import ssl
import traceback
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import aiohttp.abc
import pytest
from _platforms import PINKFISH, Platform, send_trigger
from _servers import Blackhole, FaultProxy

import workflow_trigger as wt
from workflow_trigger.providers.base import TriggerContext
from workflow_trigger.testing import Emulator, Fault, Scenario

MakeClient = Callable[..., wt.AsyncClient]


class Capture:
    """Every text the SDK shows a user, to grep for secrets."""

    def __init__(self) -> None:
        self.texts: list[str] = []

    def show(self, *items: object) -> None:
        for item in items:
            self.texts += [str(item), repr(item)]

    def event(self, event: wt.Event) -> None:
        self.show(event)

    def exception(self, exc: BaseException) -> None:
        self.texts.append("".join(traceback.format_exception(exc)))
        seen: set[int] = set()
        current: BaseException | None = exc
        while current is not None and id(current) not in seen:
            seen.add(id(current))
            self.show(current, *current.args)
            current = current.__cause__ or current.__context__

    async def expect(self, error: type[BaseException], call: Any) -> BaseException:
        with pytest.raises(error) as info:
            await call
        self.exception(info.value)
        return info.value

    def logs(self, records: list[logging.LogRecord]) -> None:
        formatter = logging.Formatter("%(levelname)s %(name)s %(message)s")
        for record in records:
            if record.name.startswith("workflow_trigger"):
                self.texts.append(formatter.format(record))

    def leaks(self, secrets: tuple[str, ...]) -> list[tuple[str, str]]:
        return [(s, text) for s in secrets for text in self.texts if s in text]


def _expected_key_attribute(variant: Platform) -> str | None:
    """The emulator's setting whose value the variant's credential must match."""
    return {
        "codika": "api_key",
        "codika_query": "api_key",
        "codika_org": "org_key",
        "codika_signed": "signing_secret",
        "runs_api": "api_key",
        "awaitstep": "api_key",
        "pinkfish": "api_key",
        "pinkfish_webhook": "api_key",
        "pinkfish_sync": "api_key",
    }.get(variant.name)


def _rotate_key(emu: Emulator, variant: Platform) -> Callable[[], None]:
    """Make the emulator refuse the variant's credential; returns the undo."""
    config = getattr(emu, variant.emulated)
    attribute = _expected_key_attribute(variant)
    assert attribute is not None
    kept = getattr(config, attribute)
    setattr(config, attribute, "whsec_QUJDREVGR0hJSktMTU5PUA==" if "signing" in attribute else "x")

    def undo() -> None:
        setattr(config, attribute, kept)

    return undo


async def test_nothing_the_sdk_shows_holds_a_secret(
    variant: Platform,
    emulator: Emulator,
    second_emulator: Emulator,
    proxy: FaultProxy,
    make_client: MakeClient,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    emulator.pinkfish_sync_limit = 0.2  # a held trigger answers "timeout" soon: then polls
    seen = Capture()
    wf = variant.workflow
    emulator.scenario(wf, Scenario(duration=0.05, result={"summary": "ok"}, files={"a.txt": "A"}))
    provider = variant.provider(emulator)
    retry = wt.RetryPolicy(attempts=3, backoff=0.01, max_backoff=0.02)
    async with make_client(provider, retry=retry, on_event=seen.event) as client:
        seen.show(client, provider)

        # a full run, through a 429 on the trigger and 5xx / dropped polls
        emulator.add_fault(Fault.rate_limited(1, 0, on="trigger", platform=variant.emulated))
        emulator.add_fault(Fault.server_error(1, 503, on="poll", platform=variant.emulated))
        emulator.add_fault(Fault.drop(2, on="poll", platform=variant.emulated))
        emulator.add_fault(Fault.server_error(1, 502, on="result", platform=variant.emulated))
        outcome = await client.run(wf, {"text": "hi"})
        emulator.clear_faults()
        assert outcome.ok and outcome.execution is not None
        ex = outcome.execution
        seen.show(outcome, ex, ex.token(), wt.Execution.from_token(ex.token()), outcome.error)
        context = TriggerContext(now=dt.datetime.now(dt.timezone.utc), message_id="msg_1")
        seen.show(provider.trigger_request(wf, {"a": 1}, context))
        for artifact in outcome.artifacts:
            seen.show(artifact, await client.download(artifact))
        if variant.polls:
            seen.show(provider.status_request(ex), await client.status(ex))
            async for snapshot in client.watch(ex):
                seen.show(snapshot)
            if variant.fetches_results:
                seen.show(provider.result_request(ex, await client.status(ex)))

        # a failed run, and a batch with an item refused locally
        emulator.scenario("broken", Scenario(status="failed", error={"message": "boom"}))
        if variant.kind != "awaitstep_function":
            failed = await client.run("broken")
            seen.show(failed, failed.error)
            await seen.expect(wt.WorkflowFailed, _unwrap(failed))
        async for item in client.run_many(wf, [{"n": 1}, {"n": float("nan")}]):
            seen.show(item, item.exception)

        # the platform refuses the credential: on a poll, then on a trigger
        if variant.polls:
            ex = await send_trigger(client, variant, wf)
            undo = _rotate_key(emulator, variant)
            try:  # (signed Codika polls with the key, which still passes)
                await client.wait(ex, timeout=2)
            except wt.WorkflowTriggerError as exc:
                seen.exception(exc)
            await seen.expect(wt.AuthenticationError, send_trigger(client, variant, wf))
            undo()
        else:
            proxied = variant.provider(emulator, proxy.url)
            async with make_client(proxied, on_event=seen.event) as other:
                proxy.add("replace", on="trigger", status=401)
                await seen.expect(wt.AuthenticationError, other.run(wf))

        # lost connections, retries exhausted
        if variant.polls:
            emulator.add_fault(Fault.drop(20, on="poll", platform=variant.emulated))
            await seen.expect(wt.TransportError, client.wait(ex))
            emulator.clear_faults()
        emulator.add_fault(Fault.drop(1, on="trigger", platform=variant.emulated))
        await seen.expect(wt.TransportError, client.run(wf))

        # a deadline, an unknown execution
        if variant.polls:
            emulator.scenario("long", Scenario(duration=60))
            long_ex = await send_trigger(client, variant, "long")
            await seen.expect(wt.PollTimeout, client.wait(long_ex, timeout=0.1))
            forged = variant.execution(emulator, "1234567")
            await seen.expect(wt.NotFoundError, client.wait(forged))

    # answers that break the protocol, a redirect, a body over the cap, a refused port
    proxied = variant.provider(emulator, proxy.url)
    async with make_client(proxied, on_event=seen.event, max_body=65536) as client:
        proxy.add("html", on="trigger")
        proxy.add("redirect", on="trigger", status=307, location=second_emulator.base_url)
        proxy.add("huge", on="trigger", size=4 * 65536)
        if variant.polls:
            emulator.scenario(wf, Scenario(duration=60))
            await seen.expect(wt.ProtocolError, send_trigger(client, variant, wf))
            await seen.expect(wt.ProtocolError, send_trigger(client, variant, wf))
            await seen.expect(wt.ProtocolError, send_trigger(client, variant, wf))
            ex = await send_trigger(client, variant, wf)
            proxy.add("empty", on="poll")
            proxy.add("json", on="poll", document=[1, 2])
            proxy.add("redirect", on="poll", status=302, location=second_emulator.base_url)
            for _ in range(3):
                await seen.expect(wt.ProtocolError, client.status(ex))
        else:
            await send_trigger(
                client, variant, wf
            )  # a function's reply may be any text: the page is a result
            await seen.expect(wt.ProtocolError, send_trigger(client, variant, wf))
            await seen.expect(wt.ProtocolError, send_trigger(client, variant, wf))
    async with make_client(
        variant.provider(emulator, emulator.refused_url), on_event=seen.event
    ) as client:
        await seen.expect(wt.TransportError, send_trigger(client, variant, wf))
    async with make_client(variant.provider(emulator, "http://workflows.example.com")) as client:
        await seen.expect(wt.InvalidInputError, send_trigger(client, variant, wf))

    seen.logs(caplog.records)
    assert second_emulator.requests == 0
    assert not seen.leaks(variant.secrets(emulator))
    assert len(seen.texts) > 100


async def _unwrap(outcome: wt.Outcome[Any]) -> Any:
    return outcome.unwrap()


async def test_a_connect_timeout_never_shows_a_secret(
    variant: Platform, emulator: Emulator, make_client: MakeClient
) -> None:
    """aiohttp's ConnectionTimeoutError says the whole URL (Pinkfish's key in its path,
    Codika's api_key in its query): nothing of it may reach what the SDK raises."""
    hole = Blackhole()
    seen = Capture()
    try:
        provider = variant.provider(emulator, hole.url)
        retry = wt.RetryPolicy(attempts=2, backoff=0.01, max_backoff=0.02)
        async with make_client(
            provider, retry=retry, connect_timeout=0.1, on_event=seen.event
        ) as client:
            await seen.expect(wt.TransportError, send_trigger(client, variant, variant.workflow))
            if variant.polls:
                forged = variant.execution(emulator, "1234")
                await seen.expect(wt.TransportError, client.status(forged))
    finally:
        hole.close()
    assert not seen.leaks(variant.secrets(emulator))


# -- redirects ----------------------------------------------------------------------------


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
async def test_a_redirect_of_a_trigger_to_another_host_is_not_followed(
    variant: Platform,
    emulator: Emulator,
    second_emulator: Emulator,
    proxy: FaultProxy,
    make_client: MakeClient,
    status: int,
) -> None:
    proxy.add("redirect", on="trigger", status=status, location=second_emulator.base_url)
    async with make_client(variant.provider(emulator, proxy.url)) as client:
        with pytest.raises(wt.ProtocolError, match="redirect") as info:
            await client.run(variant.workflow, {"n": 1})
        assert client.requests_sent == 1
    assert second_emulator.requests == 0  # the other host never saw a credential
    assert emulator.requests == 0 and len(proxy.seen) == 1
    assert not [s for s in variant.secrets(emulator) if s in str(info.value)]


@pytest.mark.parametrize("status", [301, 302, 307, 308])
async def test_a_redirect_of_a_poll_to_another_host_is_not_followed(
    platform: Platform,
    emulator: Emulator,
    second_emulator: Emulator,
    proxy: FaultProxy,
    make_client: MakeClient,
    status: int,
) -> None:
    async with make_client(platform.provider(emulator, proxy.url)) as client:
        ex = await client.trigger(platform.workflow)
        proxy.add("redirect", on="poll", status=status, location=second_emulator.base_url)
        with pytest.raises(wt.ProtocolError, match="redirect"):
            await client.wait(ex)
        assert client.requests_sent == 2  # not retried either
    assert second_emulator.requests == 0


async def test_a_redirect_of_the_results_fetch_or_a_download_is_not_followed(
    emulator: Emulator, second_emulator: Emulator, proxy: FaultProxy, make_client: MakeClient
) -> None:
    emulator.scenario(PINKFISH.workflow, Scenario(duration=0.0, files={"out.txt": "hello"}))
    async with make_client(PINKFISH.provider(emulator, proxy.url)) as client:
        ex = await client.trigger(PINKFISH.workflow)
        proxy.add("redirect", on="result", status=307, location=second_emulator.base_url)
        with pytest.raises(wt.ProtocolError, match="redirect"):
            await client.wait(ex)
        outcome = await client.wait(ex)
        [artifact] = outcome.artifacts
        moved = wt.Artifact(name="out.txt", url=proxy.url + "/files/x/out.txt")
        proxy.add("redirect", on="poll", status=302, location=second_emulator.base_url)
        with pytest.raises(wt.ProtocolError, match="redirect"):
            await client.download(moved)
        assert await client.download(artifact) == b"hello"
    assert second_emulator.requests == 0


# -- clear text beyond loopback -----------------------------------------------------------


class LoopbackResolver(aiohttp.abc.AbstractResolver):
    """Resolves every name to 127.0.0.1 and records the lookups: a guard that failed
    would show here, without a byte leaving the machine."""

    def __init__(self) -> None:
        self.lookups: list[str] = []

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[aiohttp.abc.ResolveResult]:
        self.lookups.append(host)
        return [
            {
                "hostname": host,
                "host": "127.0.0.1",
                "port": port,
                "family": socket.AF_INET,
                "proto": 0,
                "flags": socket.AI_NUMERICHOST,
            }
        ]

    async def close(self) -> None:
        pass


@pytest.fixture
async def resolver() -> AsyncIterator[tuple[LoopbackResolver, aiohttp.ClientSession]]:
    found = LoopbackResolver()
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(resolver=found))
    try:
        yield found, session
    finally:
        await session.close()


@pytest.mark.parametrize(
    "host", ["workflows.example.com", "localhost.example.com", "127.0.0.1.nip.io"]
)
async def test_credentials_never_go_over_plain_http_beyond_loopback(
    variant: Platform,
    emulator: Emulator,
    make_client: MakeClient,
    resolver: tuple[LoopbackResolver, aiohttp.ClientSession],
    host: str,
) -> None:
    lookups, session = resolver
    base_url = f"http://{host}:{emulator.port}"
    provider = variant.provider(emulator, base_url)
    forged = variant.execution(emulator, "1234", instance_id="inst_1")
    async with make_client(provider, session=session) as client:
        calls = [send_trigger(client, variant, variant.workflow), client.run(variant.workflow)]
        if variant.polls:
            calls += [client.status(forged), client.wait(forged)]
        if variant.kind == "awaitstep":
            calls += [client.cancel(forged), client.send_event(forged, "approval")]
        for call in calls:
            with pytest.raises(wt.InvalidInputError, match="plain http") as info:
                await call
            assert info.value.status_code is None
            assert not [s for s in variant.secrets(emulator) if s in str(info.value)]
        assert client.requests_sent == 0
    assert lookups.lookups == [] and emulator.requests == 0  # not even a DNS lookup

    # allow_insecure_http=True is the only thing that lets them through
    async with make_client(provider, session=session, allow_insecure_http=True) as client:
        await send_trigger(client, variant, variant.workflow)
    assert lookups.lookups == [host] and emulator.trigger_requests == 1


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "[::1]"])
async def test_loopback_needs_no_opt_in(
    platform: Platform, emulator: Emulator, make_client: MakeClient, host: str
) -> None:
    if host == "[::1]":  # the emulator listens on 127.0.0.1 only: expect a refused connection
        provider = platform.provider(emulator, f"http://[::1]:{emulator.port}")
        async with make_client(provider, retry=wt.RetryPolicy(attempts=1)) as client:
            with pytest.raises(wt.TransportError, match="could not connect"):
                await client.trigger(platform.workflow)
        assert ipaddress.ip_address("::1").is_loopback
        return
    provider = platform.provider(emulator, f"http://{host}:{emulator.port}")
    async with make_client(provider) as client:
        await client.trigger(platform.workflow)
    assert emulator.triggers(platform.workflow) == 1


# -- TLS ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (EC P-256, valid for a day)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    folder = tmp_path_factory.mktemp("tls")
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


@pytest.fixture
async def tls_proxy(
    emulator: Emulator, certificate: tuple[Path, Path]
) -> AsyncIterator[FaultProxy]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*certificate)
    async with FaultProxy(emulator.base_url, ssl_context=context) as server:
        yield server


async def test_tls_is_verified_by_default_and_a_context_can_be_passed(
    any_platform: Platform,
    emulator: Emulator,
    tls_proxy: FaultProxy,
    certificate: tuple[Path, Path],
    make_client: MakeClient,
) -> None:
    provider = any_platform.provider(emulator, tls_proxy.url)
    async with make_client(provider) as client:
        with pytest.raises(wt.TransportError, match=r"(?i)certificate") as info:
            await send_trigger(client, any_platform, any_platform.workflow)
    assert "POST" in str(info.value)
    assert emulator.requests == 0 and tls_proxy.seen == []  # no HTTP over a bad handshake

    trusted = ssl.create_default_context(cafile=str(certificate[0]))
    async with make_client(provider, ssl=trusted) as client:
        assert (await client.run(any_platform.workflow)).ok
    assert emulator.triggers(any_platform.workflow) == 1
