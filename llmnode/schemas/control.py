"""Messages on the local control socket between a node and its clients (SDK, CLI, agents). No I/O.

The control socket is a Unix socket, ``ipc://<data dir>/control.sock`` (mode 0600), or loopback
TCP, carrying length-prefixed frames (:mod:`llmnode.nodes.control.wire`). A client's first frame
is the token read from the node's data directory (``control.token``, mode 0600), so only the
node's owner can use it; every later frame is one msgpack message. A client sends ``Ctl*``
requests (``CtlChatTools``: a chat with tools the node runs) and gets
``CtlOk``/``CtlError``/``CtlChunk`` answers with the same ``id``; a client
that hosts agents also receives ``CtlCall`` (a request for one of its agents), answers it with
``CtlAgentReply``/``CtlAgentChunk``, and receives ``CtlDelivery`` for one-way messages and
topics.
"""

from __future__ import annotations

from llmnode.schemas.base import WireMessage
from llmnode.schemas.inference import ChatMessage, GenerateRequest
from llmnode.schemas.tool_loop import ToolSpec

# ---- client -> node --------------------------------------------------------------------------


class CtlStatus(WireMessage, frozen=True):
    id: int


class CtlPeers(WireMessage, frozen=True):
    id: int


class CtlRequest(WireMessage, frozen=True):
    """Route a request through the mesh's scheduler (``service``: agent name, ``name@node``, or
    ``model:NAME``)."""

    id: int
    service: str
    method: str
    payload: bytes
    timeout: float = 30.0
    stream: bool = False
    idempotent: bool = True
    caller: str = ""


class CtlChatTools(WireMessage, frozen=True):
    """A chat in which the model may call agents of the mesh as tools, run by the node
    (:mod:`llmnode.schemas.tool_loop`): answered with one ``CtlChunk`` per step (msgpack of a
    ``ToolCalled``, ``ToolReplied`` or ``Answered``), then ``CtlOk``; ``CtlCancel`` stops it.
    ``model`` is the model's service (``model:NAME``); ``options`` carries the generation
    options of every model turn (its messages, constraint and tools are the loop's);
    ``answer_schema`` the JSON Schema the answer decodes under (empty: free text); ``timeout``
    bounds each model turn and each agent call."""

    id: int
    model: str
    messages: list[ChatMessage]
    tools: list[ToolSpec]
    tool_choice: str = "auto"
    max_rounds: int = 4
    answer_schema: str = ""
    options: GenerateRequest = GenerateRequest()
    timeout: float = 120.0
    caller: str = ""


class CtlCancel(WireMessage, frozen=True):
    id: int  # the id of the CtlRequest or CtlChatTools to cancel


class CtlSend(WireMessage, frozen=True):
    """One-way message to an agent (any replica)."""

    id: int
    service: str
    payload: bytes
    caller: str = ""


class CtlPublish(WireMessage, frozen=True):
    id: int
    topic: str
    payload: bytes
    caller: str = ""


class CtlSubscribe(WireMessage, frozen=True):
    """Subscribe this client to a topic; deliveries come as CtlDelivery(subscription=id)."""

    id: int
    topic: str


class CtlUnsubscribe(WireMessage, frozen=True):
    id: int
    topic: str


class CtlRegister(WireMessage, frozen=True):
    """Host an agent in this client: the node advertises it in its signed state."""

    id: int
    name: str
    topics: list[str] = []
    allow: list[str] = []  # node ids (base32) allowed to call it; empty: any mesh member
    slots: int = 8
    queue_limit: int = 256


class CtlUnregister(WireMessage, frozen=True):
    id: int
    name: str


class CtlReloadKeys(WireMessage, frozen=True):
    """Re-read the mesh key ring file into the running node (key rotation without a restart)."""

    id: int


class CtlDeploy(WireMessage, frozen=True):
    """Deploy ``model`` with ``replicas`` (or ``auto``), or undeploy it (``deployed=False``):
    a new version of its deployment record, signed by this node and gossiped."""

    id: int
    model: str
    replicas: int = 1
    auto: bool = False
    deployed: bool = True
    max_replicas: int = 8  # with ``auto``: the most replicas demand may add


class CtlDeployments(WireMessage, frozen=True):
    """Every deployment this node knows, with where it is assigned and served."""

    id: int


class CtlPullModel(WireMessage, frozen=True):
    """Copy ``model`` into this node's store from a peer that holds it (over the mesh)."""

    id: int
    model: str
    timeout: float = 3600.0


class CtlAgentChunk(WireMessage, frozen=True):
    call_id: int
    seq: int
    data: bytes


class CtlAgentReply(WireMessage, frozen=True):
    call_id: int
    data: bytes = b""
    error_code: str = ""  # empty: success
    error_message: str = ""
    error_remote_type: str = ""  # see CtlError
    error_reason: str = ""


# ---- node -> client --------------------------------------------------------------------------


class CtlOk(WireMessage, frozen=True):
    id: int
    data: bytes = b""  # msgpack; meaning depends on the request


class CtlError(WireMessage, frozen=True):
    id: int
    code: str  # an llmnode.errors code
    message: str
    remote_type: str = ""  # llmnode.errors.error_fields: a handler's exception class
    reason: str = ""  # a rejection's reason


class CtlChunk(WireMessage, frozen=True):
    id: int
    seq: int
    data: bytes


class CtlCall(WireMessage, frozen=True):
    """A request for an agent this client hosts. Answer with CtlAgentReply(call_id)."""

    call_id: int
    service: str
    method: str
    payload: bytes
    deadline: float
    caller_node: str
    caller: str = ""
    stream: bool = False


class CtlCallCancelled(WireMessage, frozen=True):
    call_id: int


class CtlDelivery(WireMessage, frozen=True):
    """A one-way message (``topic`` empty) for a hosted agent, or a publication on a topic."""

    service: str  # the agent name, or the topic
    payload: bytes
    caller_node: str
    caller: str = ""
    topic: str = ""
    subscription: int = 0
