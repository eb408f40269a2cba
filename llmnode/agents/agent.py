"""The Agent API: the ``Agent`` base class, ``@handler`` and ``@subscribe``, ``Context``, and the
message envelope (no I/O here; a Context reaches the mesh through the SDK's ``Mesh``).

An agent is a class with typed async handlers::

    class Question(msgspec.Struct):
        text: str

    class Answer(msgspec.Struct):
        text: str

    class Greeter(Agent):
        name = "greeter"              # default: the class name, lower-case
        allow = []                    # node ids (base32) that may call it; empty: any member
        topics = []                   # extra topics; @subscribe adds its own

        async def on_start(self, ctx: Context) -> None: ...   # before it is advertised
        async def on_stop(self) -> None: ...

        @handler                      # picked by the message type: Question
        async def ask(self, message: Question, ctx: Context) -> Answer:
            return Answer(text="hello " + message.text)

        @handler("ping")              # a dict whose "type" is "ping"
        async def ping(self, message: dict[str, Any], ctx: Context) -> dict[str, Any]: ...

        @handler                      # annotated dict, no name: any message nothing else takes
        async def other(self, message: dict[str, Any], ctx: Context) -> None: ...

        @subscribe("news")            # publications on topic "news"
        async def news(self, message: Headline, ctx: Context) -> None: ...

The same handlers serve requests (their return value is the reply) and one-way sends (it is
dropped). A handler may omit ``ctx``. An ``async def`` handler that ``yield``s serves streamed
requests, one chunk per yielded value.

On the wire an agent message is msgpack of the envelope ``{"type": tag, "body": message}``. The
tag of a msgspec Struct is its class name; of a dict, its ``"type"`` key (else ``"dict"``). The
receiver picks the handler by tag and converts the body to the handler's annotated type.
"""

from __future__ import annotations

import inspect
import time
import typing
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar, overload

import msgspec

from llmnode.client.envelope import convert_body
from llmnode.errors import AgentError, ConfigError
from llmnode.schemas.inference import ChatMessage

if TYPE_CHECKING:
    from llmnode.client.mesh import Mesh

T = TypeVar("T")
HandlerFunction = Callable[..., Any]

_HANDLER_ATTRIBUTE = "__llmnode_handler__"

# ---- handlers --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HandlerSpec:
    """One handler of an agent class, resolved from its signature."""

    attribute: str  # method name
    tag: str  # the message tag it takes ("" for the dict fallback)
    message_type: Any  # what the body is converted to (None: left as is)
    takes_context: bool
    streams: bool  # an async generator: serves streamed requests
    topic: str = ""  # for @subscribe handlers


@dataclass(frozen=True, slots=True)
class _Mark:
    tag: str | None
    message_type: Any
    topic: str


@overload
def handler(function: HandlerFunction, /) -> HandlerFunction: ...
@overload
def handler(tag: str | type | None = None, /) -> Callable[[HandlerFunction], HandlerFunction]: ...


def handler(
    target: HandlerFunction | str | type | None = None, /
) -> HandlerFunction | Callable[[HandlerFunction], HandlerFunction]:
    """Mark an async method as a message handler: ``@handler``, ``@handler("tag")`` or
    ``@handler(MessageType)``."""
    if callable(target) and not isinstance(target, type):
        setattr(target, _HANDLER_ATTRIBUTE, _Mark(None, None, ""))
        return target
    tag = target if isinstance(target, str) else None
    message_type = target if isinstance(target, type) else None

    def mark(function: HandlerFunction) -> HandlerFunction:
        setattr(function, _HANDLER_ATTRIBUTE, _Mark(tag, message_type, ""))
        return function

    return mark


def subscribe(topic: str) -> Callable[[HandlerFunction], HandlerFunction]:
    """Mark an async method as the handler of publications on ``topic``."""
    if not topic:
        raise ConfigError("@subscribe needs a topic name")

    def mark(function: HandlerFunction) -> HandlerFunction:
        setattr(function, _HANDLER_ATTRIBUTE, _Mark(None, None, topic))
        return function

    return mark


def _resolve(cls: type, attribute: str, function: HandlerFunction, mark: _Mark) -> HandlerSpec:
    where = f"{cls.__name__}.{attribute}"
    if not (inspect.iscoroutinefunction(function) or inspect.isasyncgenfunction(function)):
        raise ConfigError(f"handler {where} must be `async def`")
    parameters = list(inspect.signature(function).parameters.values())[1:]  # drop self
    if not 1 <= len(parameters) <= 2:
        raise ConfigError(f"handler {where} must take (self, message) or (self, message, ctx)")
    message_type = mark.message_type
    if message_type is None:
        try:
            hints = typing.get_type_hints(function)
        except NameError as error:
            raise ConfigError(
                f"cannot resolve the type hints of {where} ({error}); define message types at "
                "module level or pass the type: @handler(MessageType)"
            ) from error
        message_type = hints.get(parameters[0].name)
    origin = typing.get_origin(message_type) or message_type
    tag = mark.tag
    if tag is None:
        if isinstance(origin, type) and issubclass(origin, msgspec.Struct):
            tag = origin.__name__
        elif origin in (dict, None, Any, object):
            tag = ""  # the fallback: any message no other handler takes
        else:
            raise ConfigError(
                f"handler {where}: annotate the message as a msgspec Struct or dict, or name "
                'its tag: @handler("tag")'
            )
    return HandlerSpec(
        attribute=attribute,
        tag=tag,
        message_type=message_type,
        takes_context=len(parameters) == 2,
        streams=inspect.isasyncgenfunction(function),
        topic=mark.topic,
    )


