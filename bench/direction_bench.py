"""Direction models per bundled ticker: walk-forward accuracy / AUC / Brier of the XGBoost classifier, logistic
regression and both baselines; calibration error (ECE) before and after calibration; P(up) latency.

Trains one direction model (XGBoost, grid-searched and calibrated on walk-forward folds) per ticker with
enough history, in a temporary database and models folder, registers it, and times `forecast_direction`
(what the Forecast page calls: prices from SQLite, features, the verified model, P(up) and its interval
of belief) and, in the same run, its parts: the price history + features (shared with the price models'
serving path), sklearn's `predict_proba` and the `up_probability` it uses instead on that feature row. On daily
stock data an accuracy of 50-53 % is normal: the columns say whether the model beats the baselines.

    .venv/bin/python bench/direction_bench.py [--window 1000] [--calls 200] [--tickers AAPL MSFT]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("MLSA_OFFLINE", "1")

import numpy as np  # noqa: E402

ROW = "{:<8}{:<22}{:>9}{:>8}{:>9}{:>9}"


def bundled_tickers(window: int) -> list[str]:
    from core.config import get_settings
    from core.features import WARMUP_DAYS
    from core.market import bundled_frame

    counts = bundled_frame().groupby("symbol")["date"].count()
    needed = get_settings().min_history_days + WARMUP_DAYS + 1
    return sorted(counts[counts >= min(window, needed)].index)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--window", type=int, default=1000, help="training window (trading days)")
    parser.add_argument("--calls", type=int, default=200, help="timed P(up) requests per ticker")
    parser.add_argument("--tickers", nargs="*")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mlsa-direction-bench-") as tmp:
        os.environ["MLSA_DB_PATH"] = str(Path(tmp) / "app.db")
        os.environ["MLSA_MODELS_DIR"] = str(Path(tmp) / "models")
        from core.direction import forecast_direction, train_direction, up_probability
        from core.features import check_feature_frame
        from core.market import load_prices
        from core.predict import feature_row
        from core.registry import load_model, register
        from core.store import get_db

        tickers = args.tickers or bundled_tickers(args.window)
        print(f"direction models, window {args.window} trading days, walk-forward folds; tickers: {', '.join(tickers)}\n")
        print(ROW.format("ticker", "who", "accuracy", "AUC", "Brier", "log loss"))
        summary = []
        for symbol in tickers:
            started = time.perf_counter()
            trained = train_direction(symbol, "xgb", window_days=args.window)
            seconds = time.perf_counter() - started
            m = trained.metrics
            who = [("XGB calibrated", m), ("XGB uncalibrated", m["uncalibrated"]), ("logistic regression", m["reference"]["logit"]),
                   ("always up", m["baselines"]["always_up"]), ("same as today", m["baselines"]["persistence"])]
            for name, values in who:
                print(ROW.format(symbol, name, f"{values['accuracy']:.3f}", f"{values['roc_auc']:.3f}",
                                 f"{values['brier']:.4f}", f"{values['log_loss']:.4f}"))
            beats = "beats" if m["skill"] > 0 else "does NOT beat"
            print(f"        ECE {m['ece_uncalibrated']:.3f} uncalibrated -> {m['ece']:.3f} calibrated; Brier skill vs "
                  f"{m['best_baseline']} {m['skill']:+.4f} ({beats} it); accuracy edge {m['accuracy_edge'] * 100:+.1f} points; "
                  f"{m['n']} validation days; trained in {seconds:.1f} s; params {trained.params}")

            model_id = register(trained)
            days = load_prices(symbol, end=trained.train_end).index[-args.calls:]
            forecast_direction(model_id, days[0])  # the first call reads and verifies the file
            full, features_ms, sklearn_ms, fast_ms = [], [], [], []
            estimator = load_model(model_id).estimator
            for day in days:
                t0 = time.perf_counter()
                forecast_direction(model_id, day)
                t1 = time.perf_counter()
                X = check_feature_frame(feature_row(symbol, day, get_db())[2], trained.feature_columns)
                t2 = time.perf_counter()
                estimator.predict_proba(X)
                t3 = time.perf_counter()
                up_probability(estimator, X)
                t4 = time.perf_counter()
                for series, ms in ((full, t1 - t0), (features_ms, t2 - t1), (sklearn_ms, t3 - t2), (fast_ms, t4 - t3)):
                    series.append(ms * 1000)
            p50, p95 = np.percentile(full, [50, 95])
            part = {name: np.percentile(x, [50, 95]) for name, x in
                    (("features", features_ms), ("sklearn", sklearn_ms), ("fast", fast_ms))}
            print(f"        P(up) latency over {len(full)} requests: P50 {p50:.2f} ms, P95 {p95:.2f} ms (goal < 20 ms: "
                  f"{'met' if p95 < 20 else 'NOT met'}). Parts, P50 / P95: price history + features (the price models' "
                  f"path too) {part['features'][0]:.2f} / {part['features'][1]:.2f} ms; the model: sklearn predict_proba "
                  f"{part['sklearn'][0]:.2f} / {part['sklearn'][1]:.2f} ms vs up_probability {part['fast'][0]:.2f} / "
                  f"{part['fast'][1]:.2f} ms ({part['sklearn'][0] / part['fast'][0]:.1f}x faster at P50)\n")
            summary.append((symbol, m["accuracy"], m["skill"], m["ece_uncalibrated"], m["ece"], p95))
        print("summary: ticker, accuracy, Brier skill vs the better baseline, ECE before -> after, P95 ms")
        for symbol, accuracy, skill_value, ece_before, ece_after, p95 in summary:
            print(f"  {symbol:<7} {accuracy:.3f}  {skill_value:+.4f}  {ece_before:.3f} -> {ece_after:.3f}  {p95:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
