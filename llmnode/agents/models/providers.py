"""ONNX Runtime sessions: provider selection (CUDA when it really loads, else CPU) and threads.

Does I/O (reads the model file, probes the CUDA driver). ORT silently falls back to CPU when the
CUDA provider cannot load, so the provider actually used is read back from the session.
"""

# Heavy libraries (onnxruntime, optimum, transformers, torch, tqdm) are imported inside the
# functions that need them, so `import llmnode` stays fast.
# ruff: noqa: PLC0415

from __future__ import annotations

import ctypes
import os
from pathlib import Path
from typing import Any

from llmnode.errors import ConfigError, ModelError
from llmnode.log import get_logger

log = get_logger(__name__)

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


def cuda_device_count() -> int:
    """How many CUDA devices the driver reports (0 without a driver); no torch needed."""
    try:
        library = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return 0
    count = ctypes.c_int(0)
    if library.cuInit(0) != 0 or library.cuDeviceGetCount(ctypes.byref(count)) != 0:
        return 0
    return count.value


def physical_cores() -> int:
    """Physical cores this process may run on (hyper-threads counted once)."""
    try:
        allowed = os.sched_getaffinity(0)
    except AttributeError:  # not Linux
        return max(1, (os.cpu_count() or 2) // 2)
    cores: set[tuple[str, str]] = set()
    for cpu in allowed:
        topology = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
        try:
            cores.add(
                (
                    (topology / "physical_package_id").read_text().strip(),
                    (topology / "core_id").read_text().strip(),
                )
            )
        except OSError:
            cores.add(("cpu", str(cpu)))
    return max(1, len(cores))


def thread_count(threads: int | None = None) -> int:
    if threads is not None:
        return max(1, threads)
    configured = os.environ.get("LLMNODE_ORT_THREADS")
    if configured:
        try:
            return max(1, int(configured))
        except ValueError as error:
            raise ConfigError(
                f"LLMNODE_ORT_THREADS must be an integer, not {configured!r}"
            ) from error
    return physical_cores()


# How ONNX Runtime's idle intra-op threads wait, by LLMNODE_ORT_SPIN (measured: BENCHMARKS.md).
SPIN_POLICIES: dict[str, dict[str, str]] = {
    # Spin between the ops of one run, sleep once it returns: the speed of spinning (int8 decode
    # 1.4x "off" on a quiet machine) without burning cores between requests.
    "run": {"session.force_spinning_stop": "1"},
    # Never spin: for machines running more busy processes than cores (many nodes on a laptop,
    # the test suite), where spinning threads take time from the others.
    "0": {"session.intra_op.allow_spinning": "0"},
    "1": {},  # ONNX Runtime's own default: spin for a while after each run too
}


def spin_policy() -> dict[str, str]:
    """The session config entries of the LLMNODE_ORT_SPIN policy (default ``run``)."""
    name = os.environ.get("LLMNODE_ORT_SPIN", "run").strip() or "run"
    if name not in SPIN_POLICIES:
        raise ConfigError(
            f"LLMNODE_ORT_SPIN must be one of {', '.join(SPIN_POLICIES)}, not {name!r}"
        )
    return SPIN_POLICIES[name]


def create_session(
    path: str | Path, *, prefer_gpu: bool = True, threads: int | None = None
) -> tuple[Any, str]:
    """An ``onnxruntime.InferenceSession`` for ``path`` and the provider it really uses."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = thread_count(threads)
    options.inter_op_num_threads = 1
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only; ORT's own warnings are not the user's business
    for key, value in spin_policy().items():
        options.add_session_config_entry(key, value)
    wanted = [CPU]
    if prefer_gpu and CUDA in onnxruntime.get_available_providers() and cuda_device_count() > 0:
        wanted = [CUDA, CPU]
    try:
        session = onnxruntime.InferenceSession(str(path), sess_options=options, providers=wanted)
    except Exception as error:  # ORT raises its own Fail/InvalidProtobuf/... types
        detail = str(error).strip().splitlines()[0][:300] if str(error).strip() else repr(error)
        raise ModelError(f"cannot load ONNX model {Path(path).name}: {detail}") from error
    used = session.get_providers()[0]
    if wanted[0] == CUDA and used != CUDA:
        log.warning("cuda_provider_fell_back", model=str(path), provider=used)
    log.info(
        "onnx_session_created",
        model=Path(path).parent.name,
        provider=used,
        threads=options.intra_op_num_threads,
    )
    return session, used
