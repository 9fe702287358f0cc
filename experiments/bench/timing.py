"""How the benchmark times a call, and what it records about the machine."""

from __future__ import annotations

import os
import platform
import statistics
import time
from pathlib import Path

import jax
import optax


def timeit(fn, *, budget: float, min_reps: int = 3, warmup: int = 2) -> float:
    """Median seconds per call of ``fn()`` (which must wait for its result)."""
    for _ in range(warmup):
        fn()
    times = []
    start = time.perf_counter()
    while len(times) < min_reps or (time.perf_counter() - start < budget and len(times) < 10_000):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def timeit_interleaved(fns: dict, *, budget: float, min_rounds: int = 5, warmup: int = 2) -> dict[str, float]:
    """Median seconds per call of each ``fns[name]()``, timed in rounds: every function once per round.

    On a shared machine the load drifts; interleaving makes every method see
    the same drift, so their ratios are stable even when absolute times move.
    """
    for _ in range(warmup):
        for f in fns.values():
            f()
    times: dict[str, list[float]] = {k: [] for k in fns}
    start = time.perf_counter()
    rounds = 0
    while rounds < min_rounds or (time.perf_counter() - start < budget and rounds < 10_000):
        for k, f in fns.items():
            t0 = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t0)
        rounds += 1
    return {k: statistics.median(v) for k, v in times.items()}


def peak_bytes(jitted, *args, **static) -> int:
    m = jitted.lower(*args, **static).compile().memory_analysis()
    return int(m.temp_size_in_bytes + m.output_size_in_bytes)


def machine() -> dict[str, str]:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    dev = jax.devices()[0]
    return {
        "cpu": cpu, "cores": str(os.cpu_count()), "device": f"{dev.platform}:{getattr(dev, 'device_kind', '')}",
        "python": platform.python_version(), "jax_version": jax.__version__, "optax_version": optax.__version__,
        "torch_version": torch_version(),
    }


def torch_version() -> str:
    try:
        import torch

        return torch.__version__
    except ImportError:
        return "absent"
