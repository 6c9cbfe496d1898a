"""Training threads: one XGBoost / random-forest fit with 1 vs 2 threads, on an idle machine and beside a busy process.

Why: `make_estimator`'s threads (`MLSA_TRAIN_THREADS`) were 2 by default, one per core. With a second process
busy on one of the two cores (another training, the app, the scheduler), XGBoost's OpenMP threads wait on each
other at every tree level and spin; the default must be the count that is fastest when the machine is shared.
Fits the price models' default parameters on a real training window (AAPL, 1000 trading days), `--repeats` times
each, alternating the settings so a change in background load hits both; prints the median seconds and the
ratio 2 threads / 1 thread (the reference is the 1-thread fit of the same run).

    .venv/bin/python bench/threads_bench.py [--repeats 5] [--busy 1] [--models xgb rf]
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("MLSA_OFFLINE", "1")


def _spin(stop) -> None:
    """A busy core: what another training or the app's work looks like to the scheduler."""
    while not stop.is_set():
        sum(i * i for i in range(10_000))


def _rows():
    import tempfile

    os.environ.setdefault("MLSA_DB_PATH", str(Path(tempfile.mkdtemp(prefix="mlsa-threads-")) / "app.db"))
    from core.features import FEATURE_COLUMNS, TARGET, check_feature_frame
    from core.training import training_frame

    rows = training_frame("AAPL", None, 1000)
    return check_feature_frame(rows, FEATURE_COLUMNS), rows[TARGET].to_numpy()


def _fit_seconds(model_type: str, threads: int, X, y) -> float:
    from core.training import make_estimator

    started = time.perf_counter()
    make_estimator(model_type, n_jobs=threads).fit(X, y)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--busy", type=int, default=1, help="busy processes beside the fit (0 = idle machine)")
    parser.add_argument("--models", nargs="+", default=["xgb", "rf"])
    args = parser.parse_args()
    X, y = _rows()
    print(f"{len(X)} training rows x {X.shape[1]} features; {os.cpu_count()} cores; load before: "
          f"{os.getloadavg()[0]:.2f}")
    for busy in sorted({0, args.busy}):
        stop = mp.Event()
        spinners = [mp.Process(target=_spin, args=(stop,), daemon=True) for _ in range(busy)]
        for p in spinners:
            p.start()
        try:
            for model_type in args.models:
                _fit_seconds(model_type, 1, X, y)  # warm-up: imports, first allocation
                times: dict[int, list[float]] = {1: [], 2: []}
                for _ in range(args.repeats):
                    for threads in (1, 2):
                        times[threads].append(_fit_seconds(model_type, threads, X, y))
                one, two = statistics.median(times[1]), statistics.median(times[2])
                print(f"{model_type:<4} busy processes {busy}: 1 thread {one:.3f} s, 2 threads {two:.3f} s "
                      f"(median of {args.repeats}); 2 threads / 1 thread = {two / one:.2f}x")
        finally:
            stop.set()
            for p in spinners:
                p.join(timeout=5)


if __name__ == "__main__":
    main()