class Agent:
    """Base class of agents. See the module docstring for the API."""

    name: ClassVar[str] = ""
    topics: ClassVar[list[str]] = []
    allow: ClassVar[list[str]] = []
    slots: ClassVar[int] = 8  # handlers run in parallel
    queue_limit: ClassVar[int] = 256  # waiting requests beyond which the node answers Busy

    _handlers: ClassVar[dict[str, HandlerSpec]] = {}
    _topic_handlers: ClassVar[dict[str, HandlerSpec]] = {}
    _fallback: ClassVar[HandlerSpec | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not cls.__dict__.get("name"):
            cls.name = cls.__name__.lower()
        handlers: dict[str, HandlerSpec] = {}
        topic_handlers: dict[str, HandlerSpec] = {}
        fallback: HandlerSpec | None = None
        for klass in reversed(cls.__mro__):
            for attribute, function in vars(klass).items():
                mark = getattr(function, _HANDLER_ATTRIBUTE, None)
                if not isinstance(mark, _Mark):
                    continue
                spec = _resolve(cls, attribute, function, mark)
                if spec.topic:
                    topic_handlers[spec.topic] = spec
                elif spec.tag:
                    handlers[spec.tag] = spec
                else:
                    fallback = spec
        cls._handlers = handlers
        cls._topic_handlers = topic_handlers
        cls._fallback = fallback

    @classmethod
    def all_topics(cls) -> list[str]:
        """The topics this agent receives: ``topics`` plus those of its @subscribe handlers."""
        return sorted(set(cls.topics) | set(cls._topic_handlers))

    @classmethod
    def handler_for(cls, tag: str, topic: str = "") -> HandlerSpec:
        """The handler that takes a message with ``tag`` (on ``topic``, for publications)."""
        if topic and topic in cls._topic_handlers:
            return cls._topic_handlers[topic]
        spec = cls._handlers.get(tag) or cls._fallback
        if spec is None:
            raise AgentError(f"agent {cls.name!r} has no handler for messages of type {tag!r}")
        return spec

    async def on_start(self, ctx: Context) -> None:
        """Called once before the agent is advertised in the mesh."""

    async def on_stop(self) -> None:
        """Called once after the agent is withdrawn from the mesh."""

    def invoke(self, spec: HandlerSpec, body: Any, ctx: Context) -> Any:
        """Call the handler with the body converted to its type: a coroutine, or an async
        iterator for streaming handlers."""
        message = convert_body(body, spec.message_type)
        function = getattr(self, spec.attribute)
        return function(message, ctx) if spec.takes_context else function(message)


# ---- context ---------------------------------------------------------------------------------


class Context:
    """What a handler can do: talk to other agents and models, as this agent, within the
    deadline of the call it is serving. ``caller``/``caller_node`` describe that call."""

    def __init__(
        self,
        mesh: Mesh,
        *,
        agent: str,
        node_id: str = "",
        caller: str = "",
        caller_node: str = "",
        deadline: float | None = None,
    ) -> None:
        self.mesh = mesh
        self.agent = agent
        self.node_id = node_id
        self.caller = caller
        self.caller_node = caller_node
        self.deadline = deadline

    def for_call(self, *, caller: str, caller_node: str, deadline: float | None) -> Context:
        return Context(
            self.mesh,
            agent=self.agent,
            node_id=self.node_id,
            caller=caller,
            caller_node=caller_node,
            deadline=deadline,
        )

    def _timeout(self, timeout: float | None) -> float:
        chosen = 30.0 if timeout is None else timeout
        if self.deadline is not None:
            chosen = min(chosen, max(0.05, self.deadline - time.time()))
        return chosen

    async def send(self, to: str, message: Any) -> None:
        await self.mesh.send(to, message, caller=self.agent)

    @overload
    async def request(
        self, to: str, message: Any, *, timeout: float | None = ..., reply_type: type[T]
    ) -> T: ...
    @overload
    async def request(
        self, to: str, message: Any, *, timeout: float | None = ..., reply_type: None = ...
    ) -> Any: ...

    async def request(
        self, to: str, message: Any, *, timeout: float | None = None, reply_type: Any = None
    ) -> Any:
        return await self.mesh.request(
            to, message, timeout=self._timeout(timeout), reply_type=reply_type, caller=self.agent
        )

    async def publish(self, topic: str, message: Any) -> None:
        await self.mesh.publish(topic, message, caller=self.agent)

    def subscribe(self, topic: str, message_type: Any = None) -> AsyncIterator[Any]:
        return self.mesh.subscribe(topic, message_type=message_type)

    def generate(self, model: str, prompt: str, **options: Any) -> Any:
        """Text deltas (``async for``), or with ``response_type=T`` (``await``) a validated T."""
        options["timeout"] = self._timeout(options.get("timeout"))
        return self.mesh.generate(model, prompt, caller=self.agent, **options)

    async def chat(
        self, model: str, messages: str | list[ChatMessage] | list[dict[str, str]], **options: Any
    ) -> Any:
        """The answer text; a validated T with ``response_type=T``; with ``tools=[...]`` the
        model may call agents of the mesh first (see ``Mesh.chat``)."""
        options["timeout"] = self._timeout(options.get("timeout"))
        return await self.mesh.chat(model, messages, caller=self.agent, **options)

    def chat_steps(
        self, model: str, messages: str | list[ChatMessage] | list[dict[str, str]], **options: Any
    ) -> AsyncIterator[Any]:
        """Each step of a chat whose model may call agents of the mesh (``Mesh.chat_steps``)."""
        options["timeout"] = self._timeout(options.get("timeout"))
        return self.mesh.chat_steps(model, messages, caller=self.agent, **options)

    async def embed(
        self, model: str, texts: str | list[str], *, timeout: float | None = None
    ) -> list[list[float]]:
        return await self.mesh.embed(
            model, texts, timeout=self._timeout(timeout), caller=self.agent
        )
