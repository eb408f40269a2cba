"""The HTTP face of a node: the OpenAI API and agents over HTTP, in the node's event loop.

:func:`llmnode.http.app.serve` runs it against a :class:`llmnode.http.gateway.MeshGateway`;
:func:`llmnode.http.runtime.http_loops` wires it into a node.
"""
