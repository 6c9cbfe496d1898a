"""Every page's load time and the daily cycle's time at demo size and with ~1M logged predictions, in one run.

Two scratch states under `--dir` (never the user's database), both cached there between runs:
  * demo: `core.demo.build_demo` (the bundled tickers, a replayed year each);
  * grown: 100 tickers x ~11,000 trading days (each a copy of the ^GSPC or ^IXIC returns, tiled, with its
    own noise and level, stored as cached prices), 200 models (per ticker an rf trained at day 1,000 and an
    xgb 300 trading days before the end, copies of two estimators fitted on ^GSPC, registered with their artifacts through
    `core.lifecycle.register_with_artifacts`; the xgb deployed), every trading day after a model's
    training served by it (bulk inserted: the rows `core.predict.predict` writes, the forecasts computed by the
    loaded model in one vectorised call; checked against `predict(..., log_prediction=False)` on sample days),
    a running shadow A/B test on one ticker and, on every ticker, four stopped year-long shadow tests before
    (~100k requests in all: `grow_ab_history`), actuals by `backfill_actuals`, daily metrics by
    `upsert_daily_metrics`, a drift check on each of the last 250 days (the report of a real
    `drift.check_model` per model), an alert per ~1.5 checks, a year of daily-cycle audit rows, and the
    sequential detectors caught up to the day before the last (`drift_watch.update`).
Each measurement runs on a copy of the cached state, so the cached state is never changed.

Printed per state: every page's first visit (a fresh `python -c` running one AppTest of the page;
streamlit is imported before the clock starts, as in a running server) and its warm load (new AppTest
sessions in one process, min of 3 after one untimed), then one daily cycle for every deployed model
(the sequential detectors' first catch-up is done before, untimed, as a scheduler does once per model), with
its wall and CPU seconds: on a shared host the wall time is mostly other processes' load.
Goals at ~1M rows: Home < 1 s warm, every page < 2 s warm, first visit < 3 s, cycle for 100 models < 30 s.

    .venv/bin/python bench/scale_bench.py [--dir /tmp/mlsa-scale-bench] [--tickers 100] [--days 11000] [--cycle-only]
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAGES = ["Home.py", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "pages").glob("*.py"))]
GOALS = {"home_warm": 1.0, "page_warm": 2.0, "first_visit": 3.0, "cycle_100": 30.0}
FIRST_VISIT = """
import os, sys, time
from streamlit.testing.v1 import AppTest
started, cpu = time.perf_counter(), time.process_time()
app = AppTest.from_file({page!r}, default_timeout=300).run()
elapsed = time.perf_counter() - started
print("FAILED" if app.exception else "OK", elapsed, time.process_time() - cpu)
"""
WARM = """
import json, sys, time
from streamlit.testing.v1 import AppTest
out = {{}}
for page in {pages!r}:
    times = []
    for _ in range(4):
        started = time.perf_counter()
        app = AppTest.from_file(page, default_timeout=300).run()
        times.append(time.perf_counter() - started)
        if app.exception:
            out[page] = None
            break
    else:
        out[page] = min(times[1:])
