"""Memory accounting: budgets from a resources probe, measured and expected footprints."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmnode.agents.models.store import FileEntry, Manifest
from llmnode.nodes.mesh.resources import probe
from llmnode.nodes.placement.memory import (
    WEIGHT_SUFFIXES,
    expected_footprint_mb,
    gpu_budgets_mb,
    kv_cache_bytes,
    measured_footprint_mb,
    memory_for_models_mb,
)
from llmnode.schemas.state import GpuInfo, Resources

SMOLLM_CONFIG = {  # the config.json of smollm2-135m-instruct, as exported
    "model_type": "llama",
    "num_hidden_layers": 30,
    "num_attention_heads": 9,
    "num_key_value_heads": 3,
    "head_dim": 64,
    "hidden_size": 576,
    "max_position_embeddings": 8192,
}


def gpu_node(free: list[int]) -> Resources:
    gpus = [
        GpuInfo(index=i, name="H200", memory_total_mb=143_000, memory_free_mb=f)
        for i, f in enumerate(free)
    ]
    return Resources(cpu_cores=16, ram_total_mb=128_000, ram_free_mb=100_000, gpus=gpus)


def test_a_gpu_node_offers_its_model_device_less_the_reserve_plus_its_loaded_models() -> None:
    resources = gpu_node([20_000, 90_000])
    assert gpu_budgets_mb(resources) == [18_976, 88_976]
    assert memory_for_models_mb(resources) == 18_976  # device 0: where ORT loads models
    assert memory_for_models_mb(resources, loaded_mb=3_000) == 21_976
    assert memory_for_models_mb(resources, reserve_mb=0) == 20_000


def test_a_cpu_node_offers_ram_available_less_a_reserve_never_below_zero() -> None:
    small = Resources(cpu_cores=2, ram_total_mb=4_000, ram_free_mb=1_500)
    assert memory_for_models_mb(small) == 476  # 1 GiB reserve on small machines
    big = Resources(cpu_cores=64, ram_total_mb=512_000, ram_free_mb=400_000)
    assert memory_for_models_mb(big) == 400_000 - 51_200  # 10 % of RAM on big ones
    starved = Resources(cpu_cores=2, ram_total_mb=4_000, ram_free_mb=200)
    assert memory_for_models_mb(starved) == 0


def test_this_machines_probe_gives_a_budget_within_its_memory() -> None:
    resources = probe()
    budget = memory_for_models_mb(resources)
    ceiling = resources.gpus[0].memory_free_mb if resources.gpus else resources.ram_free_mb
    assert 0 <= budget <= ceiling


def test_kv_cache_of_smollm2_for_eight_slots_at_full_context() -> None:
    per_token = 2 * 30 * 3 * 64 * 4  # keys and values, 30 layers, 3 KV heads of 64, fp32
    assert (
        kv_cache_bytes(layers=30, kv_heads=3, head_dim=64, dtype_bytes=4, slots=8, context=8192)
        == per_token * 8 * 8192
    )
    assert measured_footprint_mb(539_285_833, 0) == 515  # 514.3 MiB rounds up


def test_expected_footprint_counts_weight_files_and_the_kv_cache() -> None:
    manifest = Manifest(
        name="smollm2",
        source="test",
        task="text-generation",
        precision="fp32",
        files=[
            FileEntry(path="model.onnx", sha256="0" * 64, size=539_285_833),
            FileEntry(path="tokenizer.json", sha256="1" * 64, size=3_523_711),
        ],
    )
    weights_only = expected_footprint_mb(manifest, SMOLLM_CONFIG, slots=1, context=0)
    assert weights_only == 515  # the tokenizer is not weights
    full = expected_footprint_mb(manifest, SMOLLM_CONFIG, slots=8)
    assert full == -(-(539_285_833 + 46_080 * 8 * 8192) // (1 << 20))
    assert expected_footprint_mb(manifest, SMOLLM_CONFIG, slots=8, context=1_000_000) == full


def test_an_encoder_keeps_no_kv_cache() -> None:
    manifest = Manifest(
        name="minilm",
        source="test",
        task="feature-extraction",
        precision="fp32",
        files=[FileEntry(path="model.onnx", sha256="0" * 64, size=90_362_391)],
    )
    assert expected_footprint_mb(manifest, {"num_hidden_layers": 6}) == 87


@pytest.mark.models
def test_expected_footprint_of_the_stored_smollm2() -> None:
    from llmnode.agents.models.store import ModelStore

    store = ModelStore()
    if not store.exists("smollm2-135m-instruct"):
        pytest.skip("smollm2-135m-instruct is not in the store")
    manifest = store.get("smollm2-135m-instruct")
    config = json.loads((Path(store.path(manifest.name)) / "config.json").read_text())
    weights = sum(entry.size for entry in manifest.files if entry.path.endswith(WEIGHT_SUFFIXES))
    # The weights of whichever graph the store holds (fp32 or fused: about 515 MiB; int8, the
    # default: about 259 MiB), nothing else.
    assert expected_footprint_mb(manifest, config, slots=1, context=0) == measured_footprint_mb(
        weights, 0
    )
    low, high = (240, 280) if manifest.precision == "int8" else (500, 530)
    assert low <= expected_footprint_mb(manifest, config, slots=1, context=0) <= high
