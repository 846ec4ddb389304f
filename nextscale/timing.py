"""Timing that compares fairly: functions measured in interleaved rounds (A, B, C, A, B, C, …), each warmed up first,
so that a slow drift of the machine (another process, the clock, the caches) hits every contender alike. Used by the
benchmarks, the ablation's cost table and the speed–quality frontier; no torch needed (pass `synchronize` for a GPU).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable


def interleaved_times(
    named: dict[str, Callable[[], object]],
    repeats: int,
    *,
    synchronize: Callable[[], None] | None = None,
    on_round: Callable[[int, dict[str, list[float]]], None] | None = None,
) -> dict[str, list[float]]:
    """Seconds of every call of every function: one warm-up call each, then `repeats` rounds visiting them in turn.
    `synchronize` (e.g. torch.cuda.synchronize) runs before and after each timed call; `on_round(round, times)` after
    each round (progress)."""
    sync = synchronize or (lambda: None)
    for fn in named.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in named}
    for round_index in range(repeats):
        for name, fn in named.items():
            sync()
            start = time.perf_counter()
            fn()
            sync()
            times[name].append(time.perf_counter() - start)
        if on_round is not None:
            on_round(round_index, times)
    return times


def time_interleaved(samplers: dict, batch: int, repeats: int, latency_images: int = 3) -> dict[str, dict]:
    """Latency at batch 1 (ms per image, mean over `latency_images` calls) and throughput at `batch` (images/s) of
    every sampler, measured in `repeats` rounds that visit the samplers in turn, after one warm-up call each at batch
    1 and at min(batch, 10); the best round is kept. A sampler is `f(batch_size) -> None`. "_order" lists the
    samplers in the order they were timed."""
    for sample in samplers.values():
        sample(1)
        sample(min(batch, 10))
    best: dict[str, dict] = {name: {"latency_ms_batch1": math.inf, "images_per_s_batch100": 0.0} for name in samplers}
    order = []
    for _ in range(repeats):
        for name, sample in samplers.items():
            order.append(name)
            start = time.perf_counter()
            for _ in range(latency_images):
                sample(1)
            latency = (time.perf_counter() - start) / latency_images * 1000
            start = time.perf_counter()
            sample(batch)
            throughput = batch / (time.perf_counter() - start)
            best[name]["latency_ms_batch1"] = min(best[name]["latency_ms_batch1"], latency)
            best[name]["images_per_s_batch100"] = max(best[name]["images_per_s_batch100"], throughput)
    for name in best:
        best[name]["rounds"] = repeats
    best["_order"] = order  # type: ignore[assignment]
    return best
