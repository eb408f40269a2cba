"""SyncMesh keeps in step with Mesh: every public async method has a synchronous twin with the
same parameters (its result, or a plain iterator for an async iterator)."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from llmnode.client.mesh import Mesh
from llmnode.client.sync import SyncMesh


def _is_async(function: Callable[..., Any]) -> bool:
    """A coroutine, an async generator, or an async context manager (``serving``)."""
    inner = inspect.unwrap(function)
    return inspect.iscoroutinefunction(inner) or inspect.isasyncgenfunction(inner)


def _public_async_methods() -> dict[str, Callable[..., Any]]:
    return {
        name: function
        for name, function in inspect.getmembers(Mesh, inspect.isfunction)
        if not name.startswith("_") and _is_async(function)
    }


def _parameters(function: Callable[..., Any]) -> list[tuple[str, object, object, object]]:
    """Names, kinds, defaults and annotations, after ``self`` (whatever its kind)."""
    parameters = list(inspect.signature(function).parameters.values())[1:]
    return [(p.name, p.kind, p.default, p.annotation) for p in parameters]


def test_mesh_has_the_async_methods_this_test_expects() -> None:
    expected = {"request", "request_stream", "send", "publish", "subscribe", "chat_steps", "embed"}
    assert expected | {"status", "peers", "serving", "serve", "close"} <= set(
        _public_async_methods()
    )


def test_every_public_async_method_of_mesh_has_a_sync_twin_with_the_same_parameters() -> None:
    missing = []
    different = []
    for name, method in _public_async_methods().items():
        twin = getattr(SyncMesh, name, None)
        if twin is None or inspect.iscoroutinefunction(twin) or inspect.isasyncgenfunction(twin):
            missing.append(name)
        elif _parameters(twin) != _parameters(method):
            different.append(name)
    assert not missing, f"SyncMesh lacks synchronous twins of {missing}"
    assert not different, f"SyncMesh twins with other parameters than Mesh's: {different}"


def test_chat_and_generate_the_methods_of_either_kind_have_mesh_parameters() -> None:
    assert _parameters(SyncMesh.chat) == _parameters(Mesh.chat)
    assert _parameters(SyncMesh.generate) == _parameters(Mesh.generate)


def test_sync_twins_keep_the_async_methods_documentation() -> None:
    for name, method in _public_async_methods().items():
        assert getattr(SyncMesh, name).__doc__, name
        if name not in ("chat", "serving", "serve", "close"):
            assert getattr(SyncMesh, name).__doc__ == method.__doc__, name
