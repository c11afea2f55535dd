"""Wall-clock timing shared by the benchmarks."""
from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch


def median_seconds(fns: list[Callable[[], object]], repeats: int, device: str) -> list[float]:
    """Median wall time of each function over ``repeats`` calls after two warm-up calls; the
    functions are called in turn within each repeat so that they share the machine's load."""
    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
    times: list[list[float]] = [[] for _ in fns]
    for i in range(repeats + 2):
        for fn, record in zip(fns, times):
            sync()
            start = time.perf_counter()
            fn()
            sync()
            if i >= 2:
                record.append(time.perf_counter() - start)
    return [statistics.median(record) for record in times]
