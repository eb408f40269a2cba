"""Probes this machine's capacity: GPUs through NVML, else CPU cores and RAM (reads /proc, NVML).

NVML comes from ``nvidia-ml-py``; with no GPU or no driver the record is CPU-only. A capacity
declared in the config replaces the probe (for testing the scheduler on machines without GPUs).
"""

from __future__ import annotations

import os
from typing import Any

from llmnode.log import get_logger
from llmnode.schemas.config import DeclaredCapacity
from llmnode.schemas.state import GpuInfo, Resources

log = get_logger(__name__)
_nvml_failed = False


def _memory_mb() -> tuple[int, int]:
    total = free = 0
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                key, _, rest = line.partition(":")
                value_kb = int(rest.split()[0])
                if key == "MemTotal":
                    total = value_kb // 1024
                elif key == "MemAvailable":
                    free = value_kb // 1024
    except (OSError, ValueError, IndexError):
        pass
    return total, free


def _cpu_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def probe_gpus() -> list[GpuInfo]:
    """GPUs seen by NVML; empty when there is no GPU, no driver or no nvidia-ml-py."""
    global _nvml_failed
    if _nvml_failed:
        return []
    try:
        import pynvml  # noqa: PLC0415 - optional native library, loaded on first probe
    except ImportError:
        _nvml_failed = True
        return []
    nvml: Any = pynvml
    try:
        nvml.nvmlInit()
    except Exception as error:  # NVMLError: no driver or no device
        _nvml_failed = True
        log.info("nvml_unavailable", reason=str(error))
        return []
    gpus: list[GpuInfo] = []
    try:
        for index in range(nvml.nvmlDeviceGetCount()):
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            memory = nvml.nvmlDeviceGetMemoryInfo(handle)
            name = nvml.nvmlDeviceGetName(handle)
            utilization = nvml.nvmlDeviceGetUtilizationRates(handle)
            gpus.append(
                GpuInfo(
                    index=index,
                    name=name.decode() if isinstance(name, bytes) else str(name),
                    memory_total_mb=int(memory.total) // (1 << 20),
                    memory_free_mb=int(memory.free) // (1 << 20),
                    utilization_pct=int(utilization.gpu),
                )
            )
    except Exception as error:  # NVMLError mid-probe: report what we have
        log.warning("nvml_probe_failed", reason=str(error))
    finally:
        nvml.nvmlShutdown()
    return gpus


def probe(declared: DeclaredCapacity | None = None) -> Resources:
    """This machine's resources now, or the declared capacity when one is configured."""
    total, free = _memory_mb()
    if declared is not None:
        gpus = [
            GpuInfo(
                index=i,
                name="declared",
                memory_total_mb=declared.gpu_memory_mb,
                memory_free_mb=declared.gpu_memory_mb,
            )
            for i in range(declared.gpus)
        ]
        return Resources(
            cpu_cores=declared.cpu_cores or _cpu_cores(),
            ram_total_mb=declared.ram_mb or total,
            ram_free_mb=declared.ram_mb or free,
            gpus=gpus,
            source="declared",
        )
    gpus = probe_gpus()
    return Resources(
        cpu_cores=_cpu_cores(),
        ram_total_mb=total,
        ram_free_mb=free,
        gpus=gpus,
        source="nvml" if gpus else "cpu",
    )