print(json.dumps(out))
"""


def state_env(folder: Path) -> dict[str, str]:
    return {**os.environ, "MLSA_OFFLINE": "1", "MLSA_DB_PATH": str(folder / "app.db"),
            "MLSA_MODELS_DIR": str(folder / "models"), "PYTHONPATH": str(ROOT)}


def run_python(code: str, env: dict[str, str], timeout: float = 3600) -> str:
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)
    if done.returncode:
        raise RuntimeError(f"subprocess failed:\n{done.stderr[-3000:]}")
    return done.stdout


def copy_state(source: Path, target: Path) -> Path:
    """A private copy of a cached state, so runs never change it: the database through SQLite's backup, the
    model files as hard links (the app replaces a model file atomically, never writes into one)."""
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    with sqlite3.connect(source / "app.db") as src, sqlite3.connect(target / "app.db") as dst:
        src.backup(dst)
    shutil.copytree(source / "models", target / "models", copy_function=os.link)
    return target


# --- the states -------------------------------------------------------------------------------------------

def build_demo_state(folder: Path) -> None:
    if (folder / "ready").exists():
        return
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    run_python("from core.demo import build_demo; build_demo(report=lambda line: None)", state_env(folder))
    (folder / "ready").write_text("ok")


DEPLOYED_DAYS = 300  # the deployed model was trained this many trading days before the data's end
GROW = """
import sys
sys.argv = ["grow"]
from bench.scale_bench import grow
grow({tickers}, {days})
"""


def grow(tickers: int, days: int) -> None:
    """Fill the database named by MLSA_DB_PATH (a scratch folder) as described in the module docstring."""
    import numpy as np
    import pandas as pd

    from core import drift, drift_watch
    from core.abtest import create_experiment, get_experiment
    from core.features import build_features, check_feature_frame
    from core.lifecycle import register_with_artifacts
    from core.market import load_prices, next_trading_day
    from core.metrics import upsert_daily_metrics
    from core.predict import backfill_actuals, predict, route
    from core.registry import deploy, load_model
    from core.store import get_db, transaction, utc_now
    from core.training import train_model

    rng = np.random.default_rng(7)
    db = get_db()
    t0 = time.perf_counter()
    sources = {s: load_prices(s) for s in ("^GSPC", "^IXIC")}
    end = min(frame.index[-1] for frame in sources.values())
    calendar = pd.bdate_range(end=end, periods=days)
    cut1, cut2 = calendar[1000], calendar[-DEPLOYED_DAYS]
    symbols = [f"S{i:03d}" for i in range(tickers)]
    for i, symbol in enumerate(symbols):
        base = sources[list(sources)[i % 2]]
        reps = -(-days // len(base))
        ret = np.tile(np.diff(np.log(base["close"].to_numpy()), prepend=np.log(base["close"].iloc[0])), reps)[:days]
        ret[0] = 0.0
        close = 20.0 * (1 + i) ** 0.5 * np.exp(np.cumsum(ret + rng.normal(0, 0.002, days)))
        ratio = {c: np.tile((base[c] / base["close"]).to_numpy(), reps)[:days] for c in ("open", "high", "low")}
        frame = pd.DataFrame({"symbol": symbol, "date": calendar.strftime("%Y-%m-%d"), "open": close * ratio["open"],
                              "high": close * np.maximum(ratio["high"], 1.0), "low": close * np.minimum(ratio["low"], 1.0),
                              "close": close, "adj_close": close,
                              "volume": np.tile(base["volume"].to_numpy(), reps)[:days], "source": "bench"})
        with transaction(db):
            db["prices"].insert_all(frame.to_dict("records"), pk=("symbol", "date"))
    print(f"  prices: {tickers} tickers x {days} days in {time.perf_counter() - t0:.0f} s", flush=True)

    t0 = time.perf_counter()
    trained = {"rf": train_model(symbols[0], "rf", train_end=cut1), "xgb": train_model(symbols[0], "xgb", train_end=cut2)}
    deployed = {}
    for symbol in symbols:
        ids = [register_with_artifacts(dataclasses.replace(trained[t], symbol=symbol), reason="bench copy", actor="bench")
               for t in ("rf", "xgb")]
        deploy(ids[1], actor="bench", reason="bench", override=True)
        deployed[symbol] = ids
    print(f"  models: {2 * tickers} registered with artifacts in {time.perf_counter() - t0:.0f} s", flush=True)

    t0 = time.perf_counter()
    ab_history = AbHistory(calendar, cut1, cut2)  # before the running test: a ticker runs one test at a time
    requests, rows = grow_ab_history(ab_history, symbols, deployed, trained["rf"])
    print(f"  A/B history: {len(symbols) * AB_TESTS_PER_TICKER} stopped shadow tests, {requests:,} requests "
          f"({rows:,} rows) in {time.perf_counter() - t0:.0f} s", flush=True)

    t0 = time.perf_counter()
    ab_symbol = symbols[0]
    ab_start = calendar[-253]
    experiment_id = create_experiment("bench shadow test", ab_symbol, [(deployed[ab_symbol][1], 0.5),
                                      (deployed[ab_symbol][0], 0.5)], ab_start, duration_days=365, shadow=True,
                                      actor="bench")
    experiment = get_experiment(experiment_id)
    columns = ["model_id", "symbol", "as_of", "target_date", "predicted_close", "lower", "upper", "last_close",
               "latency_ms", "experiment_id", "arm", "request_key", "actual_close", "served", "created_at"]
    total = 0
    sample_days = []
    for symbol in symbols:
        prices = load_prices(symbol)
        features = build_features(prices, symbol, dropna=False)
        last_close = features["close"].to_numpy()
        day_text = features.index.strftime("%Y-%m-%d")
        target = np.append(day_text[1:], f"{next_trading_day(symbol, features.index[-1]):%Y-%m-%d}")
        served_days = features.index >= cut1
        forecasts = {}
        for model_id in deployed[symbol]:
            model = load_model(model_id)
            r = np.full(len(features), np.nan)  # the warm-up days before cut1 are never served
            r[served_days] = model.predict_returns(check_feature_frame(features[served_days], model.feature_columns))
            q = model.interval_halfwidth
            forecasts[model_id] = (last_close * np.exp(r), last_close * np.exp(r - q), last_close * np.exp(r + q))
        rf_id, xgb_id = deployed[symbol]
        rows = []
        created = utc_now()
        for k in range(len(day_text) - 1):  # the last day is served by the timed cycle, through predict()
            day = features.index[k]
            if day < cut1:
                continue
            if ab_history.covers(symbol, day):  # served by a past A/B test's arms: grow_ab_history logs them
                continue
            owner = rf_id if day < cut2 else xgb_id
            key = f"{symbol}:{day_text[k]}"
            routed = [(owner, None, None, 1)]
            if symbol == ab_symbol and ab_start <= day:
                chosen = route(experiment, key)
                routed = [(chosen.model_id, experiment_id, chosen.arm, 1),
                          *[(m, experiment_id, arm, 0) for arm, m in chosen.shadows]]
            for model_id, exp, arm, served in routed:
                close, lower, upper = (float(v[k]) for v in forecasts[model_id])
                rows.append((model_id, symbol, day_text[k], target[k], close, lower, upper, float(last_close[k]),
                             float(rng.lognormal(1.5, 0.3)), exp, arm, key, None, served, created))
        db.conn.executemany(f"INSERT INTO predictions ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
                            rows)
        db.conn.commit()
        total += len(rows)
        after_cut2 = int(np.searchsorted(features.index, cut2))
        sample_days.append((symbol, features.index[(after_cut2 + len(day_text)) // 2], features.index[-2]))
    for symbol, *picked in sample_days[:3]:  # the bulk rows are what the serving path computes
        for day in picked:
            made = predict(symbol, day, log_prediction=False)
            logged = db.execute("SELECT predicted_close, lower, upper, target_date FROM predictions WHERE symbol = ? "
                                "AND as_of = ? AND model_id = ? AND served = 1",
                                [symbol, f"{day:%Y-%m-%d}", made.model_id]).fetchone()
            assert logged is not None and np.allclose(logged[:3], [made.predicted_close, made.lower, made.upper],
                                                      rtol=1e-9) and logged[3] == made.target_date, (symbol, day, logged, made)
    print(f"  predictions: {total:,} rows in {time.perf_counter() - t0:.0f} s (sample rows equal predict()'s)", flush=True)

    t0 = time.perf_counter()
    filled = backfill_actuals(calendar[-1])
    written = upsert_daily_metrics(calendar[0], calendar[-1])
    print(f"  actuals: {filled:,}; daily metrics: {written:,} rows in {time.perf_counter() - t0:.0f} s", flush=True)

    t0 = time.perf_counter()
    check_days = calendar[-251:-1]  # a check every day the deployed model served, as the cycle makes them
    checks, alerts, created = [], [], utc_now()
    for symbol in symbols:
        model_id = deployed[symbol][1]
        report = drift.check_model(model_id, check_days[-1], store=False)
        template = drift.store_report(report)  # the real row (its report JSON), then one per checked day
        row = db["drift_checks"].get(template)
        db.execute("DELETE FROM drift_checks WHERE id = ?", [template])
        flags = rng.random(len(check_days)) < 0.3
        for day, flag in zip(check_days, flags):
            checks.append({**{k: v for k, v in row.items() if k != "id"}, "as_of": f"{day:%Y-%m-%d}",
                           "overall_drift": int(flag), "severity": "moderate" if flag else "none", "created_at": created})
            if flag or rng.random() < 0.45:
                alerts.append({"dedup_key": f"{model_id}|drift|{day:%Y-%m-%d}", "model_id": model_id, "kind": "drift",
                               "severity": "critical" if rng.random() < 0.1 else "warning",
                               "message": f"bench alert for {model_id} on {day:%Y-%m-%d}",
                               "created_at": f"{day:%Y-%m-%d}T06:00:00Z",
                               "acknowledged_at": None if rng.random() < 0.02 else created})
    entry = {"status": "ok", "steps_run": 7, "failed_steps": [], "errors": {}, "skipped_steps": {}, "drift": "none",
             "alerts": [], "retrain": "no drift", "seconds": 0.2}
    cycles = [{"at": f"{day:%Y-%m-%d}T22:00:00Z", "actor": "scheduler", "action": "daily_cycle", "target": "scheduler",
               "details_json": json.dumps({"as_of": f"{day:%Y-%m-%d}", "ok": tickers, "failed": 0, "stopped": False,
                                           "seconds": 20.0, "skipped": [], "reconciled": [],
                                           "models": [{**entry, "model_id": deployed[s][1], "symbol": s,
                                                       "as_of": f"{day:%Y-%m-%d}"} for s in symbols]})}
              for day in calendar[-253:-1]]
    with transaction(db):
        db["drift_checks"].insert_all(checks)
        db["alerts"].insert_all(alerts)
        db["audit_log"].insert_all(cycles)
    print(f"  monitoring: {len(checks):,} drift checks, {len(alerts):,} alerts, {len(cycles)} cycle runs in "
          f"{time.perf_counter() - t0:.0f} s", flush=True)
    t0 = time.perf_counter()
    drift_watch.update(None, calendar[-2])  # the sequential detectors, as the daily cycles before today left them
    print(f"  sequential detectors: {tickers} models caught up to {calendar[-2]:%Y-%m-%d} in "
          f"{time.perf_counter() - t0:.0f} s", flush=True)


AB_TESTS_PER_TICKER = 4  # back-to-back year-long tests per ticker: 100 tickers x 4 x ~261 days ~ 104k requests


class AbHistory:
    """The spans of the past A/B tests: on every ticker, AB_TESTS_PER_TICKER back-to-back tests of the longest
    duration a test may have (`ab_validation.DURATION_DAYS`, 365 days), ending the day before the deployed xgb's
    training end (`cut2`), between the rf (trained to `cut1`) and the naive model (trained to `cut1` too).

    Why not one 100k-request test: a test is on one ticker (`experiments.symbol`), lasts at most 365 days, and a
    ticker-day is one request (predictions are unique per ticker, day, model, experiment and arm), so the largest
    test the design allows is a year of trading days (~252 requests; 261 on this weekday calendar). A desk with 100k A/B requests in a
    year of history is many such tests: this grows ~100k requests over 400 stopped tests (plus the running one)."""

    def __init__(self, calendar, cut1, cut2) -> None:
        import pandas as pd

        year = pd.Timedelta(days=365)
        self.starts = [cut2 - (AB_TESTS_PER_TICKER - j) * year for j in range(AB_TESTS_PER_TICKER)]
        assert self.starts[0] > cut1, "the tests must start after the arms' training window"
        self.first, self.last = self.starts[0], self.starts[-1] + year - pd.Timedelta(days=1)

    def covers(self, symbol: str, day) -> bool:
        return self.first <= day <= self.last


def grow_ab_history(history: AbHistory, symbols: list[str], deployed: dict[str, list[str]], rf) -> tuple[int, int]:
    """Every ticker's past A/B tests through the app's own functions: the naive arm registered
    (`register_with_artifacts`), each test created (`abtest.create_experiment`, shadow mode), its requests
    routed by `predict.route` and bulk inserted as the rows `predict` writes (forecasts of the loaded models, in
    one vectorised call per model), its actuals filled (`backfill_actuals`) and the test stopped at its end
    without a deploy (`abtest.stop`, which records the winner). Returns (requests, rows)."""
    import dataclasses as dc

    import numpy as np

    from core.abtest import create_experiment, get_experiment, stop
    from core.features import build_features, check_feature_frame
    from core.lifecycle import register_with_artifacts
    import pandas as pd

    from core.market import load_prices
    from core.predict import backfill_actuals, route
    from core.registry import load_model
    from core.store import get_db, utc_now
    from core.training import train_model

    db = get_db()
    rng = np.random.default_rng(11)
    naive = train_model(symbols[0], "naive", train_end=pd.Timestamp(rf.train_end))
    columns = ["model_id", "symbol", "as_of", "target_date", "predicted_close", "lower", "upper", "last_close",
               "latency_ms", "experiment_id", "arm", "request_key", "actual_close", "served", "created_at"]
    requests = rows_total = 0
    for symbol in symbols:
        arms = [deployed[symbol][0], register_with_artifacts(dc.replace(naive, symbol=symbol), reason="bench A/B arm",
                                                             actor="bench")]
        features = build_features(load_prices(symbol), symbol, dropna=False)
        span = (features.index >= history.first) & (features.index <= history.last)
        last_close, days = features["close"].to_numpy()[span], features.index[span]
        day_text = days.strftime("%Y-%m-%d")
        after = features.index[np.searchsorted(features.index, days[-1]) + 1]
        target = np.append(day_text[1:], f"{after:%Y-%m-%d}")
        forecasts = {}
        for model_id in arms:
            model = load_model(model_id)
            r = model.predict_returns(check_feature_frame(features[span], model.feature_columns))
            q = model.interval_halfwidth
            forecasts[model_id] = (last_close * np.exp(r), last_close * np.exp(r - q), last_close * np.exp(r + q))
        for j, start in enumerate(history.starts):
            experiment_id = create_experiment(f"bench history {symbol} #{j + 1}", symbol, [(arms[0], 0.5), (arms[1], 0.5)],
                                              start, duration_days=365, shadow=True, actor="bench")
            experiment = get_experiment(experiment_id)
            end = pd.Timestamp(experiment["end_date"])
            rows, created = [], utc_now()
            for k in np.flatnonzero((days >= start) & (days <= end)):
                key = f"{symbol}:{day_text[k]}"
                chosen = route(experiment, key)
                for model_id, arm, served in [(chosen.model_id, chosen.arm, 1), *[(m, a, 0) for a, m in chosen.shadows]]:
                    close, lower, upper = (float(v[k]) for v in forecasts[model_id])
                    rows.append((model_id, symbol, day_text[k], target[k], close, lower, upper, float(last_close[k]),
                                 float(rng.lognormal(1.5, 0.3)), experiment_id, arm, key, None, served, created))
                requests += 1
            db.conn.executemany(f"INSERT INTO predictions ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
                                rows)
            db.conn.commit()
            rows_total += len(rows)
            backfill_actuals(min(end, days[-1]), symbol=symbol)
            stop(experiment_id, deploy_winner=False, as_of=min(end, days[-1]), actor="bench")
    return requests, rows_total


def build_grown_state(folder: Path, tickers: int, days: int) -> None:
    if (folder / "ready").exists():
        return
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", GROW.format(tickers=tickers, days=days)], cwd=ROOT,
                          env=state_env(folder), text=True)
    if done.returncode:
        raise RuntimeError("growing the scratch state failed (see above)")
    (folder / "ready").write_text(f"{time.perf_counter() - started:.0f} s")


# --- the measurements -------------------------------------------------------------------------------------

CYCLE = """
import json, time
import pandas as pd
from core import cycle, drift_watch
from core.market import load_prices
from core.registry import list_models
from core.store import get_db, transaction
models = list_models(status="deployed")
day = max(load_prices(m["symbol"]).index[-1] for m in models)
previous = load_prices(models[0]["symbol"], end=day).index[-2]
t0 = time.perf_counter()
# a state grown before the detectors kept a resume point (migration 006) has none: forget each such model's
# last stored day, so the catch-up recomputes it and leaves the resume point a steady day starts from
db = get_db()
with transaction(db):
    db.execute("DELETE FROM drift_watch_state WHERE model_id NOT IN (SELECT model_id FROM drift_watch_resume) "
               "AND as_of = (SELECT MAX(as_of) FROM drift_watch_state s WHERE s.model_id = drift_watch_state.model_id)")
