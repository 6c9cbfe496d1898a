"""Home page load time with a year of live history for every demo ticker, measured with AppTest.

Builds the full demo registry (every bundled ticker with enough history, a replayed year each) in a
scratch folder on first use (a few minutes; kept for later runs), then prints:
  * a cold load: a fresh Python process running Home.py once with AppTest; the first run, which
    imports core and plotly, is what the first visitor of a freshly started server waits for (the
    server has streamlit loaded already); the total adds Python's import of streamlit;
  * warm loads: new AppTest sessions in one process (every later visitor);
  * the data layer: `core.dashboard.load_dashboard` against the reference the first Home page used
    (per ticker `deployed_model` + `live_performance` over the pandas prediction log), with the ratio.
Goal: the page loads in under 2 s.

    .venv/bin/python bench/home_bench.py [--dir /tmp/mlsa-home-bench] [--runs 5]
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

COLD_SCRIPT = """
import time
started = time.perf_counter()
from streamlit.testing.v1 import AppTest
imported = time.perf_counter()
app = AppTest.from_file({home!r}, default_timeout=120).run()
assert not app.exception, app.exception
print(time.perf_counter() - started, time.perf_counter() - imported)
"""


def use_scratch(folder: Path) -> None:
    os.environ["MLSA_OFFLINE"] = "1"
    os.environ["MLSA_DB_PATH"] = str(folder / "app.db")
    os.environ["MLSA_MODELS_DIR"] = str(folder / "models")


def ensure_demo() -> None:
    from core.demo import build_demo, demo_exists

    if not demo_exists():
        print("building the full demo registry once (every bundled ticker, a replayed year each) ...", flush=True)
        build_demo(report=lambda line: print("  " + line, flush=True))


def add_year_of_monitoring() -> None:
    """Fill the monitoring tables as a year of daily cycles would (the scheduler's replay of a year
    takes far longer than this bench should): per deployed model and prediction day one
    daily_metrics row (aggregated from the prediction log) and one drift check, an alert every tenth
    day (half acknowledged), and one daily_cycle audit row per day. Only in the scratch database."""
    import json

    import numpy as np

    from core.store import get_db, transaction

    db = get_db()
    if db.execute("SELECT COUNT(*) FROM daily_metrics").fetchone()[0]:
        return
    days = [dict(r) for r in db.query(
        "SELECT p.model_id, p.as_of, COUNT(*) AS n, AVG(ABS(p.predicted_close - p.actual_close)) AS mae, "
        "AVG(ABS(p.last_close - p.actual_close)) AS naive_mae, MAX(p.latency_ms) AS latency_p99 "
        "FROM predictions p JOIN models m ON m.model_id = p.model_id WHERE m.status = 'deployed' "
        "AND p.actual_close IS NOT NULL GROUP BY p.model_id, p.as_of")]
    rng = np.random.default_rng(0)
    drifting = rng.random(len(days)) < 0.2
    with transaction(db):
        db["daily_metrics"].upsert_all(
            [{"model_id": d["model_id"], "date": d["as_of"], "n_predictions": d["n"], "mae": d["mae"],
              "naive_mae": d["naive_mae"], "latency_p99": d["latency_p99"]} for d in days], pk=("model_id", "date"))
        db["drift_checks"].insert_all(
            [{"model_id": d["model_id"], "as_of": d["as_of"], "window_days": 30, "overall_drift": int(flag),
              "severity": "moderate" if flag else "none", "reasons_json": "[]", "report_json": "{}",
              "created_at": "bench"} for d, flag in zip(days, drifting)])
        db["alerts"].insert_all(
            [{"dedup_key": f"{d['model_id']}|drift|{d['as_of']}", "model_id": d["model_id"], "kind": "drift",
              "severity": "warning", "message": "bench", "created_at": d["as_of"],
              "acknowledged_at": d["as_of"] if i % 20 else None} for i, d in enumerate(days) if i % 10 == 0])
        db["audit_log"].insert_all(
            [{"at": f"{day}T06:00:00Z", "actor": "scheduler", "action": "daily_cycle", "target": "all",
              "details_json": json.dumps({"as_of": day, "ok": 6, "failed": 0, "seconds": 3.0})}
             for day in sorted({d["as_of"] for d in days})])


def timed(fn, runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        out.append(time.perf_counter() - started)
    return out


def reference_tickers() -> list[dict]:
    """What the first Home page did: per ticker, the registry and the pandas prediction log."""
    from core.market import available_symbols, coverage
    from core.predict import live_performance
    from core.registry import deployed_model

    rows = []
    for symbol in available_symbols():
        model = deployed_model(symbol)
        rows.append({"symbol": symbol, "span": coverage(symbol), "model": model and model["model_id"],
                     "live": live_performance(symbol, days=30) if model else None})
    return rows


def fmt(values: list[float]) -> str:
    return f"median {statistics.median(values) * 1000:7.1f} ms, max {max(values) * 1000:7.1f} ms (n={len(values)})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", default="/tmp/mlsa-home-bench", help="scratch folder for the demo database")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    use_scratch(Path(args.dir))
    ensure_demo()
    add_year_of_monitoring()

    from streamlit.testing.v1 import AppTest

    from core.dashboard import load_dashboard
    from core.store import get_db

    db = get_db()
    names = ("deployed tickers", "predictions", "daily_metrics", "drift_checks", "alerts", "experiments")
    counts = db.execute(
        "SELECT (SELECT COUNT(*) FROM models WHERE status = 'deployed'), (SELECT COUNT(*) FROM predictions), "
        "(SELECT COUNT(*) FROM daily_metrics), (SELECT COUNT(*) FROM drift_checks), (SELECT COUNT(*) FROM alerts), "
        "(SELECT COUNT(*) FROM experiments)"
    ).fetchone()
    print(f"database {os.environ['MLSA_DB_PATH']}: " + ", ".join(f"{n} {name}" for name, n in zip(names, counts)))

    home = str(ROOT / "Home.py")
    cold_total, cold_run = [], []
    for _ in range(3):
        out = subprocess.run([sys.executable, "-c", COLD_SCRIPT.format(home=home)], cwd=ROOT, env=os.environ,
                             capture_output=True, text=True, check=True).stdout.split()
        cold_total.append(float(out[-2]))
        cold_run.append(float(out[-1]))
    print(f"Home cold, fresh process incl. imports : {fmt(cold_total)}")
    print(f"Home cold, first run (streamlit loaded): {fmt(cold_run)}  <- first visitor of a new server")

    def warm() -> None:
        app = AppTest.from_file(home, default_timeout=120).run()
        assert not app.exception, app.exception

    warm()
    warm_times = timed(warm, args.runs)
    print(f"Home warm, new AppTest session         : {fmt(warm_times)}")

    load_dashboard()
    ours = timed(load_dashboard, args.runs)
    reference_tickers()
    reference = timed(reference_tickers, args.runs)
    print(f"data: load_dashboard (all concerns)    : {fmt(ours)}")
    print(f"data: reference (per-ticker pandas)    : {fmt(reference)}")
    print(f"ratio reference / load_dashboard       : {statistics.median(reference) / statistics.median(ours):.1f}x "
          "(the reference covers only tickers and live error)")
    worst = max(max(cold_run), max(warm_times))
    print(f"goal < 2 s for a page load (first visitor or later): {'met' if worst < 2 else 'NOT met'} (worst {worst:.2f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
