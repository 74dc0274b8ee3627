"""The public surface: __all__ complete and sorted, providers free of I/O."""

import ast
import pathlib

import workflow_trigger as wt

PACKAGE = pathlib.Path(wt.__file__).parent


def test_all_is_sorted_and_complete() -> None:
    public = {name for name in vars(wt) if not name.startswith("_")}
    modules = {
        "cli",
        "client",
        "errors",
        "journal",
        "models",
        "policies",
        "providers",
        "sync",
        "testing",
        "events",
        "options",
        "otel",  # a submodule too, behind its extra
        "fastapi",  # a submodule, imported only by its users (the extra)
        "ray",  # the same (workflow_trigger.ray, the ray extra)
    }
    assert list(wt.__all__) == sorted(set(wt.__all__))
    assert public - modules - {"annotations"} == set(wt.__all__)


def test_errors_module_exports_the_hierarchy() -> None:
    from workflow_trigger import errors

    for name in errors.__all__:
        cls = getattr(errors, name)
        assert issubclass(cls, wt.WorkflowTriggerError)
        assert getattr(wt, name) is cls


def test_providers_do_no_io() -> None:
    forbidden = {"aiohttp", "anyio", "asyncio", "socket", "time", "random", "requests", "httpx"}
    for path in (PACKAGE / "providers").glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                assert name.split(".")[0] not in forbidden, f"{path.name} imports {name}"


def test_package_is_typed() -> None:
    assert (PACKAGE / "py.typed").exists()


def test_client_options_kwargs_match_the_options() -> None:
    import typing

    import attrs

    from workflow_trigger.options import ClientOptionsKwargs

    assert set(typing.get_type_hints(ClientOptionsKwargs)) == set(
        attrs.fields_dict(wt.ClientOptions)
    )
