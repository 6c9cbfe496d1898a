"""Latency of the serving path: `predict` over 1,000 calls on the demo registry (goal: P95 < 20 ms), for the price
models and, in the same run, for direction models (`predict(kind="direction")`, P(up) served and logged).

Runs on a copy of the demo database (data/app.db when it exists, else a small demo built in a
temporary folder) so the user's prediction log is not touched. For comparison it times, in the same
run, the plain way: features over the whole history and the estimator's own `predict` (`predict_proba` for
a direction model). The direction models (XGBoost, grid-searched and calibrated, one per ticker) are trained
here up to the first requested day, so every timed request is served and logged.

    .venv/bin/python bench/predict_bench.py [--calls 1000] [--no-direction]
"""
from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("MLSA_OFFLINE", "1")

import numpy as np  # noqa: E402


def prepare(workdir: Path) -> None:
    from core.config import get_settings

    source = get_settings()
    os.environ["MLSA_DB_PATH"] = str(workdir / "app.db")
    os.environ["MLSA_MODELS_DIR"] = str(workdir / "models")
    if source.db_path.exists():
        with sqlite3.connect(source.db_path) as src, sqlite3.connect(workdir / "app.db") as dst:
            src.backup(dst)
        shutil.copytree(source.models_dir, workdir / "models", ignore=shutil.ignore_patterns(".gitkeep"))
        print(f"using a copy of the demo registry at {source.db_path}")
    else:
        from core.demo import build_demo

        print("no demo registry at data/app.db: building a small one (AAPL, MSFT)")
        build_demo(report=lambda _l: None, symbols=["AAPL", "MSFT"], replay_days=60)


def percentiles(ms: list[float]) -> str:
    p50, p95, p99 = np.percentile(ms, [50, 95, 99])
    return f"P50 {p50:6.2f} ms   P95 {p95:6.2f} ms   P99 {p99:6.2f} ms"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--no-direction", action="store_true", help="time the price models only")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mlsa-bench-") as tmp:
        prepare(Path(tmp))
        from core.features import FEATURE_COLUMNS, build_features
        from core.market import load_prices
        from core.predict import predict
        from core.registry import deployed_model, list_models, load_model

        symbols = sorted({m["symbol"] for m in list_models(status="deployed")})
        days = {s: load_prices(s).index[-200:] for s in symbols}
        rng = np.random.default_rng(0)
        requests = [(s, days[s][rng.integers(len(days[s]))]) for s in rng.choice(symbols, args.calls)]
        for s in symbols:  # warm the model cache, as a running app would have it
            predict(s, days[s][-1], log_prediction=False)

        served = []
        for symbol, day in requests:
            started = time.perf_counter()
            predict(symbol, day)  # the full path, including the prediction log write
            served.append((time.perf_counter() - started) * 1000)

        plain = []
        models = {s: load_model(deployed_model(s)["model_id"]) for s in symbols}
        for symbol, day in requests[: max(100, args.calls // 5)]:
            started = time.perf_counter()
            features = build_features(load_prices(symbol, end=day), symbol, dropna=False)
            models[symbol].estimator.predict(features[FEATURE_COLUMNS].iloc[[-1]].to_numpy())
            plain.append((time.perf_counter() - started) * 1000)

        print(f"predict() over {len(served)} calls on {len(symbols)} tickers ({', '.join(symbols)})")
        print(f"  serving path : {percentiles(served)}   (goal: P95 < 20 ms, "
              f"{'met' if np.percentile(served, 95) < 20 else 'NOT met'})")
        print(f"  plain way    : {percentiles(plain)}   (whole-history features + estimator.predict, no log write)")
        print(f"  ratio P50 plain / serving: {np.median(plain) / np.median(served):.1f}x")
        if not args.no_direction:
            time_direction(symbols, days, requests, served, args.calls)
    return 0


def time_direction(symbols: list[str], days: dict, requests: list, price_ms: list[float], calls: int) -> None:
    """P(up) requests through the serving path (logged once each), beside the price path's figures of this run
    and the plain way (whole-history features + the calibrated classifier's own predict_proba)."""
    from core.direction import train_direction
    from core.features import FEATURE_COLUMNS, build_features
    from core.market import load_prices
    from core.predict import predict
    from core.registry import deploy, load_model, register

    models = {}
    for symbol in symbols:  # trained on the closes before the first requested day: every request can be logged
        started = time.perf_counter()
        trained = train_direction(symbol, "xgb", train_end=days[symbol][0], window_days=750)
        models[symbol] = register(trained)
        deploy(models[symbol], override=True, reason="predict_bench: latency only", actor="bench")
        print(f"trained and deployed {models[symbol]} in {time.perf_counter() - started:.1f} s")
    for symbol in symbols:  # warm the model cache, as a running app would have it
        predict(symbol, days[symbol][-1], log_prediction=False, kind="direction")
    served = []
    for symbol, day in requests:
        started = time.perf_counter()
        predict(symbol, day, kind="direction")  # the full path, including the prediction log write
        served.append((time.perf_counter() - started) * 1000)
    plain = []
    estimators = {s: load_model(models[s]).estimator for s in symbols}
    for symbol, day in requests[: max(100, calls // 5)]:
        started = time.perf_counter()
        features = build_features(load_prices(symbol, end=day), symbol, dropna=False)
        estimators[symbol].predict_proba(features[FEATURE_COLUMNS].iloc[[-1]].to_numpy())
        plain.append((time.perf_counter() - started) * 1000)
    print(f"predict(kind='direction') over {len(served)} calls (P(up), served and logged)")
    print(f"  direction    : {percentiles(served)}   (goal: P95 < 20 ms, "
          f"{'met' if np.percentile(served, 95) < 20 else 'NOT met'})")
    print(f"  price (above): {percentiles(price_ms)}")
    print(f"  plain way    : {percentiles(plain)}   (whole-history features + predict_proba, no log write)")
    print(f"  ratio P95 direction / price: {np.percentile(served, 95) / np.percentile(price_ms, 95):.2f}x; "
          f"P50 plain / direction: {np.median(plain) / np.median(served):.1f}x")


if __name__ == "__main__":
    sys.exit(main())
