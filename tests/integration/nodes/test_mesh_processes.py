"""Five real `llmnode start` processes on 127.0.0.1: join, failure detection, rejoin, leave."""

from __future__ import annotations

import pytest

from tests.support.mesh import LocalMesh, wait_for

pytestmark = pytest.mark.slow
PROBE = 0.2
# Detection bound: probe + timeout + max suspicion (6 × 4 × max(1, log10 5) × probe) + gossip.
DETECTION_BOUND_S = PROBE * (1 + 0.5 + 6 * 4) + 2.0


def test_five_nodes_form_a_mesh_from_one_seed_and_handle_crash_rejoin_and_leave(
    mesh: LocalMesh,
) -> None:
    names = [f"n{i}" for i in range(5)]
    for name in names:
        mesh.add(name)
    mesh.wait_converged(names)
    for node in mesh.nodes:
        assert node.states() == dict.fromkeys(names, "alive")

    # kill -9: every other node declares it dead within the bound.
    victim = mesh.nodes[3]
    victim.kill()
    survivors = [n for n in mesh.nodes if n is not victim]
    wait_for(
        lambda: all(n.states().get("n3") == "dead" for n in survivors),
        timeout=DETECTION_BOUND_S,
        what="n3 to be declared dead",
    )
    old_incarnation = next(r for r in survivors[0].peers() if r["name"] == "n3")["incarnation"]

    # Restart with the same identity: alive again, with a higher incarnation.
    victim.start()
    wait_for(
        lambda: all(
            any(
                r["name"] == "n3" and r["state"] == "alive" and r["incarnation"] > old_incarnation
                for r in n.peers()
            )
            for n in survivors
        ),
        timeout=30,
        what="n3 to rejoin with a higher incarnation",
    )

    # A graceful stop is seen as left, not dead.
    leaver = mesh.nodes[4]
    assert leaver.stop() == 0
    others = [n for n in mesh.nodes if n is not leaver]
    wait_for(
        lambda: all(n.states().get("n4") == "left" for n in others),
        timeout=10,
        what="n4 to be seen as left",
    )
    dead_events = [
        line
        for node in others
        for line in node.log_text().splitlines()
        if '"member_dead"' in line and leaver.node_id[:12] in line
    ]
    assert dead_events == []
