"""The router tells its caller which node answered: the winner of a hedge, never the loser."""

from __future__ import annotations

from pathlib import Path

import msgspec

from tests.support.inprocess import EchoService, in_process_mesh


def preferred(service: EchoService) -> EchoService:
    """The same echo, advertised with a short service time, so the scheduler tries it first."""
    original = service.info

    def info() -> object:
        advertised = original()
        load = msgspec.structs.replace(advertised.load, ewma_service_ms=0.5)
        return msgspec.structs.replace(advertised, load=load)

    service.info = info  # type: ignore[method-assign]
    return service


async def test_a_hedged_request_names_the_node_whose_copy_won(tmp_path: Path) -> None:
    async with in_process_mesh(tmp_path) as mesh:
        entry = await mesh.start(hedge=True)
        stuck = await mesh.start([preferred(EchoService(delay=5.0))])
        quick = await mesh.start([EchoService(delay=0.0)])
        await mesh.converge("echo")
        served: list[bytes] = []
        answer = await entry.router.call(
            "echo", "request", b"h", timeout=10, on_served=served.append
        )
        assert answer == b"h"
        assert entry.router.counters["hedged"] == 1, "the stuck node was tried first"
        assert served == [quick.node_id]
        assert stuck.node_id not in served