drift_watch.update(None, previous)
catch_up = time.perf_counter() - t0
t0, cpu0 = time.perf_counter(), time.process_time()
summary = cycle.run_daily_cycle(day)
print(json.dumps({"catch_up": catch_up, "cycle": time.perf_counter() - t0, "cpu": time.process_time() - cpu0,
                  "models": len(summary["models"]),
                  "ok": summary["ok"], "failed": summary["failed"],
                  "errors": [e["errors"] for e in summary["models"] if e["errors"]][:2]}))
"""
COUNTS = """
from core.store import get_db
db = get_db()
print(" | ".join(f"{t} {db.execute(f'SELECT COUNT(*) FROM {t}').fetchone()[0]:,}" for t in
      ("predictions", "models", "daily_metrics", "drift_checks", "alerts", "experiments", "audit_log")))
"""


def measure(folder: Path, scratch: Path, pages: list[str]) -> dict:
    """Page loads (first visit, warm) of `pages` and one daily cycle, on a copy of the state in `folder`."""
    state = copy_state(folder, scratch)
    env = state_env(state)
    out = {"counts": run_python(COUNTS, env).strip(), "first": {}, "first_cpu": {}, "warm": {}}  # migrates it (untimed)
    for page in pages:
        status, seconds, cpu = run_python(FIRST_VISIT.format(page=str(ROOT / page)), env).split()[-3:]
        out["first"][page] = float(seconds) if status == "OK" else None
        out["first_cpu"][page] = float(cpu)  # the process's own CPU: what the wall time is on an idle host
    if pages:
        warm = json.loads(run_python(WARM.format(pages=[str(ROOT / p) for p in pages]), env).splitlines()[-1])
        out["warm"] = {str(Path(k).relative_to(ROOT)): v for k, v in warm.items()}
    out["cycle"] = json.loads(run_python(CYCLE, env).splitlines()[-1])
    shutil.rmtree(state, ignore_errors=True)
    print(f"measured {folder.name}: {json.dumps(out)}", flush=True)  # the raw figures, as soon as they exist
    return out


def show(value: float | None) -> str:
    return "  failed" if value is None else f"{value:7.2f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", default="/tmp/mlsa-scale-bench", help="scratch folder (states are cached here)")
    parser.add_argument("--tickers", type=int, default=100)
    parser.add_argument("--days", type=int, default=11_000, help="trading days per grown ticker")
    parser.add_argument("--cycle-only", action="store_true", help="time the daily cycles only, no page loads")
    args = parser.parse_args(argv)
    base = Path(args.dir)
    grown_dir = base / f"grown-{args.tickers}x{args.days}-d{DEPLOYED_DAYS}-ab{AB_TESTS_PER_TICKER}"  # a new growth, a new cache
    started = time.perf_counter()
    build_demo_state(base / "demo")
    print(f"demo state ready ({time.perf_counter() - started:.0f} s)", flush=True)
    started = time.perf_counter()
    print(f"growing {grown_dir} (cached after the first run) ...", flush=True)
    build_grown_state(grown_dir, args.tickers, args.days)
    print(f"grown state ready ({time.perf_counter() - started:.0f} s now; grown once in "
          f"{(grown_dir / 'ready').read_text()})", flush=True)
    pages = [] if args.cycle_only else PAGES
    results = {"demo": measure(base / "demo", base / f"run-demo-{os.getpid()}", pages),  # per run: runs may overlap
               "grown": measure(grown_dir, base / f"run-grown-{os.getpid()}", pages)}
    for name, result in results.items():
        print(f"{name}: {result['counts']}")
    print(f"\n{'page (seconds)':<32}{'demo first':>11}{'demo warm':>10}{'1M first':>10}{'(CPU)':>7}{'1M warm':>9}"
          "  goal (1M)")
    verdicts = []
    for page in pages:
        demo, grown = results["demo"], results["grown"]
        goal = GOALS["home_warm"] if page == "Home.py" else GOALS["page_warm"]
        first, warm = grown["first"][page], grown["warm"][page]
        met = first is not None and warm is not None and first < GOALS["first_visit"] and warm < goal
        verdicts.append(met)
        print(f"{page:<32}{show(demo['first'][page]):>11}{show(demo['warm'][page]):>10}{show(first):>10}"
              f"{grown['first_cpu'][page]:7.2f}{show(warm):>9}"
              f"  first < {GOALS['first_visit']:.0f} s, warm < {goal:.0f} s: {'met' if met else 'NOT met'}")
    for name, result in results.items():
        c = result["cycle"]
        line = (f"daily cycle, {name}: {c['cycle']:.1f} s ({c['cpu']:.1f} s CPU) for {c['models']} models "
                f"({c['ok']} ok, {c['failed']} failed); "
                f"detectors' first catch-up before it {c['catch_up']:.1f} s (untimed in a steady day)")
        if name == "grown":
            met = c["cycle"] < GOALS["cycle_100"] * c["models"] / 100 and not c["failed"]
            verdicts.append(met)
            line += f"; goal < {GOALS['cycle_100']:.0f} s per 100 models: {'met' if met else 'NOT met'}"
        print(line + (f"; errors {c['errors']}" if c["errors"] else ""))
    print(f"\nall goals met: {all(verdicts)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
