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


def rss_mib() -> dict[str, float | None]:
    """Current and peak resident memory of this process (MiB), from /proc; None where unavailable."""
    now, peak = _status_kib("VmRSS"), _status_kib("VmHWM")
    return {"rss_mib": None if now is None else now / 1024, "peak_rss_mib": None if peak is None else peak / 1024}


def reset_peak_rss() -> bool:
    """Reset this process's peak-RSS counter (Linux clear_refs 5), so that the next :func:`rss_mib` peak counts from
    now; False where that is not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


M_MMAP_THRESHOLD = -3  # glibc mallopt parameter


def return_freed_memory_to_os(mmap_threshold: int = 1 << 20) -> bool:
    """Make glibc hand freed tensor memory back to the OS from now on, so that building many large model
    copies in one benchmark process does not keep every freed copy resident.

    glibc raises its mmap threshold each time a large block is freed (up to 32 MB), after which
    DiT-XL-sized weight matrices come from the heap, whose freed pages stay mapped. Fixing the threshold
    keeps large blocks on mmap (freed at once); a trim releases what the heap has free. Process-wide, so
    benches call it, the library does not.

    Returns:
        False where this is not glibc (nothing changed).
    """
    from effigy.memory import glibc, trim_freed_memory

    libc = glibc()
    if libc is None:
        return False
    libc.mallopt(M_MMAP_THRESHOLD, mmap_threshold)
    return trim_freed_memory()


def run_in_fresh_process(fn: Callable, *args) -> object:
    """Run ``fn(*args)`` in a new interpreter and return its result: peak memory measured there is
    that work's alone, not the high-water mark this process reached earlier."""
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(fn, args)


def median_seconds(fn: Callable[[], object], repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def interleaved_medians(calls: dict[str, Callable[[], object]], repeats: int,
                        after_round: Callable[[], None] = lambda: None) -> tuple[dict[str, float], dict[str, object]]:
    """Median seconds of each call, timed interleaved (a warm-up of every call, then ``repeats`` rounds over
    all of them) so that every call sees the same machine state; and each call's warm-up result.

    Returns:
        (median seconds per name, warm-up output per name)
    """
    outputs = {name: call() for name, call in calls.items()}
    after_round()
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(repeats):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - start)
        after_round()
    return {name: statistics.median(t) for name, t in times.items()}, outputs


def machine_facts() -> dict:
    from effigy.core import kernels

    return {
        "cpu": _cpu_name(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "vnni": kernels.cpu_has_vnni(),
        "isa": kernels.cpu_isa_class(),  # which integer / bf16 path can win here (docs/kernels.md)
        "python": platform.python_version(),
    }


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            match = re.search(r"model name\s*:\s*(.+)", f.read())
        return match.group(1).strip() if match else platform.processor()
    except OSError:
        return platform.processor()
