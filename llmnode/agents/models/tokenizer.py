"""A model's tokenizer for serving: Hugging Face ``tokenizers`` plus its Jinja chat template
(reads the tokenizer files of a model folder; no other I/O).

Serving needs no transformers (and so no torch): ``tokenizer.json`` is loaded with the Rust
``tokenizers`` library, the special tokens come from ``tokenizer_config.json``, and the chat
template is rendered with jinja2 the way transformers renders it (sandboxed, ``trim_blocks``,
``lstrip_blocks``, loop controls, ``raise_exception``, ``tojson``, ``strftime_now``). Output is
turned back into text incrementally with ``tokenizers.decoders.DecodeStream``, which looks only
at the last few tokens, so streaming a long answer is linear in its length.
"""

# ruff: noqa: PLC0415 - jinja2 is imported when the first chat template is rendered

from __future__ import annotations

import datetime
import json
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

from llmnode.errors import ModelError

_SPECIAL_KEYS = ("bos_token", "eos_token", "unk_token", "pad_token", "sep_token", "cls_token")


def _token_text(value: object) -> str | None:
    """A special token as tokenizer_config.json writes it: a string or ``{"content": ...}``."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return str(value["content"])
    return None


def _chat_template(folder: Path, config: dict[str, Any]) -> str | None:
    jinja = folder / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text()
    template = config.get("chat_template")
    if isinstance(template, list):  # named templates: take the default one
        named = {item.get("name"): item.get("template") for item in template}
        template = named.get("default") or next(iter(named.values()), None)
    return template if isinstance(template, str) else None


class IncrementalDecoder:
    """Turns one sequence's tokens into text as they come (special tokens skipped)."""

    def __init__(self, tokenizer: TextTokenizer) -> None:
        from tokenizers.decoders import DecodeStream

        self._backend = tokenizer.backend
        self._stream = DecodeStream(skip_special_tokens=True)

    def step(self, token: int) -> str:
        """The text this token completes ('' while a character is still incomplete)."""
        text: str | None = self._stream.step(self._backend, token)
        return text or ""


class TextTokenizer:
    """The tokenizer of a model folder: encode, decode, special tokens and chat template."""

    def __init__(self, folder: str | Path) -> None:
        from tokenizers import Tokenizer

        folder = Path(folder)
        try:
            self.backend = Tokenizer.from_file(str(folder / "tokenizer.json"))
        except Exception as error:  # tokenizers raises plain Exceptions
            raise ModelError(f"cannot load the tokenizer in {folder.name}: {error}") from error
        config_path = folder / "tokenizer_config.json"
        config: dict[str, Any] = {}
        if config_path.is_file():
            config = json.loads(config_path.read_text())
        self.special_tokens = {
            key: text for key in _SPECIAL_KEYS if (text := _token_text(config.get(key)))
        }
        self.chat_template = _chat_template(folder, config)
        self.model_max_length = int(min(config.get("model_max_length") or 1 << 30, 1 << 30))

    def token_id(self, text: str | None) -> int | None:
        if text is None:
            return None
        found: int | None = self.backend.token_to_id(text)
        return found

    @property
    def bos_token_id(self) -> int | None:
        return self.token_id(self.special_tokens.get("bos_token"))

    @property
    def eos_token_id(self) -> int | None:
        return self.token_id(self.special_tokens.get("eos_token"))

    def get_vocab(self) -> dict[str, int]:
        vocabulary: dict[str, int] = self.backend.get_vocab(with_added_tokens=True)
        return vocabulary

    def encode(self, text: str, *, add_special_tokens: bool = True) -> list[int]:
        ids: list[int] = self.backend.encode(text, add_special_tokens=add_special_tokens).ids
        return ids

    def decode(self, ids: Sequence[int], *, skip_special_tokens: bool = True) -> str:
        text: str = self.backend.decode(list(ids), skip_special_tokens=skip_special_tokens)
        return text

    def incremental_decoder(self) -> IncrementalDecoder:
        return IncrementalDecoder(self)

    @cached_property
    def _padded(self) -> Any:
        """A copy of the backend that pads batches and truncates (for embeddings)."""
        from tokenizers import Tokenizer

        padded = Tokenizer.from_str(self.backend.to_str())
        pad = self.special_tokens.get("pad_token")
        pad_id = self.token_id(pad)
        padded.enable_padding(pad_id=pad_id or 0, pad_token=pad or "[PAD]")
        return padded

    def encode_batch(self, texts: list[str], max_length: int) -> dict[str, list[list[int]]]:
        """ids, attention mask and token type ids, padded to the longest (at most max_length)."""
        padded = self._padded
        padded.enable_truncation(max_length=min(max_length, self.model_max_length))
        encodings = padded.encode_batch(texts)
        return {
            "input_ids": [e.ids for e in encodings],
            "attention_mask": [e.attention_mask for e in encodings],
            "token_type_ids": [e.type_ids for e in encodings],
        }

    @cached_property
    def _template(self) -> Any:
        if not self.chat_template:
            return None
        from jinja2 import TemplateError
        from jinja2.ext import loopcontrols
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        def raise_exception(message: str) -> None:
            raise TemplateError(message)

        def tojson(value: object, indent: int | None = None, **_: object) -> str:
            return json.dumps(value, indent=indent, ensure_ascii=False)

        def strftime_now(format_string: str) -> str:
            return datetime.datetime.now().strftime(format_string)

        environment = ImmutableSandboxedEnvironment(
            trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols]
        )
        environment.filters["tojson"] = tojson
        environment.globals.update(raise_exception=raise_exception, strftime_now=strftime_now)
        return environment.from_string(self.chat_template)

    def apply_chat_template(
        self, messages: list[dict[str, str]], *, tools: list[Any] | None = None
    ) -> str:
        """The conversation as the model expects it, ending with the assistant's turn opened;
        ``tools`` (OpenAI-style definitions) go to a template that renders them."""
        template = self._template
        if template is None:
            raise ModelError("this model has no chat template")
        from jinja2 import TemplateError

        try:
            extra = {} if tools is None else {"tools": tools}
            rendered: str = template.render(
                messages=messages, add_generation_prompt=True, **extra, **self.special_tokens
            )
        except TemplateError as error:
            raise ModelError(f"the chat template failed: {error}") from error
        return rendered
