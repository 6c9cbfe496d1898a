"""Time one daily cycle (core.cycle.run_daily_cycle) for 50 deployed models on this machine. Goal: < 60 s.

Setup (not timed): a throwaway database; 50 tickers made by copying the bundled history of ^GSPC and
^IXIC (same calendar, so one as_of) under new names; one random forest trained per source and registered + deployed
for each copy (50 real models, 50 artifacts); `REPLAY_DAYS` days of predictions per model through the
real serving path. Then one full cycle (backfill, metrics, drift, alerts, retrain decision, forecast)
is timed, with the time per step.

Reference measured in the same run: the metrics step done the obvious way (read each model's
prediction log, then `core.training.price_metrics` per day in a Python loop) against the vectorised
`upsert_daily_metrics` the cycle uses.

    python bench/cycle_bench.py [--models 50] [--replay-days 40]
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ["MLSA_OFFLINE"] = "1"
_TMP = Path(tempfile.mkdtemp(prefix="mlsa-cycle-bench-"))
os.environ["MLSA_DB_PATH"] = str(_TMP / "app.db")
os.environ["MLSA_MODELS_DIR"] = str(_TMP / "models")

import pandas as pd  # noqa: E402

from core import cycle, drift_watch, metrics  # noqa: E402
from core.market import load_prices  # noqa: E402
from core.predict import backfill_actuals, predict, prediction_log  # noqa: E402
from core.lifecycle import register_with_artifacts  # noqa: E402
from core.registry import deploy  # noqa: E402
from core.store import get_db, transaction  # noqa: E402
from core.training import price_metrics, train_model  # noqa: E402

SOURCES = ["^GSPC", "^IXIC"]  # the two bundled series that end on the same day: one as_of for every model


def setup(n_models: int, replay_days: int) -> dict[str, pd.Timestamp]:
    """Register and deploy `n_models` copies; returns {symbol: the cycle's as_of}."""
    db = get_db()
    trained = {}
    for source in SOURCES:
        days = load_prices(source).index
        cutoff = days[-(replay_days + 5)]
        trained[source] = train_model(source, "rf", train_end=cutoff)
    as_of = {}
    for i in range(n_models):
        source = SOURCES[i % len(SOURCES)]
        symbol = f"B{i:02d}{''.join(ch for ch in source if ch.isalnum())}"
        prices = load_prices(source).reset_index()
        prices["date"] = prices["date"].dt.strftime("%Y-%m-%d")
        prices["symbol"], prices["source"] = symbol, "bench-copy"
        with transaction(db):
            db["prices"].upsert_all(prices.to_dict("records"), pk=("symbol", "date"))
        model_id = register_with_artifacts(dataclasses.replace(trained[source], symbol=symbol), reason="bench copy", actor="bench")
        deploy(model_id, actor="bench", reason="bench", override=True)
        days = load_prices(symbol, start=trained[source].train_end).index
        for day in days[:replay_days]:
            predict(symbol, day)
        backfill_actuals(days[replay_days], symbol=symbol)
        as_of[symbol] = days[replay_days]
    return as_of


def reference_metrics(model_ids: list[str]) -> int:
    """The obvious way: each model's log, then price_metrics per day in a Python loop (not stored)."""
    rows = 0
    for model_id in model_ids:
        frame = prediction_log(model_id=model_id, served_only=False).dropna(subset=["actual_close"])
        for _, day in frame.groupby("as_of"):
            price_metrics(day["last_close"], day["actual_close"], day["predicted_close"])
            rows += 1
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=50)
    parser.add_argument("--replay-days", type=int, default=40)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    started = time.perf_counter()
    as_of = setup(args.models, args.replay_days)
    print(f"setup: {args.models} deployed models, {args.replay_days} replayed days each, "
          f"{time.perf_counter() - started:.0f} s (not timed below)")

    step_seconds: dict[str, float] = defaultdict(float)
    for step, function in list(cycle.STEP_FUNCTIONS.items()):
        def timed(model, day, context, db, _function=function, _step=step):
            t0 = time.perf_counter()
            try:
                return _function(model, day, context, db)
            finally:
                step_seconds[_step] += time.perf_counter() - t0
        cycle.STEP_FUNCTIONS[step] = timed
    day = max(as_of.values())
    assert min(as_of.values()) == day, "the bench needs one calendar for every model"
    # A model's first cycle fits its sequential detectors' profile and catches up the days since training;
    # a scheduler does that once per model. Do it here, untimed, up to the day before: the cycle below is a
    # steady-state day (one detector update per model).
    previous = load_prices(next(iter(as_of)), end=day).index[-2]
    t0 = time.perf_counter()
    drift_watch.update(None, previous)
    print(f"sequential detectors' first run (profile fit + catch-up of {args.replay_days} days) for "
          f"{len(as_of)} models: {time.perf_counter() - t0:.1f} s, once per model (not in the cycle below)")
    t0 = time.perf_counter()
    summary = cycle.run_daily_cycle(day)
    cycle_s = time.perf_counter() - t0
    print(f"one daily cycle for {len(summary['models'])} models: {cycle_s:.1f} s "
          f"({summary['ok']} ok, {summary['failed']} failed); goal < 60 s: {'met' if cycle_s < 60 else 'NOT met'}")
    for step in cycle.STEPS:
        print(f"  {step:<9} {step_seconds[step]:6.2f} s total, {step_seconds[step] / max(1, len(summary['models'])) * 1000:7.1f} ms per model")
    failures = {e["model_id"]: e["errors"] for e in summary["models"] if e["errors"]}
    if failures:
        print(f"  failures: {list(failures.items())[:3]}")

    model_ids = [e["model_id"] for e in summary["models"]]
    start = min(as_of.values()) - pd.Timedelta(days=120)
    t0 = time.perf_counter()
    written = metrics.upsert_daily_metrics(start, day, model_ids)
    vectorised = time.perf_counter() - t0
    t0 = time.perf_counter()
    reference_rows = reference_metrics(model_ids)
    reference = time.perf_counter() - t0
    print(f"metrics for all {len(model_ids)} models: vectorised upsert {vectorised * 1000:.0f} ms ({written} rows) vs "
          f"reference per-day loop {reference * 1000:.0f} ms ({reference_rows} rows, not stored): "
          f"{reference / vectorised:.1f}x faster")
    return 0 if not summary["failed"] else 1


if __name__ == "__main__":
    try:
        code = main()
    finally:
        shutil.rmtree(_TMP, ignore_errors=True)
    sys.exit(code)
