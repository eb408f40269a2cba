"""Typed answers: the constraint a msgspec type's JSON Schema makes, and the answer read back as
that type (no I/O).

``msgspec.json.schema(T)`` is the schema; every object in it is closed
(``additionalProperties: false``) unless it says otherwise, since fields a Struct does not have
would be dropped anyway and a small model would otherwise add keys until it runs out of tokens.
"""

from __future__ import annotations

import json
from typing import Any

import msgspec

from llmnode.errors import ConfigError, ModelError
from llmnode.schemas.inference import Constraint, GenerateResult
from llmnode.schemas.tools import close_objects


def type_schema(response_type: Any) -> dict[str, Any]:
    """The JSON Schema of a msgspec-convertible type (a Struct, a list of them, ...)."""
    try:
        schema: dict[str, Any] = msgspec.json.schema(response_type)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"response_type has no JSON Schema: {error}") from error
    close_objects(schema)
    return schema


def type_constraint(response_type: Any) -> Constraint:
    return Constraint(kind="json_schema", source=json.dumps(type_schema(response_type)))


def constraint_options(options: dict[str, Any]) -> dict[str, Any]:
    """Generation options with ``regex=``/``grammar=``/``json_schema=`` made a ``constraint``."""
    shorthands = [kind for kind in ("regex", "grammar", "json_schema") if kind in options]
    if not shorthands:
        return options
    if len(shorthands) > 1 or "constraint" in options:
        raise ConfigError("give one of regex=, grammar=, json_schema= or constraint=")
    options = dict(options)
    source = options.pop(shorthands[0])
    kind = {"regex": "regex", "grammar": "lark", "json_schema": "json_schema"}[shorthands[0]]
    if not isinstance(source, str):
        source = json.dumps(source)
    options["constraint"] = Constraint(kind=kind, source=source)  # type: ignore[arg-type]
    return options


def read_typed(result: GenerateResult, response_type: Any) -> Any:
    """The answer as ``response_type``; ModelError in one line when it was cut short."""
    if result.finish_reason == "length":
        raise ModelError(
            f"the answer reached max_tokens ({result.completion_tokens} tokens) before its JSON "
            "was complete: raise max_tokens"
        )
    try:
        return msgspec.json.decode(result.text, type=response_type)
    except msgspec.MsgspecError as error:
        raise ModelError(f"the answer does not match the response type: {error}") from error
