"""Time one 500-model daily cycle in process, then on a Dask LocalCluster of 1 and of 2 worker processes.

What a "model" costs here: a light random forest (20 trees, depth 4) on 500 training days of a copy of
^GSPC or ^IXIC. Its cycle is the real one (backfill, sequential watch, metrics, drift, alerts, retrain
decision, forecast): the drift check builds 20 features over the training window and the last 30 days
and compares them (PSI, KS, Wasserstein: ~0.1 s, the part that runs on the cluster); every other step
reads or writes SQLite on the driver. With `MLSA_DASK_SCHEDULER` set the cycle runs two passes: each
model's backfill, detectors and metrics, its whole drift check submitted as a task as soon as its inputs are
written; then each model's drift (the task's report, stored), alerts, retrain and forecast; so the driver's
SQLite work overlaps the workers' computing. The in-process run also prints where the time goes per step.

Setup (not timed): a scratch database in a temp folder; `--models` tickers copying the last ~800 days of
^GSPC / ^IXIC; the two source models trained once, each copy registered through `registry.register`
(model file, validation, row) with a one-line model card beside it and the first copy's fitted
sequential-detector profile stored for it (fitting 500 profiles would take minutes and is a first-cycle
cost); the detectors advanced to the day before. Each of the three runs starts from its own copy of
that database. The clusters (1 thread per worker, processes) start before their run and are not timed.
On the 2-core reference machine the driver and the workers share the same 2 cores.

    python bench/cluster_bench.py [--models 500]
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ["MLSA_OFFLINE"] = "1"
os.environ.pop("MLSA_DASK_SCHEDULER", None)
_TMP = Path(tempfile.mkdtemp(prefix="mlsa-cluster-bench-"))
os.environ["MLSA_DB_PATH"] = str(_TMP / "setup.db")
os.environ["MLSA_MODELS_DIR"] = str(_TMP / "models")
os.environ["MLSA_TRAIN_WINDOW_DAYS"] = "500"

from core import cycle, drift, drift_watch  # noqa: E402
from core.market import load_prices  # noqa: E402
from core.model_files import model_folder  # noqa: E402
from core.registry import deploy, register  # noqa: E402
from core.store import close_all, get_db, transaction  # noqa: E402
from core.training import train_model  # noqa: E402

SOURCES = ["^GSPC", "^IXIC"]  # the two bundled series that end on the same day: one as_of for every model
LIGHT = {"n_estimators": 20, "max_depth": 4}
DAYS_AFTER_TRAINING = 40  # > the 30-day drift window: every model's drift check runs
HISTORY_DAYS = 800  # 500 training days + feature warm-up + the days after


def setup(n_models: int) -> str:
    """The scratch registry of `n_models` light deployed models; returns the cycle's day."""
    db = get_db()
    trained, profiles = {}, {}
    for source in SOURCES:
        days = load_prices(source).index
        trained[source] = train_model(source, "rf", train_end=days[-(DAYS_AFTER_TRAINING + 1)], params=LIGHT)
    day = f"{load_prices(SOURCES[0]).index[-1]:%Y-%m-%d}"
    for i in range(n_models):
        source = SOURCES[i % len(SOURCES)]
        symbol = f"C{i:03d}{''.join(ch for ch in source if ch.isalnum())}"
        prices = load_prices(source).iloc[-HISTORY_DAYS:].reset_index()
        prices["date"] = prices["date"].dt.strftime("%Y-%m-%d")
        prices["symbol"], prices["source"] = symbol, "bench-copy"
        with transaction(db):
            db["prices"].upsert_all(prices.to_dict("records"), pk=("symbol", "date"))
        model_id = register(dataclasses.replace(trained[source], symbol=symbol), reason="bench copy", actor="bench", db=db)
        deploy(model_id, actor="bench", reason="bench", override=True, db=db)
        # reconcile rewrites the artifacts of a model without a card: a one-line card stands for them here
        (model_folder(model_id) / "model_card.md").write_text("bench copy: artifacts not written\n")
        if source not in profiles:  # the first copy's profile, fitted once, stands for the other copies of its source
            profiles[source] = drift_watch.ensure_profile(model_id, db)
            continue
        with transaction(db):
            db["drift_profiles"].insert({"model_id": model_id, "profile_json": json.dumps(profiles[source]),
                                         "arl_days": float(profiles[source]["arl_days"]), "created_at": "bench"})
    previous = load_prices(f"C000{''.join(ch for ch in SOURCES[0] if ch.isalnum())}", end=day).index[-2]
    drift_watch.update(None, previous, db=db)  # steady state: the cycle below advances the detectors one day
    return day


def run(label: str, day: str, scheduler: str | None) -> tuple[float, dict]:
    """One cycle on a fresh copy of the setup database; (seconds, summary)."""
    target = _TMP / f"{label}.db"
    close_all()
    with sqlite3.connect(_TMP / "setup.db") as src, sqlite3.connect(target) as dst:
        src.backup(dst)
    os.environ["MLSA_DB_PATH"] = str(target)
    if scheduler:
        os.environ["MLSA_DASK_SCHEDULER"] = scheduler
    else:
        os.environ.pop("MLSA_DASK_SCHEDULER", None)
    started = time.perf_counter()
    summary = cycle.run_daily_cycle(day, db=get_db())
    seconds = time.perf_counter() - started
    print(f"  {label:<22} {seconds:6.1f} s  ({summary['ok']} ok, {summary['failed']} failed, ran on {summary['ran_on']})",
          flush=True)
    return seconds, summary


