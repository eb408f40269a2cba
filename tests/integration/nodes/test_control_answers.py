"""Every control request gets exactly one terminal answer, against a real node process: a
failure in the node that is not a MeshError answers at once with a typed error."""

from __future__ import annotations

import asyncio
import time

import msgspec
import pytest

from llmnode.client.connection import ControlClient
from llmnode.errors import DeadlineExceeded, MeshError
from llmnode.schemas.base import WireMessage
from llmnode.schemas.control import (
    CtlAgentChunk,
    CtlAgentReply,
    CtlCall,
    CtlRegister,
    CtlRequest,
    CtlStatus,
)
from llmnode.schemas.inference import TokenChunk
from tests.support.mesh import NodeProcess

pytestmark = pytest.mark.slow

TIMEOUT = 20.0  # the request's own timeout: the SDK would wait it plus a grace period


async def test_a_request_failing_with_a_non_mesh_error_answers_a_typed_error_at_once(
    node: NodeProcess,
) -> None:
    """A raw agent streams one token chunk, then a final result that is not msgpack: the
    router's merge of the resumable stream raises a msgspec error (not a MeshError). The client
    gets a typed error well before its timeout, and the node keeps serving."""
    tasks: set[asyncio.Task[None]] = set()
    async with (
        ControlClient.from_data_dir(node.data_dir) as agent,
        ControlClient.from_data_dir(node.data_dir) as caller,
    ):

        async def answer(call: CtlCall) -> None:
            chunk = msgspec.msgpack.encode(TokenChunk(text="a", token_ids=[1]))
            await agent.send(CtlAgentChunk(call_id=call.call_id, seq=0, data=chunk))
            await agent.send(CtlAgentReply(call_id=call.call_id, data=b"\xc1"))

        def on_message(message: WireMessage) -> None:
            if isinstance(message, CtlCall):
                task = asyncio.create_task(answer(message))
                tasks.add(task)
                task.add_done_callback(tasks.discard)

        agent.add_listener(on_message)
        await agent.call(CtlRegister(id=agent.next_id(), name="garbled", slots=1))
        request = CtlRequest(
            id=caller.next_id(),
            service="garbled",
            method="generate",
            payload=b"",
            timeout=TIMEOUT,
            stream=True,
        )
        started = time.monotonic()
        with pytest.raises(MeshError) as raised:
            async with caller.stream(request) as stream:
                async for _ in stream:
                    pass
        elapsed = time.monotonic() - started
        assert not isinstance(raised.value, DeadlineExceeded), raised.value
        assert elapsed < TIMEOUT / 4, f"answered after {elapsed:.1f} s"
        assert "internal error" in str(raised.value) or raised.value.code != "mesh_error"
        status_answer = await caller.call(CtlStatus(id=caller.next_id()))
        assert msgspec.msgpack.decode(status_answer.data)["node_id"] == node.node_id
    assert node.alive()
