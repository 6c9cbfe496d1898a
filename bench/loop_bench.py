"""Loop bench: what the closed loop (drift -> retrain -> gate -> shadow A/B test -> deploy -> watch) was worth
over every bundled ticker's demo year, and the A/B stage's false-promotion rate under no real difference.

Run: .venv/bin/python bench/loop_bench.py [--workers 2] [--tickers AAPL ^GSPC] [--skip-replay] [--skip-null]
Each ticker replays in its own temporary database (MLSA_OFFLINE=1): the demo's champion (rf trained at the
demo cutoff, deployed), then the daily cycle for every trading day of the demo year with automatic
retraining on and the approval queue approved daily by a simulated reviewer (critical drift still queues
first). The settings in the environment apply (e.g. MLSA_RETRAIN_MARGIN). Printed per ticker and in
total: loops started, gate rejections, challengers tested / deployed / archived / rolled back, and live
MAE over the replayed days with the loop on (what was served), retraining off (the initial champion on
the same days, same arithmetic) and naive. Then the A/B stage under no real difference: the champion vs
the same model refitted on the same data with another seed, predicting the same next ~30 calendar days,
decided by the loop's own rule (`core.ab_stats.compare_arms`, paired, MLSA_CHALLENGER_MIN_SAMPLES); and
the same rule on simulated paired null data. Figures are printed, never asserted.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ["MLSA_OFFLINE"] = "1"


# Profiled (cProfile, 40 days of ^IXIC): each retrain spent ~2.7 s of its ~7 s on its explainability artifacts
# (SHAP + permutation importance over 250 days, a PNG through headless Chromium). No loop decision reads them:
# the bench writes the HTML summary and explains 60 days instead; the decisions and MAEs are unchanged.
ARTIFACT_SHORTCUTS = {"MLSA_EXPLAIN_IMAGE_FORMAT": "html", "MLSA_EXPLAIN_WINDOW_DAYS": "60"}


def _mae(predicted, actual) -> float:
    return float(np.mean(np.abs(np.asarray(predicted) - np.asarray(actual))))


def replay_ticker(symbol: str) -> dict:
    """The demo year of `symbol` through the daily cycle with the loop on, in a private database."""
    state = Path(tempfile.mkdtemp(prefix=f"loop-bench-{symbol.strip('^')}-"))
    os.environ.update(MLSA_DB_PATH=str(state / "app.db"), MLSA_MODELS_DIR=str(state / "models"),
                      MLSA_ENABLE_AUTO_RETRAIN="1", MLSA_TRAIN_THREADS="1", **ARTIFACT_SHORTCUTS)
    import logging

    logging.basicConfig(level=logging.ERROR)
    from core.cycle import run_daily_cycle
    from core.demo import demo_cutoff
    from core.lifecycle import approve_all, register_with_artifacts
    from core.market import load_prices
    from core.registry import deploy
    from core.training import train_model

    started = time.perf_counter()
    cutoff = demo_cutoff(symbol)
    champion = register_with_artifacts(train_model(symbol, "rf", train_end=cutoff), reason="bench champion", actor="bench")
    deploy(champion, reason="bench champion", override=True, actor="bench")
    days = load_prices(symbol, start=cutoff).index
    for day in days:
        run_daily_cycle(day)
        approve_all(day, actor="bench (simulated reviewer)")
    return {**summarise(symbol), "seconds": time.perf_counter() - started}


def summarise(symbol: str) -> dict:
    """The figures of a replayed database (MLSA_DB_PATH / MLSA_MODELS_DIR): its champion is the model without a parent."""
    from core.retrain import counterfactual_predictions
    from core.store import get_db

    db = get_db()
    champion = db.execute("SELECT model_id FROM models WHERE parent_id IS NULL AND symbol = ?", [symbol]).fetchone()[0]
    served = pd.read_sql_query("SELECT as_of, last_close, predicted_close, actual_close FROM predictions WHERE served = 1 "
                               "AND actual_close IS NOT NULL ORDER BY as_of", db.conn)
    off = counterfactual_predictions(champion, pd.DatetimeIndex(served["as_of"]), db=db)
    jobs = dict(db.execute("SELECT status, COUNT(*) FROM retrain_jobs GROUP BY status").fetchall())
    tested = db.execute("SELECT COUNT(*) FROM experiments").fetchone()[0]
    return {"ticker": symbol, "days": len(served),
            "loops started": sum(v for k, v in jobs.items() if k not in ("blocked", "declined", "awaiting_approval")),
            "gate rejected": jobs.get("rejected", 0), "tested": tested,
            "deployed": jobs.get("validating", 0) + jobs.get("validated", 0) + jobs.get("rolled_back", 0),
            "archived": jobs.get("archived", 0), "rolled back": jobs.get("rolled_back", 0),
            "MAE loop on $": _mae(served["predicted_close"], served["actual_close"]),
            "MAE retraining off $": _mae(off["predicted_close"], served["actual_close"]),
            "MAE naive $": _mae(served["last_close"], served["actual_close"])}


def null_runs(symbol: str, every: int = 20, horizon_days: int = 30) -> list[dict]:
    """Champion (seed 0) vs the same rf refitted on the same rows with seed 1, over the next `horizon_days`
    calendar days after each of the demo year's cutoffs spaced `every` trading days: the loop's decision."""
    os.environ.setdefault("MLSA_TRAIN_THREADS", "1")
    from sklearn.ensemble import RandomForestRegressor

    from core.ab_stats import compare_arms
    from core.config import get_settings
    from core.demo import demo_cutoff
    from core.features import FEATURE_COLUMNS, TARGET, build_features, check_feature_frame
    from core.market import load_prices
    from core.training import DEFAULT_PARAMS, training_frame

    settings = get_settings()
    prices = load_prices(symbol)
    features = build_features(prices, symbol, dropna=False)
    cutoffs = prices.index[prices.index >= demo_cutoff(symbol)][::every]
    runs = []
    for cutoff in cutoffs:
        rows = training_frame(symbol, cutoff, settings.train_window_days)
        X, y = check_feature_frame(rows, FEATURE_COLUMNS), rows[TARGET].to_numpy()
        test = features[(features.index >= cutoff) & (features.index <= cutoff + pd.Timedelta(days=horizon_days - 1))]
        test = test.dropna(subset=[TARGET])
        if len(test) < settings.challenger_min_samples:
            continue
        errors = []
        for seed in (0, 1):
            model = RandomForestRegressor(random_state=seed, n_jobs=1, **DEFAULT_PARAMS["rf"]).fit(X, y)
            close = test["close"].to_numpy()
            predicted = close * np.exp(model.predict(check_feature_frame(test, FEATURE_COLUMNS)))
            errors.append(np.abs(predicted - close * np.exp(test[TARGET].to_numpy())))
        result = compare_arms({"A": errors[0], "B": errors[1]}, [1.0, 0.0], settings.ab_confidence_level,
                              settings.challenger_min_samples, paired=True)
        runs.append({"ticker": symbol, "cutoff": f"{cutoff:%Y-%m-%d}", "n": len(test), "winner": result.winner,
                     "p": result.comparisons[0].p_sequential})
    return runs


def simulated_null(runs: int = 2000, days: int = 21, seed: int = 0) -> float:
    """The loop's rule on paired errors with no real difference (heavy-tailed, correlated across arms)."""
    from core.ab_stats import compare_arms
    from core.config import get_settings

    settings = get_settings()
    rng = np.random.default_rng(seed)
    promoted = 0
    for _ in range(runs):
        common = np.abs(rng.standard_t(3, days))
        a, b = common + 0.1 * np.abs(rng.standard_t(3, days)), common + 0.1 * np.abs(rng.standard_t(3, days))
        result = compare_arms({"A": a, "B": b}, [1.0, 0.0], settings.ab_confidence_level,
                              settings.challenger_min_samples, paired=True)
        promoted += result.winner == "B"
    return promoted / runs


