"""Publish/subscribe for local clients: subscriptions, fan-out and delivery of topics (no sockets).

A publication goes once to every live node advertising a subscriber of its topic (this node
included, delivered in place). Arriving here, it is handed to each local client subscribed to the
topic and to each local agent with a handler for it. A publication that reaches this node by more
than one path is delivered once (deduplicated by its message id). One-way messages that are not
publications go on to the agent they name.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Callable

from llmnode.bus.identity import node_id_to_text
from llmnode.nodes.control.agents import RemoteAgents
from llmnode.schemas.base import WireMessage
from llmnode.schemas.control import CtlDelivery
from llmnode.schemas.requests import OneWay
from llmnode.schemas.state import ServiceInfo

TOPIC_PREFIX = "topic:"
SEEN_LIMIT = 10_000  # message ids remembered for deduplication


class Topics:
    """Subscriptions of local clients, and delivery of publications and one-way messages.

    ``bus_send`` sends to another node, ``topic_nodes`` lists the live nodes subscribed to a
    topic (from the mesh view), ``changed`` tells the node its advertised state changed."""

    def __init__(
        self,
        node_id: bytes,
        agents: RemoteAgents,
        *,
        bus_send: Callable[[bytes, WireMessage], bool],
        topic_nodes: Callable[[str], list[bytes]],
        changed: Callable[[], None],
    ) -> None:
        self._node_id = node_id
        self._agents = agents
        self._bus_send = bus_send
        self._topic_nodes = topic_nodes
        self._changed = changed
        # client -> subscription id -> topic
        self._subscriptions: dict[bytes, dict[int, str]] = {}
        self._seen: OrderedDict[bytes, None] = OrderedDict()

    # -- subscriptions -----------------------------------------------------------------------

    def subscribe(self, client: bytes, subscription: int, topic: str) -> None:
        self._subscriptions.setdefault(client, {})[subscription] = topic
        self._changed()

    def unsubscribe(self, client: bytes, topic: str) -> None:
        subscriptions = self._subscriptions.get(client, {})
        for key, subscribed in list(subscriptions.items()):
            if subscribed == topic:
                del subscriptions[key]
        self._changed()

    def drop(self, client: bytes) -> None:
        """The client is gone: its subscriptions go with it."""
        if self._subscriptions.pop(client, None):
            self._changed()

    def infos(self) -> list[ServiceInfo]:
        """What this node advertises for its clients' subscriptions (one pseudo-service)."""
        topics = sorted({t for s in self._subscriptions.values() for t in s.values()})
        if not topics:
            return []
        return [ServiceInfo(name="subscriptions", kind="subscriptions", topics=topics)]

    # -- fan-out -----------------------------------------------------------------------------

    def publish(self, topic: str, payload: bytes, caller: str) -> int:
        """Send a publication to every node subscribed to ``topic``; returns how many."""
        message = OneWay(
            service=TOPIC_PREFIX + topic, payload=payload, caller=caller, message_id=os.urandom(16)
        )
        targets = self._topic_nodes(topic)
        for target in targets:
            if target == self._node_id:
                self.deliver(target, message)
            else:
                self._bus_send(target, message)
        return len(targets)

    def _first_time(self, message_id: bytes) -> bool:
        if not message_id:
            return True
        if message_id in self._seen:
            return False
        self._seen[message_id] = None
        if len(self._seen) > SEEN_LIMIT:
            self._seen.popitem(last=False)
        return True

    def deliver(self, sender: bytes, message: OneWay) -> None:
        """A one-way message or publication arriving at this node (once per message id)."""
        if not self._first_time(message.message_id):
            return
        if not message.service.startswith(TOPIC_PREFIX):
            self._agents.deliver(sender, message)
            return
        topic = message.service.removeprefix(TOPIC_PREFIX)
        sender_text = node_id_to_text(sender)
        for client, subscriptions in self._subscriptions.items():
            for subscription, subscribed in subscriptions.items():
                if subscribed == topic:
                    self._agents.send(
                        client,
                        CtlDelivery(
                            service=topic,
                            payload=message.payload,
                            caller_node=sender_text,
                            caller=message.caller,
                            topic=topic,
                            subscription=subscription,
                        ),
                    )
        for proxy in self._agents.subscribed(topic):
            self._agents.send(
                proxy.client,
                CtlDelivery(
                    service=proxy.register.name,
                    payload=message.payload,
                    caller_node=sender_text,
                    caller=message.caller,
                    topic=topic,
                ),
            )
