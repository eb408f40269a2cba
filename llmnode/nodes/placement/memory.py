"""Memory accounting for placement: budgets for models and model footprints (no I/O).

Three figures, all in MiB (the unit of :class:`llmnode.schemas.state.Resources`):

- memory available for models on a node, from a resources probe
  (:func:`llmnode.nodes.mesh.resources.probe`): on a GPU node the free memory of the device models
  load on (ONNX Runtime's CUDA provider uses device 0), else RAM available, less a reserve, plus
  what this node's loaded models already use (so the budget does not shrink as they load);
- a loaded model's measured footprint: its weights plus the KV cache for its slots × context;
- a model's expected footprint before loading: the file sizes of its manifest plus the same KV
  estimate, from its ``config.json``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from llmnode.schemas.state import Resources

MIB = 1 << 20
GPU_RESERVE_MB = 1024  # CUDA context, ONNX Runtime arena slack, other processes' spikes
RAM_RESERVE_MB = 1024  # the node process, the OS, page cache for the store
RAM_RESERVE_FRACTION = 0.10  # and at least this much of RAM on big machines
MODEL_DEVICE = 0  # the CUDA device ONNX Runtime loads models on (its default device_id)
WEIGHT_SUFFIXES = (".onnx", ".onnx_data", ".data", ".bin")


class StoredFile(Protocol):
    @property
    def path(self) -> str: ...
    @property
    def size(self) -> int: ...


class ManifestLike(Protocol):
    """What footprints read of a store manifest (:class:`llmnode.agents.models.store.Manifest`
    satisfies it; nodes may not import agents)."""

    @property
    def task(self) -> str: ...
    @property
    def files(self) -> Sequence[StoredFile]: ...


def gpu_budgets_mb(resources: Resources, reserve_mb: int = GPU_RESERVE_MB) -> list[int]:
    """Free memory less the reserve, per GPU (index order), never below zero."""
    return [max(0, gpu.memory_free_mb - reserve_mb) for gpu in resources.gpus]


def ram_reserve_mb(resources: Resources) -> int:
    return max(RAM_RESERVE_MB, int(resources.ram_total_mb * RAM_RESERVE_FRACTION))


def memory_for_models_mb(
    resources: Resources, loaded_mb: int = 0, *, reserve_mb: int | None = None
) -> int:
    """What this node can give to models, its loaded models (``loaded_mb``) included."""
    gpus = sorted(resources.gpus, key=lambda gpu: gpu.index)
    if gpus:
        device = next((gpu for gpu in gpus if gpu.index == MODEL_DEVICE), gpus[0])
        reserve = GPU_RESERVE_MB if reserve_mb is None else reserve_mb
        free = device.memory_free_mb
    else:
        reserve = ram_reserve_mb(resources) if reserve_mb is None else reserve_mb
        free = resources.ram_free_mb
    return max(0, free + loaded_mb - reserve)


def kv_cache_bytes(
    *, layers: int, kv_heads: int, head_dim: int, dtype_bytes: int, slots: int, context: int
) -> int:
    """Keys and values of every layer for ``slots`` sequences of ``context`` tokens."""
    return 2 * layers * kv_heads * head_dim * dtype_bytes * max(1, slots) * max(0, context)


def measured_footprint_mb(weights_bytes: int, kv_bytes: int) -> int:
    """A loaded model's footprint: its weights plus its KV cache at full slots and context."""
    return -(-(weights_bytes + kv_bytes) // MIB)  # rounded up


def kv_shape(config: Mapping[str, Any]) -> tuple[int, int, int, int]:
    """(layers, kv heads, head dim, context) from a Hugging Face ``config.json``; zeros when
    the config has no decoder (an encoder keeps no KV cache)."""
    layers = int(config.get("num_hidden_layers") or config.get("n_layer") or 0)
    heads = int(config.get("num_attention_heads") or config.get("n_head") or 0)
    kv_heads = int(config.get("num_key_value_heads") or heads)
    hidden = int(config.get("hidden_size") or config.get("n_embd") or 0)
    head_dim = int(config.get("head_dim") or (hidden // heads if heads else 0))
    context = int(config.get("max_position_embeddings") or config.get("n_positions") or 2048)
    return layers, kv_heads, head_dim, context


def expected_footprint_mb(
    manifest: ManifestLike,
    config: Mapping[str, Any],
    *,
    slots: int = 8,
    context: int | None = None,
    dtype_bytes: int = 4,
) -> int:
    """Before loading: weight files of the manifest, plus the KV cache a generation model
    keeps for ``slots`` sequences of ``context`` tokens (default: the model's maximum)."""
    weights = sum(entry.size for entry in manifest.files if entry.path.endswith(WEIGHT_SUFFIXES))
    kv = 0
    if manifest.task == "text-generation":
        layers, kv_heads, head_dim, model_context = kv_shape(config)
        kv = kv_cache_bytes(
            layers=layers,
            kv_heads=kv_heads,
            head_dim=head_dim,
            dtype_bytes=dtype_bytes,
            slots=slots,
            context=model_context if context is None else min(context, model_context),
        )
    return measured_footprint_mb(weights, kv)
