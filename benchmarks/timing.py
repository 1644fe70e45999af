"""Timing helper shared by the benchmarks (run as `python benchmarks/<name>.py`, so this
folder is on sys.path)."""

import time


def best_of(repeats: int, *fns):
    """Run each fn `repeats` times, alternating; return each one's shortest time (s)."""
    best = [float("inf")] * len(fns)
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            start = time.perf_counter()
            fn()
            best[i] = min(best[i], time.perf_counter() - start)
    return best
