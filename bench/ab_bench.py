"""A/B bench: the vectorised peeking simulation vs a per-experiment loop, and the serving hook's cost.

Run: MLSA_OFFLINE=1 MLSA_DB_PATH=<a demo db> MLSA_MODELS_DIR=<its models> .venv/bin/python bench/ab_bench.py
Prints figures and ratios measured in this run; no thresholds (speed is reported, not asserted).
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.predict import active_route  # noqa: E402
from core.ab_stats import always_valid_pvalues, fixed_horizon_pvalues, looks_two_sample, route_key  # noqa: E402

EXPERIMENTS, DAYS, MIN_SAMPLES = 500, 250, 30


def simulate_vectorised(to_b: np.ndarray, loss: np.ndarray) -> tuple[float, float]:
    sums = lambda m: (np.cumsum(m, 1), np.cumsum(loss * m, 1), np.cumsum(loss**2 * m, 1))  # noqa: E731
    looks = looks_two_sample(*sums(~to_b), *sums(to_b))
    eligible = np.minimum(looks.n_control, looks.n_challenger) >= MIN_SAMPLES
    sequential = (always_valid_pvalues(looks, MIN_SAMPLES)[:, -1] <= 0.05).mean()
    naive = ((fixed_horizon_pvalues(looks) <= 0.05) & eligible).any(axis=1).mean()
    return float(sequential), float(naive)


def simulate_reference(to_b: np.ndarray, loss: np.ndarray, effect_sd: float = 0.5) -> tuple[float, float]:
    """The obvious implementation: for each experiment and each daily look, slice, scipy Welch, mSPRT."""
    seq_hits = naive_hits = 0
    for e in range(to_b.shape[0]):
        best_p, naive_hit = 1.0, False
        for day in range(to_b.shape[1]):
            a, b = loss[e, : day + 1][~to_b[e, : day + 1]], loss[e, : day + 1][to_b[e, : day + 1]]
            if min(len(a), len(b)) < MIN_SAMPLES:
                continue
            naive_hit |= stats.ttest_ind(b, a, equal_var=False).pvalue <= 0.05
            v = a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b)
            tau2 = effect_sd**2 * (a.var(ddof=1) + b.var(ddof=1)) / 2
            d = b.mean() - a.mean()
            best_p = min(best_p, float(np.exp(-(0.5 * np.log(v / (v + tau2)) + d**2 * tau2 / (2 * v * (v + tau2))))))
        seq_hits += best_p <= 0.05
        naive_hits += naive_hit
    return seq_hits / to_b.shape[0], naive_hits / to_b.shape[0]


def main() -> None:
    rng = np.random.default_rng(0)
    to_b = rng.random((EXPERIMENTS, DAYS)) < 0.5
    loss = np.abs(rng.standard_t(4, size=(EXPERIMENTS, DAYS)))
    started = time.perf_counter()
    sequential, naive = simulate_vectorised(to_b, loss)
    fast = time.perf_counter() - started
    subset = 20
    started = time.perf_counter()
    ref_seq, ref_naive = simulate_reference(to_b[:subset], loss[:subset])
    slow = (time.perf_counter() - started) * EXPERIMENTS / subset
    sub_seq, sub_naive = simulate_vectorised(to_b[:subset], loss[:subset])
    print(f"A/A simulation, {EXPERIMENTS} experiments x {DAYS} daily looks:")
    print(f"  false winners: always-valid rule {sequential:.1%}, daily Welch t-test {naive:.1%} (nominal 5%)")
    print(f"  same {subset} experiments, reference loop vs vectorised: sequential {ref_seq:.2f} vs {sub_seq:.2f}, "
          f"naive {ref_naive:.2f} vs {sub_naive:.2f}")
    print(f"  vectorised {fast * 1000:.0f} ms; reference loop {slow:.1f} s (extrapolated from {subset}); ratio {slow / fast:.0f}x")

    keys = [f"AAPL:{i}" for i in range(100_000)]
    started = time.perf_counter()
    for key in keys:
        route_key(1, key, [0.5, 0.5])
    print(f"route_key: {(time.perf_counter() - started) / len(keys) * 1e6:.2f} us per request")

    from core.store import get_db

    db = get_db()
    running = db.execute("SELECT symbol FROM experiments WHERE status = 'running' LIMIT 1").fetchone()
    idle = db.execute("SELECT DISTINCT symbol FROM models WHERE symbol NOT IN "
                      "(SELECT symbol FROM experiments WHERE status = 'running') LIMIT 1").fetchone()
    for label, row in (("running experiment", running), ("no experiment", idle)):
        if row is None:
            print(f"active_route ({label}): no such ticker in {db.conn.execute('PRAGMA database_list').fetchone()[2]}")
            continue
        started = time.perf_counter()
        for key in keys[:5000]:
            active_route(db, row[0], key)
        print(f"active_route ({label}, {row[0]}): {(time.perf_counter() - started) / 5000 * 1e6:.1f} us per request")


if __name__ == "__main__":
    main()
