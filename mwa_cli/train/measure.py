"""Facts about the machine and the process for timing.json and progress: device name, peak memory, process age."""

from __future__ import annotations

import os
import platform

import torch


def peak_mem_gib(device: torch.device) -> float:
    """Peak memory of this run so far: the CUDA allocator's peak, or this process's peak RSS on the CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    try:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux
    except Exception:  # noqa: BLE001
        return 0.0


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU and its thread count."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} CPU ({os.cpu_count()} threads)"


def process_age_s() -> float:
    """Seconds since this process started (Linux /proc; 0 elsewhere): the CLI counts the budget from there."""
    try:
        ticks = os.sysconf("SC_CLK_TCK")
        with open("/proc/self/stat", encoding="ascii") as f:
            start = int(f.read().rsplit(")", 1)[1].split()[19]) / ticks
        with open("/proc/uptime", encoding="ascii") as f:
            uptime = float(f.read().split()[0])
        return max(0.0, uptime - start)
    except (OSError, ValueError, IndexError):
        return 0.0

