"""Monitoring's model health: the regime and feature-decile tables vs a pandas groupby reference.

The Monitoring page recomputes the model health on every rerun (no cache: the prediction log grows
during the day). Prints, for `--days` scored days (default 250, a year) and the 3 top features:
  * `model_health.regime_errors` + `feature_decile_errors` (np.bincount per split, plus the seeded bootstrap
    (scipy, 1999 resamples) of the lowest group's skill gap in each of the 5 splits, which the reference does
    not do: most of the time is that bootstrap), median of `--runs`;
  * the reference: the same tables by `pandas.DataFrame.groupby(...).agg` per split, checked equal;
  * the ratio. Goal: the whole computation well under 100 ms, so the tab adds nothing noticeable.

    .venv/bin/python bench/health_bench.py [--days 250] [--runs 50]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core import model_health  # noqa: E402

FEATURES = ["volatility_20", "ret_mean_5", "rsi_14", "close_to_sma_10"]


def frames(days: int, seed: int = 7) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A reference window of 1,000 days and `days` scored days with prices around $100."""
    rng = np.random.default_rng(seed)
    reference = pd.DataFrame({f: rng.normal(size=1000) for f in FEATURES})
    reference["volatility_20"] = np.abs(reference["volatility_20"]) / 100
    last = 100 + rng.normal(size=days).cumsum()
    actual = last * np.exp(rng.normal(0, 0.015, days))
    scored = pd.DataFrame({"last_close": last, "actual_close": actual, "predicted_close": last * np.exp(rng.normal(0, 0.005, days)),
                           **{f: rng.normal(size=days) for f in FEATURES}})
    scored["volatility_20"] = np.abs(scored["volatility_20"]) / 100
    return scored, reference


def reference_tables(scored: pd.DataFrame, reference: pd.DataFrame, features: list[str]) -> list[pd.Series]:
    """Skill per group with pandas groupby (pd.cut on the same reference edges): what the bincount replaces."""
    errors = pd.DataFrame({"e": (scored["predicted_close"] - scored["actual_close"]).abs(),
                           "n": (scored["last_close"] - scored["actual_close"]).abs()})
    out = []
    splits = [pd.cut(scored["volatility_20"], [-np.inf, *model_health.tercile_edges(reference["volatility_20"]), np.inf], labels=False),
              np.sign(scored["actual_close"] - scored["last_close"])]
    splits += [pd.cut(scored[f], [-np.inf, *model_health.decile_edges(reference[f]), np.inf], labels=False) for f in features]
    for split in splits:
        sums = errors.groupby(np.asarray(split)).agg(["sum"])
        out.append(1 - sums[("e", "sum")] / sums[("n", "sum")])
    return out


def median_ms(call, runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        call()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=250)
    parser.add_argument("--runs", type=int, default=50)
    args = parser.parse_args()
    scored, reference = frames(args.days)
    top = FEATURES[1:]

    def ours():
        return model_health.regime_errors(scored, reference), model_health.feature_decile_errors(scored, reference, top)

    regimes, deciles = ours()
    expected = reference_tables(scored, reference, top)
    volatility = regimes[regimes["kind"] == "volatility"]
    np.testing.assert_allclose(volatility.loc[volatility["days"] > 0, "skill"], expected[0].to_numpy())
    direction = regimes[regimes["kind"] == "direction"].set_index("group")["skill"]
    np.testing.assert_allclose(direction[["down day", "up day"]], expected[1].loc[[-1.0, 1.0]].to_numpy())
    for i, feature in enumerate(top):
        part = deciles[(deciles["feature"] == feature) & (deciles["days"] > 0)]
        np.testing.assert_allclose(part["skill"], expected[2 + i].to_numpy())
    fast = median_ms(ours, args.runs)
    slow = median_ms(lambda: reference_tables(scored, reference, top), args.runs)
    print(f"{args.days} scored days, 3 features, median of {args.runs} runs")
    print(f"  model_health (bincount + gap bootstrap): {fast:7.2f} ms")
    print(f"  pandas groupby reference:     {slow:7.2f} ms   (same skills, checked)")
    print(f"  ratio reference / ours:       {slow / fast:7.2f}x   goal: ours < 100 ms -> {'met' if fast < 100 else 'NOT met'}")


if __name__ == "__main__":
    main()
