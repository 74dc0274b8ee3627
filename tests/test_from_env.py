"""``Provider.from_env()`` on every provider, and ``Status`` as a ``str`` enum."""

from __future__ import annotations

import json

import pytest
from _support import FAST

import workflow_trigger as wt
from workflow_trigger._cli_platforms import ENVIRONMENT_HELP, provider_for
from workflow_trigger.providers._env import ENVIRONMENT
from workflow_trigger.testing import Emulator, Scenario


def emulator_env(emu: Emulator) -> dict[str, dict[str, str]]:
    return {
        "codika": {
            "CODIKA_API_KEY": emu.codika_api_key,
            "CODIKA_PROCESS_INSTANCE_ID": emu.codika_instance_id,
            "CODIKA_BASE_URL": emu.base_url,
        },
        "runs_api": {"RUNS_API_KEY": emu.runs_api_api_key, "RUNS_API_BASE_URL": emu.base_url},
        "awaitstep": {
            "AWAITSTEP_API_KEY": emu.awaitstep_api_key,
            "AWAITSTEP_CONNECTION_ID": emu.awaitstep_connection_id,
            "AWAITSTEP_BASE_URL": emu.base_url,
        },
        "awaitstep_function": {"AWAITSTEP_FUNCTION_URL": emu.awaitstep_function_url("wf")},
        "pinkfish": {"PINKFISH_API_KEY": emu.pinkfish_api_key, "PINKFISH_BASE_URL": emu.base_url},
    }


CLASSES = {
    "codika": wt.Codika,
    "runs_api": wt.RunsApi,
    "awaitstep": wt.AwaitStep,
    "awaitstep_function": wt.AwaitStepFunction,
    "pinkfish": wt.Pinkfish,
}


@pytest.mark.parametrize("kind", list(CLASSES))
async def test_every_provider_built_from_the_environment_runs_a_workflow(
    kind: str, emulator: Emulator
) -> None:
    emulator.scenario("wf", Scenario(result={"kind": kind}))
    if kind == "awaitstep_function":
        emulator.awaitstep.functions.add("wf")
    provider = CLASSES[kind].from_env(emulator_env(emulator)[kind])
    assert isinstance(provider, CLASSES[kind])
    async with wt.AsyncClient(provider, poll=FAST) as client:
        outcome = await client.run("wf", {"n": 1})
    assert outcome.ok, outcome
    assert emulator.triggers("wf") == 1


@pytest.mark.parametrize(
    ("kind", "variable"),
    [
        (kind, variable)
        for kind, variables in ENVIRONMENT.items()
        for variable, what in variables
        if "required" in what
    ],
)
def test_a_missing_variable_is_named(kind: str, variable: str, emulator: Emulator) -> None:
    env = emulator_env(emulator)[kind]
    env.pop(variable, None)
    with pytest.raises(wt.InvalidInputError, match=variable) as caught:
        CLASSES[kind].from_env(env)
    assert not any(value in str(caught.value) for value in env.values())


def test_codika_takes_an_organisation_key_instead(emulator: Emulator) -> None:
    env = emulator_env(emulator)["codika"]
    del env["CODIKA_API_KEY"]
    with pytest.raises(wt.InvalidInputError, match="CODIKA_API_KEY"):
        wt.Codika.from_env(env)
    env["CODIKA_ORG_KEY"] = emulator.codika_org_key
    codika = wt.Codika.from_env(env)
    assert emulator.codika_org_key not in repr(codika)


def test_an_empty_variable_counts_as_unset(emulator: Emulator) -> None:
    env = emulator_env(emulator)["pinkfish"]
    env["PINKFISH_API_KEY"] = ""
    with pytest.raises(wt.InvalidInputError, match="PINKFISH_API_KEY"):
        wt.Pinkfish.from_env(env)


def test_from_env_reads_os_environ_by_default(
    emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in emulator_env(emulator)["runs_api"].items():
        monkeypatch.setenv(name, value)
    assert wt.RunsApi.from_env().base_url == emulator.base_url


def test_the_command_line_documents_and_uses_the_same_variables(emulator: Emulator) -> None:
    for variables in ENVIRONMENT.values():
        for variable, _ in variables:
            assert variable in ENVIRONMENT_HELP
    # one implementation: the CLI's provider is from_env's, flags layered on top
    env = emulator_env(emulator)["awaitstep"]
    del env["AWAITSTEP_CONNECTION_ID"]
    with pytest.raises(wt.InvalidInputError, match="AWAITSTEP_CONNECTION_ID"):
        provider_for("awaitstep", env=env)
    provider = provider_for("awaitstep", env=env, extras={"connection_id": "conn_from_token"})
    assert isinstance(provider, wt.AwaitStep) and provider.connection_id == "conn_from_token"


def test_status_compares_equal_to_its_value() -> None:
    assert wt.Status.SUCCEEDED == "succeeded"
    assert {"failed": 1}[wt.Status.FAILED] == 1  # hashes as its value
    assert wt.Status("timed_out") is wt.Status.TIMED_OUT
    assert f"{wt.Status.PENDING}" == str(wt.Status.PENDING) == "pending"
    assert json.dumps({"s": wt.Status.CANCELLED}) == '{"s": "cancelled"}'
    assert wt.Status.RUNNING in {"running"}