def timed_in_process(day: str) -> tuple[float, dict, float, dict[str, float]]:
    """The in-process run, timing inside it each step, the drift check's computing (`drift.report_from_inputs`,
    what the cluster runs instead) and the forecast step's one-model metric counts (one batch in a cluster run):
    (cycle seconds, summary, seconds of that computing, seconds of those counts, seconds per step)."""
    spent = {"offloadable": 0.0, "counted": 0.0, **{step: 0.0 for step in cycle.STEPS}}

    def timed(function, key):
        def wrapper(*args, **kwargs):
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                spent[key] += time.perf_counter() - started
        return wrapper

    originals = {"report": drift.report_from_inputs, "steps": dict(cycle.STEP_FUNCTIONS),
                 "upsert": cycle.upsert_daily_metrics}
    drift.report_from_inputs = timed(drift.report_from_inputs, "offloadable")
    counted = timed(cycle.upsert_daily_metrics, "counted")  # the forecast step's one-day count (start == end)
    cycle.upsert_daily_metrics = lambda start, end, *a, **k: (counted if start == end else originals["upsert"])(start, end, *a, **k)
    cycle.STEP_FUNCTIONS.update({step: timed(function, step) for step, function in originals["steps"].items()})
    try:
        seconds, summary = run("in process", day, None)
    finally:
        drift.report_from_inputs = originals["report"]
        cycle.STEP_FUNCTIONS.update(originals["steps"])
        cycle.upsert_daily_metrics = originals["upsert"]
    offloadable, counted_seconds = spent.pop("offloadable"), spent.pop("counted")
    return seconds, summary, offloadable, counted_seconds, spent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=500)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    from distributed import LocalCluster  # the bench needs dask[distributed] (requirements.txt)

    logging.getLogger("distributed").setLevel(logging.ERROR)

    started = time.perf_counter()
    day = setup(args.models)
    print(f"setup: {args.models} light deployed models, {time.perf_counter() - started:.0f} s (not timed); "
          f"one daily cycle on {day}:", flush=True)
    print(f"  ({os.cpu_count()} cores; load average {os.getloadavg()[0]:.1f} at the start: other work shares them)")
    base_seconds, base_summary, offloadable, counted, steps = timed_in_process(day)
    results = {"in process": (base_seconds, base_summary)}
    for workers in (1, 2):
        with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                          silence_logs=logging.ERROR) as local:
            results[workers] = run(f"dask, {workers} worker(s)", day, local.scheduler_address)
    base, one, two = results["in process"][0], results[1][0], results[2][0]
    print(f"speed-up vs in process: 1 worker {base / one:.2f}x, 2 workers {base / two:.2f}x; "
          f"2 workers vs 1: {one / two:.2f}x")
    verdicts = [[(e["model_id"], e["drift"], e["status"]) for e in summary["models"]] for _, summary in results.values()]
    same = all(v == verdicts[0] for v in verdicts)
    rest = base - offloadable - counted
    n = max(1, len(base_summary["models"]))
    print("where the in-process time goes (seconds in all, ms per model):")
    for step, spent in steps.items():
        extra = {"drift": f"its computing, on the workers when clustered: {offloadable:.1f} s, {1000 * offloadable / n:.0f} ms",
                 "forecast": f"its per-model metric count, one batch when clustered: {counted:.1f} s, "
                             f"{1000 * counted / n:.0f} ms"}.get(step)
        print(f"  {step:<9} {spent:6.1f} s  {1000 * spent / n:5.0f} ms" + (f"  ({extra})" if extra else ""))
    around = base - sum(steps.values())
    print(f"  {'around':<9} {around:6.1f} s  {1000 * around / n:5.0f} ms  (dating the cycle, reconcile, error rates, audit row)")
    print(f"of the in-process {base:.1f} s, {offloadable:.1f} s ({offloadable / base:.0%}) is the drift checks' computing "
          f"the workers take over and {counted:.1f} s ({counted / base:.0%}) the per-model metric counts a cluster run "
          f"batches; the other {rest:.1f} s (the steps' SQLite reads and writes and the pandas work around them) stay on "
          f"the driver, so no number of workers brings this cycle below ~{rest:.0f} s (at most {base / rest:.2f}x), and on "
          f"2 shared cores the driver and the workers also compete for the same CPUs")
    print(f"same drift verdicts and statuses in the three runs: {'yes' if same else 'NO'}")
    return 0 if same and not any(summary["failed"] for _, summary in results.values()) else 1


if __name__ == "__main__":
    try:
        code = main()
    finally:
        close_all()
        shutil.rmtree(_TMP, ignore_errors=True)
    sys.exit(code)
