"""Measurement helpers shared by every benchmark: latency, peak memory, machine facts, progress."""
from __future__ import annotations

import os
import platform
import re
import statistics
import time
from typing import Callable

import torch

# A progress reporter: start(description, total) returns advance(); the CLI backs it with rich.
Progress = Callable[[str, int], Callable[[], None]]


def no_progress(_description: str, _total: int) -> Callable[[], None]:
    return lambda: None


def _status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            match = re.search(rf"{field}:\s+(\d+) kB", f.read())
    except OSError:
        return None
    return int(match.group(1)) if match else None


def peak_rss_added_mib(fn: Callable[[], object]) -> float | None:
    """Peak resident memory added while ``fn`` runs (MiB), via Linux's resettable high-water mark.

    Returns None where /proc cannot report it (the result is then left out, not guessed).
    """
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return None
    before = _status_kib("VmRSS")
    fn()
    peak = _status_kib("VmHWM")
    if before is None or peak is None:
        return None
    return max(peak - before, 0) / 1024


def median_seconds(fn: Callable[[], object], repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def machine_facts() -> dict:
    from effigy.core import kernels

    return {
        "cpu": _cpu_name(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "vnni": kernels.cpu_has_vnni(),
        "python": platform.python_version(),
    }


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            match = re.search(r"model name\s*:\s*(.+)", f.read())
        return match.group(1).strip() if match else platform.processor()
    except OSError:
        return platform.processor()