def _summarise_state(spec: str) -> dict:
    symbol, folder = spec.split("=", 1)
    os.environ.update(MLSA_DB_PATH=str(Path(folder) / "app.db"), MLSA_MODELS_DIR=str(Path(folder) / "models"))
    return summarise(symbol)


def _print_replay(results: pd.DataFrame, seconds: float) -> None:
    pd.set_option("display.width", 200)
    print(results.round(3).to_string(index=False))
    weights = results["days"]
    total = {k: int(results[k].sum()) for k in ("loops started", "gate rejected", "tested", "deployed", "archived",
                                                "rolled back")}
    print(f"total over {len(results)} tickers, {int(weights.sum())} scored days, {seconds:.0f} s: "
          + ", ".join(f"{k} {v}" for k, v in total.items()))
    for column in ("MAE loop on $", "MAE retraining off $", "MAE naive $"):
        print(f"  {column} (day-weighted mean over tickers): {np.average(results[column], weights=weights):.3f}")
    ratio = results["MAE loop on $"] / results["MAE retraining off $"]
    print("  loop on / retraining off MAE ratio per ticker: " + ", ".join(f"{t} {r:.4f}" for t, r in zip(results["ticker"], ratio)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--tickers", nargs="*")
    parser.add_argument("--skip-replay", action="store_true")
    parser.add_argument("--skip-null", action="store_true")
    parser.add_argument("--from-state", nargs="*", default=[],
                        help="TICKER=DIR: summarise a replay already run in DIR (its app.db and models) instead of replaying")
    args = parser.parse_args()
    from core.config import get_settings
    from core.demo import REPLAY_DAYS
    from core.market import bundled_frame, load_prices

    tickers = args.tickers or sorted(bundled_frame()["symbol"].unique())
    needed = get_settings().min_history_days + 50 + REPLAY_DAYS  # the demo's own rule: train on one part, replay a year
    skipped = [t for t in tickers if len(load_prices(t)) < needed]
    if skipped:
        print(f"skipped (fewer than {needed} trading days, as in the demo): {', '.join(skipped)}")
    tickers = [t for t in tickers if t not in skipped]
    settings = get_settings()
    print(f"settings: retrain margin {settings.retrain_margin:.0%}, confirmations {settings.retrain_confirmations}, "
          f"cooldown {settings.retrain_cooldown_days} d, test max {settings.ab_default_duration_days} d, "
          f"min samples {settings.challenger_min_samples}, confidence {settings.ab_confidence_level}")
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        if args.from_state:
            results = pd.DataFrame(list(pool.map(_summarise_state, args.from_state)))
            args.skip_replay = True
            _print_replay(results, float("nan"))
        if not args.skip_replay:
            started = time.perf_counter()
            _print_replay(pd.DataFrame(list(pool.map(replay_ticker, tickers))), time.perf_counter() - started)
        if not args.skip_null:
            runs = pd.DataFrame([r for rs in pool.map(null_runs, tickers) for r in rs])
            false_promotions = float((runs["winner"] == "B").mean())
            print(f"A/B stage under no real difference (champion vs itself refitted with another seed, replayed): "
                  f"{len(runs)} runs, false promotions {false_promotions:.1%} (goal <= 5%), "
                  f"champion declared better {float((runs['winner'] == 'A').mean()):.1%}")
            print(f"same rule on simulated paired null data, 2000 runs: false promotions {simulated_null():.1%}")


if __name__ == "__main__":
    main()
