"""The synchronous SDK: :class:`SyncMesh` runs a :class:`~llmnode.client.mesh.Mesh` on an event
loop of its own, in a background thread (does I/O through the node's control socket).

    with llmnode.connect_sync() as mesh:
        print(mesh.chat("smollm2-135m-instruct", "Hello!"))
        for delta in mesh.generate("smollm2-135m-instruct", "Once upon a time"):
            print(delta, end="")

Every method of ``SyncMesh`` is made from the ``Mesh`` method of the same name by :func:`_call`
(a coroutine: its result) or :func:`_iterate` (an async iterator: a plain iterator), so the two
keep the same parameters by construction; ``tests/unit/agents/test_sync_mesh.py`` checks that
every public async method of ``Mesh`` has its twin here. Only ``chat`` and ``generate`` (either
kind, chosen by ``stream``/``response_type``), ``serving``, ``serve`` and ``close`` are written
out, with the same parameters.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeVar

from llmnode.client.inputs import ChatInput
from llmnode.client.mesh import GENERATE_TIMEOUT, Mesh, open_mesh

if TYPE_CHECKING:
    from llmnode.agents.agent import Agent
    from llmnode.client.agent_tools import AgentTool

P = ParamSpec("P")
T = TypeVar("T")

SETTLE_TIMEOUT = 5.0  # seconds an interrupted call may take to finish cancelling


def _call(
    method: Callable[Concatenate[Mesh, P], Coroutine[Any, Any, T]],
) -> Callable[Concatenate[SyncMesh, P], T]:
    """The synchronous twin of a coroutine method of Mesh: runs it, returns its result."""

    @functools.wraps(method)
    def twin(self: SyncMesh, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return self.run(method(self.mesh, *args, **kwargs))

    return twin


def _iterate(
    method: Callable[Concatenate[Mesh, P], AsyncIterator[T]],
) -> Callable[Concatenate[SyncMesh, P], Iterator[T]]:
    """The synchronous twin of an async-iterator method of Mesh: a plain iterator."""

    @functools.wraps(method)
    def twin(self: SyncMesh, /, *args: P.args, **kwargs: P.kwargs) -> Iterator[T]:
        return self.iterate(method(self.mesh, *args, **kwargs))

    return twin


class SyncMesh:
    """:class:`Mesh` for synchronous code: an event loop of its own in a background thread."""

    def __init__(
        self,
        data_dir: str | os.PathLike[str] | None = None,
        *,
        address: str | None = None,
        token: str | bytes | None = None,
        name: str | None = None,
    ) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="llmnode_sdk_loop", daemon=True
        )
        self._thread.start()
        try:
            self.mesh = self.run(open_mesh(data_dir, address, token, name))
        except BaseException:
            self._stop_loop()
            raise

    # ---- the loop ----------------------------------------------------------------------------

    def run(self, awaitable: Awaitable[T]) -> T:
        """Run ``awaitable`` on this mesh's loop and return its result (or raise its error).

        Interrupted while waiting (Ctrl-C), it cancels the call on the loop and waits for it to
        settle before re-raising, so what runs next (closing a stream, the mesh) never races a
        call still running there."""
        settled = threading.Event()
        started: list[asyncio.Future[T]] = []
        stopped = False

        def start() -> None:  # on the loop; callbacks run in order, so before cancel() below
            if stopped:
                return
            task = asyncio.ensure_future(awaitable)
            task.add_done_callback(lambda _: settled.set())
            started.append(task)

        def cancel() -> None:
            nonlocal stopped
            stopped = True
            for task in started:
                task.cancel()
            if not started:  # interrupted before start() was even scheduled
                settled.set()

        # A Ctrl-C can surface at any bytecode of this thread (the signal may wake another
        # thread first), scheduling included: whatever was started is then cancelled.
        try:
            self._loop.call_soon_threadsafe(start)
            settled.wait()
        except BaseException:
            self._loop.call_soon_threadsafe(cancel)
            settled.wait(timeout=SETTLE_TIMEOUT)
            raise
        return started[0].result()

    def iterate(self, iterator: AsyncIterator[T]) -> Iterator[T]:
        """The items of ``iterator`` (on this mesh's loop), as a plain iterator."""
        try:
            while True:
                try:
                    yield self.run(iterator.__anext__())
                except StopAsyncIteration:
                    return
        finally:
            aclose = getattr(iterator, "aclose", None)
            if aclose is not None and self._loop.is_running():
                self.run(aclose())

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()

    def close(self) -> None:
        """Close the connection and stop this mesh's loop (twin of :meth:`Mesh.close`)."""
        if self._loop.is_closed():
            return
        self.run(self.mesh.close())
        self._stop_loop()

    def __enter__(self) -> SyncMesh:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # ---- the twins of Mesh's methods ---------------------------------------------------------

    request = _call(Mesh.request)
    request_stream = _iterate(Mesh.request_stream)
    send = _call(Mesh.send)
    publish = _call(Mesh.publish)
    subscribe = _iterate(Mesh.subscribe)
    chat_steps = _iterate(Mesh.chat_steps)
    embed = _call(Mesh.embed)
    status = _call(Mesh.status)
    peers = _call(Mesh.peers)
    deploy = _call(Mesh.deploy)
    undeploy = _call(Mesh.undeploy)
    deployments = _call(Mesh.deployments)
    pull_from_mesh = _call(Mesh.pull_from_mesh)

    def generate(
        self,
        /,
        model: str,
        prompt: str = "",
        *,
        messages: ChatInput | None = None,
        response_type: Any = None,
        timeout: float = GENERATE_TIMEOUT,
        caller: str | None = None,
        **options: Any,
    ) -> Any:
        """An iterator of text deltas, or with ``response_type=T`` the validated T."""
        answer = self.mesh.generate(
            model, prompt, messages=messages, response_type=response_type, timeout=timeout,
            caller=caller, **options,
        )  # fmt: skip
        if response_type is None:
            return self.iterate(answer)
        return self.run(answer)

    def chat(
        self,
        model: str,
        messages: ChatInput,
        *,
        stream: bool = False,
        system: str | None = None,
        response_type: Any = None,
        tools: Sequence[str | AgentTool] | None = None,
        timeout: float = GENERATE_TIMEOUT,
        caller: str | None = None,
        **options: Any,
    ) -> Any:
        """The whole answer (a validated ``response_type`` when given), or with
        ``stream=True`` an iterator of text deltas."""
        answer = self.mesh.chat(
            model,
            messages,
            stream=stream,  # type: ignore[call-overload]  # either overload, as asked
            system=system,
            response_type=response_type,
            tools=tools,
            timeout=timeout,
            caller=caller,
            **options,
        )
        if stream:
            return self.iterate(answer)
        return self.run(answer)

    @contextlib.contextmanager
    def serving(self, *agents: Agent) -> Iterator[None]:
        """Host ``agents`` (on this mesh's loop) for the duration of the ``with`` block."""
        manager = self.mesh.serving(*agents)
        self.run(manager.__aenter__())
        try:
            yield
        finally:
            self.run(manager.__aexit__(None, None, None))

    def serve(self, *agents: Agent) -> None:
        """Host ``agents`` until Ctrl-C."""
        future = asyncio.run_coroutine_threadsafe(self.mesh.serve(*agents), self._loop)
        try:
            future.result()
        except KeyboardInterrupt:
            future.cancel()
            with contextlib.suppress(BaseException):
                future.result(timeout=10)


def connect_sync(
    data_dir: str | os.PathLike[str] | None = None,
    *,
    address: str | None = None,
    token: str | bytes | None = None,
    name: str | None = None,
) -> SyncMesh:
    """Synchronous :func:`~llmnode.client.mesh.connect`; use ``with connect_sync() as mesh:``
    or call ``close()``."""
    return SyncMesh(data_dir, address=address, token=token, name=name)
