"""The KV cache of a batch of sequences and one forward step over it (I/O: ONNX Runtime runs).

Two layouts, one interface (:class:`KVBatch`), chosen by the graph:

- :class:`SharedBufferBatch` for graphs with ``GroupQueryAttention`` (ONNX Runtime GenAI's model
  builder: fused attention with rotary inside, ``past_present_share_buffer``). One buffer per layer
  of shape [slots, kv heads, capacity, head size], allocated once (zeroed pages cost no memory
  until touched) and bound as both past and present through IO binding, so the graph writes each
  new key/value in place. Each row is left-aligned in its slot; ``GroupQueryAttention`` reads each
  row's own length from the attention mask, so rows of different lengths batch without padding.
  A new sequence is prefilled straight into its slot; nobody else's cache is copied. With a
  :class:`~llmnode.agents.models.prefix_cache.PrefixCache`, the cached blocks that begin its
  prompt are written into the slot first and only the rest is prefilled. When a row
  finishes, the rows after it move up one slot (only those are copied), so the batch stays a
  contiguous prefix. The capacity doubles when a row needs more (amortised, up to the context).
- :class:`PaddedBatch` for optimum's exports (``past_key_values`` in, ``present`` out): the cache
  is concatenated at each step and left-padded when a sequence joins, with explicit position ids.

Both return the logits of each row's last position only.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from llmnode.agents.models.prefix_cache import PrefixCache

NUMPY_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16}
_FIRST_CAPACITY = 256


class KVBatch(Protocol):
    @property
    def rows(self) -> int:
        """How many sequences the batch holds."""

    def prefill(self, ids: list[int], key: bytes | None = None) -> np.ndarray:
        """Run a new sequence's prompt, append it as the last row; its last logits [vocab].
        ``key`` names its prefix for a prefix cache (see ``prefix_key``)."""

    def step(self, tokens: list[int]) -> np.ndarray:
        """Feed one token per row; the next logits [rows, vocab]."""

    def keep(self, indices: list[int]) -> None:
        """Keep only these rows (ascending), in this order."""


def _past_names(session: Any) -> tuple[list[str], list[str], Any]:
    inputs = [item for item in session.get_inputs() if item.name.startswith("past_key_values.")]
    outputs = [o.name for o in session.get_outputs() if o.name.startswith("present.")]
    return [item.name for item in inputs], outputs, inputs[0]


class SharedBufferBatch:
    """Rows of a GroupQueryAttention graph in one preallocated cache, written in place."""

    def __init__(
        self, session: Any, slots: int, max_positions: int, prefix: PrefixCache | None = None
    ) -> None:
        import onnxruntime  # noqa: PLC0415 - only the serving path needs it

        self._ort = onnxruntime
        self._session = session
        self._past, self._present, first = _past_names(session)
        self._heads, self._head_size = int(first.shape[1]), int(first.shape[3])
        self._type = NUMPY_TYPES.get(first.type, np.float32)
        self._slots = slots
        self._max_positions = max_positions
        self._capacity = 0
        self._buffers: list[np.ndarray] = []
        self._lengths: list[int] = []
        self._binding: Any = None  # the decode binding for the current rows and buffers
        self._bound_rows = -1
        self._logits: np.ndarray = np.zeros(0, dtype=np.float32)
        self._vocabulary = int(session.get_outputs()[0].shape[-1])
        self._prefix = prefix

    @property
    def rows(self) -> int:
        return len(self._lengths)

    def _reserve(self, length: int) -> None:
        """Make every slot hold ``length`` positions (doubling; rows keep their contents)."""
        if length <= self._capacity:
            return
        capacity = min(max(length, 2 * self._capacity, _FIRST_CAPACITY), self._max_positions)
        capacity = max(capacity, length)
        shape = (self._slots, self._heads, capacity, self._head_size)
        buffers = [np.zeros(shape, dtype=self._type) for _ in self._past]
        for old, new in zip(self._buffers, buffers, strict=False):
            new[: self.rows, :, : self._capacity] = old[: self.rows]
        self._buffers, self._capacity, self._binding = buffers, capacity, None

    def _bind_cache(self, binding: Any, start: int, stop: int) -> list[Any]:
        values = []
        for past, present, buffer in zip(self._past, self._present, self._buffers, strict=True):
            value = self._ort.OrtValue.ortvalue_from_numpy(buffer[start:stop])
            binding.bind_ortvalue_input(past, value)
            binding.bind_ortvalue_output(present, value)
            values.append(value)
        return values

    def prefill(self, ids: list[int], key: bytes | None = None) -> np.ndarray:
        row = self.rows
        if row >= self._slots:
            raise RuntimeError(f"all {self._slots} cache slots are taken")
        self._reserve(len(ids) + 1)
        cached = self._restore(row, ids)
        binding = self._session.io_binding()
        input_ids = np.asarray([ids[cached:]], dtype=np.int64)
        mask = np.ones((1, len(ids)), dtype=np.int64)  # the prefix, if cached, is the past
        binding.bind_cpu_input("input_ids", input_ids)
        binding.bind_cpu_input("attention_mask", mask)
        binding.bind_output("logits")
        keep_alive = self._bind_cache(binding, row, row + 1)
        self._session.run_with_iobinding(binding)
        del keep_alive
        self._lengths.append(len(ids))
        if self._prefix is not None:
            buffers = self._buffers
            self._prefix.store(
                ids,
                lambda start, stop: [buffer[row, :, start:stop].copy() for buffer in buffers],
                key,
            )
        logits: np.ndarray = binding.get_outputs()[0].numpy()[0, -1]
        return logits

    def _restore(self, row: int, ids: list[int]) -> int:
        """Write the cached blocks that begin ``ids`` into ``row``; how many tokens they cover."""
        if self._prefix is None:
            return 0
        size = self._prefix.block
        found = self._prefix.lookup(ids)
        for number, block in enumerate(found):
            for buffer, array in zip(self._buffers, block, strict=True):
                buffer[row, :, number * size : (number + 1) * size] = array
        return len(found) * size

    def step(self, tokens: list[int]) -> np.ndarray:
        rows = self.rows
        self._reserve(max(self._lengths) + 1)
        if self._binding is None or self._bound_rows != rows:
            self._binding = self._session.io_binding()
            self._logits = np.zeros((rows, 1, self._vocabulary), dtype=np.float32)
            logits_value = self._ort.OrtValue.ortvalue_from_numpy(self._logits)
            self._binding.bind_ortvalue_output("logits", logits_value)
            self._bound_values = [logits_value, *self._bind_cache(self._binding, 0, rows)]
            self._bound_rows = rows
        lengths = np.asarray(self._lengths, dtype=np.int64) + 1
        # GroupQueryAttention reads each row's length from the mask's row sum, the total length
        # from its width; the ones need not sit where the keys are.
        self._mask = (np.arange(int(lengths.max()))[None, :] < lengths[:, None]).astype(np.int64)
        self._input_ids = np.asarray(tokens, dtype=np.int64)[:, None]
        self._binding.bind_cpu_input("input_ids", self._input_ids)
        self._binding.bind_cpu_input("attention_mask", self._mask)
        self._session.run_with_iobinding(self._binding)
        self._lengths = [length + 1 for length in self._lengths]
        return self._logits[:, 0, :]

    def keep(self, indices: list[int]) -> None:
        for target, source in enumerate(indices):
            if target != source:
                length = self._lengths[source]
                for buffer in self._buffers:
                    buffer[target, :, :length] = buffer[source, :, :length]
        self._lengths = [self._lengths[index] for index in indices]
        self._binding = None


class PaddedBatch:
    """Rows of an optimum export: the cache concatenated per step, left-padded to one length."""

    def __init__(self, session: Any) -> None:
        self._session = session
        self._past, _, first = _past_names(session)
        self._heads, self._head_size = int(first.shape[1]), int(first.shape[3])
        self._type = NUMPY_TYPES.get(first.type, np.float32)
        self._has_positions = any(item.name == "position_ids" for item in session.get_inputs())
        self._cache: list[np.ndarray] = []
        self._mask = np.zeros((0, 0), dtype=np.int64)
        self._positions: list[int] = []

    @property
    def rows(self) -> int:
        return len(self._positions)

    def _forward(
        self, input_ids: np.ndarray, mask: np.ndarray, positions: np.ndarray, past: list[np.ndarray]
    ) -> tuple[np.ndarray, list[np.ndarray]]:
        feed: dict[str, np.ndarray] = {"input_ids": input_ids, "attention_mask": mask}
        if self._has_positions:
            feed["position_ids"] = positions
        feed.update(zip(self._past, past, strict=True))
        outputs: list[np.ndarray] = self._session.run(None, feed)
        return outputs[0][:, -1, :], list(outputs[1:])

    def prefill(self, ids: list[int], key: bytes | None = None) -> np.ndarray:
        count = len(ids)
        empty = np.zeros((1, self._heads, 0, self._head_size), dtype=self._type)
        logits, present = self._forward(
            np.asarray([ids], dtype=np.int64),
            np.ones((1, count), dtype=np.int64),
            np.arange(count, dtype=np.int64)[None, :],
            [empty for _ in self._past],
        )
        self._merge(present)
        self._positions.append(count)
        last: np.ndarray = logits[0]
        return last

    def _merge(self, present: list[np.ndarray]) -> None:
        new_length = present[0].shape[2]
        if not self.rows:
            self._cache, self._mask = present, np.ones((1, new_length), dtype=np.int64)
            return
        batch_length = self._mask.shape[1]
        target = max(batch_length, new_length)

        def pad(array: np.ndarray, by: int) -> np.ndarray:
            if by == 0:
                return array
            widths = [(0, 0)] * array.ndim
            widths[2 if array.ndim == 4 else 1] = (by, 0)
            return np.pad(array, widths)

        self._cache = [
            np.concatenate([pad(old, target - batch_length), pad(new, target - new_length)])
            for old, new in zip(self._cache, present, strict=True)
        ]
        new_mask = np.ones((1, new_length), dtype=np.int64)
        self._mask = np.concatenate(
            [pad(self._mask, target - batch_length), pad(new_mask, target - new_length)]
        )

    def step(self, tokens: list[int]) -> np.ndarray:
        mask = np.concatenate([self._mask, np.ones((self.rows, 1), dtype=np.int64)], axis=1)
        logits, present = self._forward(
            np.asarray(tokens, dtype=np.int64)[:, None],
            mask,
            np.asarray(self._positions, dtype=np.int64)[:, None],
            self._cache,
        )
        self._cache, self._mask = present, mask
        self._positions = [position + 1 for position in self._positions]
        return logits

    def keep(self, indices: list[int]) -> None:
        self._positions = [self._positions[index] for index in indices]
        if not indices:
            self._cache, self._mask = [], np.zeros((0, 0), dtype=np.int64)
            return
        self._cache = [array[indices] for array in self._cache]
        self._mask = self._mask[indices]
        start = int(np.min(np.argmax(self._mask, axis=1)))  # padding no remaining row needs
        if start:
            self._cache = [array[:, :, start:, :] for array in self._cache]
            self._mask = self._mask[:, start:]


def open_batch(
    session: Any,
    *,
    shared_buffer: bool,
    slots: int,
    max_positions: int,
    prefix: PrefixCache | None = None,
) -> KVBatch:
    """The cache layout the graph needs (``shared_buffer``: a GroupQueryAttention graph, the one
    layout that reuses cached prefixes: its graph prefills on top of a past)."""
    if shared_buffer:
        return SharedBufferBatch(session, slots, max_positions, prefix)
    return PaddedBatch(session)
