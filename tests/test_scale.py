"""Scale (issue 16): page loads read summaries through indexes, never a scan of the prediction log; the daily
metrics step survives predictions without latency; pages import no heavy library they do not use."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = ["Home.py", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "pages").glob("*.py"))]


# an index search bounded to a window of the log: a day range or day, one experiment, one row
_BOUNDED = re.compile(r"\((?:[^)]*\b(?:as_of[>=]|target_date[>=]|experiment_id=|rowid=|id=)|symbol=\? AND target_date)")


def _scans_of_predictions(db, sql: str) -> list[str]:
    """The plan lines of `sql` that read `predictions` (by name or alias) beyond a window: a full scan, or an
    index search on a ticker or model alone (its whole history, which grows without bound)."""
    names = {"predictions"} | {m.group(1) for m in re.finditer(r"\bpredictions\s+(?:AS\s+)?(?!WHERE|JOIN|ON|GROUP|ORDER|LEFT)(\w+)",
                                                                  sql, re.IGNORECASE)}
    plan = [row[-1] for row in db.execute("EXPLAIN QUERY PLAN " + sql).fetchall()]
    reads = [line for line in plan if re.match(rf"(SCAN|SEARCH) ({'|'.join(map(re.escape, names))})\b", line)]
    walks_back = re.search(r"as_of DESC LIMIT", sql, re.IGNORECASE)  # a walk back from a day, stopped by a LIMIT
    return [line for line in reads if line.startswith("SCAN") or not (_BOUNDED.search(line) or walks_back)]


@pytest.fixture()
def traced_sql(monkeypatch):
    """Every SQL statement run on connections opened from now on (the page's thread opens its own)."""
    from core import store

    statements: list[str] = []
    real_open = store._open

    def traced_open(path, timeout_s):
        db = real_open(path, timeout_s)
        db.conn.set_trace_callback(statements.append)
        return db

    store.close_all()
    monkeypatch.setattr(store, "_open", traced_open)
    yield statements
    store.close_all()


@pytest.mark.parametrize("page", PAGES)
def test_a_page_load_never_scans_the_prediction_log(registry_copy, traced_sql, page):
    from streamlit.testing.v1 import AppTest

    from core.store import get_db

    app = AppTest.from_file(str(ROOT / page), default_timeout=120).run()
    assert not app.exception, app.exception
    reads = [s for s in traced_sql if re.search(r"\bpredictions\b", s, re.IGNORECASE)
             and s.lstrip().upper().startswith(("SELECT", "WITH"))]
    assert reads or page != "Home.py"  # Home reads the log (live error), so the check below is not vacuous there
    db = get_db()  # the test thread's own connection (the fixture closed the one registry_copy opened)
    scans = {sql[:200]: lines for sql in reads if (lines := _scans_of_predictions(db, sql))}
    assert not scans, f"{page} scans the prediction log: {json.dumps(scans, indent=1)}"


def test_the_plan_check_sees_a_scan(registry_copy):
    """The check above can fail: a read filtering on an unindexed column is reported."""
    assert _scans_of_predictions(registry_copy, "SELECT COUNT(*) FROM predictions p WHERE p.latency_ms > 5")
    assert _scans_of_predictions(registry_copy, "SELECT COUNT(*) FROM predictions WHERE model_id = 'x'")  # all its history
    assert _scans_of_predictions(registry_copy, "SELECT COUNT(*) FROM predictions WHERE model_id = 'x' AND as_of < '2012'")
    assert not _scans_of_predictions(registry_copy, "SELECT COUNT(*) FROM predictions WHERE model_id = 'x' AND as_of > '2012'")
    assert not _scans_of_predictions(registry_copy, "SELECT COUNT(*) FROM predictions WHERE experiment_id = 3")


def test_migration_005_indexes_the_per_model_reads(registry_copy):
    plan = " ".join(r[-1] for r in registry_copy.execute(
        "EXPLAIN QUERY PLAN SELECT as_of FROM predictions WHERE model_id = 'x' AND as_of >= '2012-01-01'").fetchall())
    assert "predictions_model_as_of" in plan
    plan = " ".join(r[-1] for r in registry_copy.execute(
        "EXPLAIN QUERY PLAN UPDATE predictions SET actual_close = 1 WHERE actual_close IS NULL AND target_date <= '2013' "
        "AND symbol = 'AAPL'").fetchall())
    assert "predictions_unscored" in plan  # the backfill reads only the unscored rows, not the ticker's whole log


def test_live_errors_equal_the_forecast_pages_numbers(registry_copy, demo_registry):
    """The indexed query returns what `live_performance(..., model_id=)` computes from the whole log."""
    from core.dashboard import live_errors
    from core.predict import live_performance

    live = live_errors(registry_copy).set_index("symbol")
    as_of = "2013-01-15"
    earlier = live_errors(registry_copy, as_of, days=10).set_index("symbol")
    for symbol, model_id in demo_registry.items():
        expected = live_performance(symbol, days=30, model_id=model_id)
        assert live.loc[symbol, "days"] == expected["n"]  # one served forecast a day
        assert live.loc[symbol, "mae"] == pytest.approx(expected["mae"])
        assert live.loc[symbol, "naive_mae"] == pytest.approx(expected["naive_mae"])
        assert (live.loc[symbol, "start"], live.loc[symbol, "end"]) == (expected["start"], expected["end"])
        log = registry_copy.execute(
            "SELECT as_of, ABS(predicted_close - actual_close) FROM predictions WHERE model_id = ? AND served = 1 "
            "AND actual_close IS NOT NULL AND as_of <= ? ORDER BY as_of", [model_id, as_of]).fetchall()
        days = sorted({d for d, _ in log})[-10:]
        assert earlier.loc[symbol, "mae"] == pytest.approx(np.mean([e for d, e in log if d in days]))
        assert earlier.loc[symbol, "start"] == days[0]


def test_sparkline_reads_only_its_days_and_falls_back_to_the_log(registry_copy, demo_registry):
    """From daily_metrics the last window+points days; without metrics rows, the same days from the served log."""
    from core.dashboard import SPARK_POINTS, SPARK_WINDOW, daily_errors, rolling_mae
    from core.predict import prediction_log

    symbol, model_id = "AAPL", demo_registry["AAPL"]
    from_metrics = rolling_mae(daily_errors(registry_copy))[symbol]
    with registry_copy.conn:
        registry_copy.execute("DELETE FROM daily_metrics WHERE model_id = ?", [model_id])
    daily = daily_errors(registry_copy)
    assert set(daily.loc[daily["symbol"] == symbol, "source"]) == {"prediction log"}
    from_log = rolling_mae(daily)[symbol]
    log = prediction_log(symbol, model_id=model_id).dropna(subset=["actual_close"])
    per_day = log.groupby("as_of")["abs_error"].mean()
    expected = per_day.rolling(SPARK_WINDOW, min_periods=1).mean().iloc[-SPARK_POINTS:]
    assert len(daily[daily["symbol"] == symbol]) == min(len(per_day), SPARK_POINTS + SPARK_WINDOW - 1)
    np.testing.assert_allclose(from_log.to_numpy(), expected.to_numpy())
    assert list(from_log.index) == list(pd.to_datetime(expected.index))
    assert from_metrics.attrs == {"source": "daily_metrics", "model_id": model_id}
    assert len(from_metrics) == SPARK_POINTS or len(from_metrics) < SPARK_POINTS + SPARK_WINDOW - 1


def test_home_draws_cards_for_the_weakest_tickers_and_a_trend_for_all():
    from core.dashboard import SPARK_CARDS, featured

    symbols = [f"T{i:02d}" for i in range(SPARK_CARDS + 5)]
    skills = [0.05 * (i % 7) - 0.1 for i in range(len(symbols))]
    skills[3] = None  # no live history yet: shown first (nothing says it is fine)
    tickers = pd.DataFrame({"ticker": symbols, "skill (30 d)": skills})
    lines = {s: pd.Series([1.0, 2.0], index=pd.to_datetime(["2020-01-01", "2020-01-02"])) for s in symbols}
    picked = featured(lines, tickers)
    by_skill = sorted(range(len(symbols)), key=lambda i: (-np.inf if skills[i] is None else skills[i], i))
    assert list(picked) == sorted(symbols[i] for i in by_skill[:SPARK_CARDS])
    assert "T03" in picked and len(picked) == SPARK_CARDS
    assert featured(dict(list(lines.items())[:3]), tickers) == dict(list(lines.items())[:3])  # few: every one


def test_daily_metrics_with_no_latency_recorded(registry_copy):
    """Predictions logged through `abtest.record_prediction` have no latency (and maybe no last close): the
    metrics step used to raise TypeError ('quantile' on an all-NULL column); now the errors are computed and
    the latency percentiles are empty."""
    from core.abtest import create_experiment, record_actual, record_prediction
    from core.metrics import compute_daily_metrics, upsert_daily_metrics
    from core.registry import list_models

    other = next(m["model_id"] for m in list_models("MSFT") if m["status"] != "deployed")
    champion = next(m["model_id"] for m in list_models("MSFT") if m["status"] == "deployed")
    experiment_id = create_experiment("no latency", "MSFT", [(champion, 0.5), (other, 0.5)], "2012-03-01", duration_days=60)
    days = pd.bdate_range("2012-03-01", periods=6)
    predicted, actual = np.array([30.0, 31.0, 29.5, 30.2, 30.8, 31.1]), np.array([30.5, 30.0, 30.0, 30.0, 31.0, 30.0])
    for day, guess, close in zip(days, predicted, actual):
        record_actual(record_prediction(experiment_id, other, float(guess), as_of=day), float(close))
    start, end = days[0], days[-1]
    assert registry_copy.execute("SELECT COUNT(*) FROM predictions WHERE model_id = ? AND as_of BETWEEN ? AND ? "
                                 "AND latency_ms IS NOT NULL", [other, f"{start:%Y-%m-%d}", f"{end:%Y-%m-%d}"]).fetchone()[0] == 0
    frame = compute_daily_metrics(start, end, [other])
    assert list(frame["mae"]) == pytest.approx(list(np.abs(predicted - actual)))
    assert frame[["latency_p50", "latency_p95", "latency_p99"]].isna().all().all()
    assert frame["directional_accuracy"].isna().all()  # no last close: the direction is unknown, not a miss
    assert upsert_daily_metrics(start, end, [other]) == len(days)
    stored = registry_copy.execute("SELECT COUNT(*), COUNT(latency_p95) FROM daily_metrics WHERE model_id = ?",
                                   [other]).fetchone()
    assert stored == (len(days), 0)


HEAVY = ("sklearn", "xgboost", "shap", "lime")
IMPORTS = """
import json, sys
from streamlit.testing.v1 import AppTest
app = AppTest.from_file({page!r}, default_timeout=120).run()
print(json.dumps({{"exception": bool(app.exception), "heavy": sorted({{m.split('.')[0] for m in sys.modules}} & set({heavy!r}))}}))
"""


@pytest.mark.parametrize("page", [p for p in PAGES if "Explainability" not in p])
def test_a_page_imports_no_heavy_library_it_does_not_use(registry_copy, page):
    """A page's first visit after a server start pays for every import: only Explainability needs shap/lime
    (and sklearn for them), Forecast the model's own library; the others read stored numbers. A fresh process,
    as a new server is."""
    from core.config import get_settings

    settings = get_settings()
    env = {"MLSA_DB_PATH": str(settings.db_path), "MLSA_MODELS_DIR": str(settings.models_dir), "MLSA_OFFLINE": "1",
           "PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", IMPORTS.format(page=str(ROOT / page), heavy=HEAVY)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    # Forecast runs the deployed model on load (the day's forecast): unpickling a forest imports sklearn
    allowed = {"sklearn", "xgboost"} if "Forecast" in page else set()
    assert not result["exception"] and set(result["heavy"]) <= allowed, (result, done.stderr[-2000:])


def test_charts_send_at_most_max_points_per_trace():
    """A 100k-request test: the cumulative line is thinned (its last value kept), the box drawn from quartiles."""
    from core.ab_charts import ab_cumulative_mae_figure, ab_error_distribution_figure
    from core.charts import MAX_POINTS, alerts_timeline_figure, rolling_accuracy_figure

    rng = np.random.default_rng(3)
    n = 100_000
    observations = pd.DataFrame({"id": np.arange(n), "arm": np.where(np.arange(n) % 2, "B", "A"),
                                 "target_date": np.repeat(pd.bdate_range("1990-01-01", periods=n // 10).strftime("%Y-%m-%d"), 10),
                                 "abs_error": rng.exponential(1.0, n)})
    cumulative = ab_cumulative_mae_figure(observations)
    for trace, (_, rows) in zip(cumulative.data, observations.groupby("arm")):
        assert len(trace.x) <= MAX_POINTS and len(trace.y) == len(trace.x)
        assert trace.y[-1] == pytest.approx(rows["abs_error"].mean()) and trace.y[0] == rows["abs_error"].iloc[0]
    boxes = ab_error_distribution_figure(observations)
    for trace, (_, rows) in zip(boxes.data, observations.groupby("arm")):
        assert trace.y is None and not trace.boxpoints
        q1, median, q3 = np.percentile(rows["abs_error"], [25, 50, 75])
        assert (trace.q1[0], trace.median[0], trace.q3[0]) == pytest.approx((q1, median, q3))
        assert trace.upperfence[0] == pytest.approx(rows["abs_error"][rows["abs_error"] <= q3 + 1.5 * (q3 - q1)].max())
    assert len(cumulative.to_json()) + len(boxes.to_json()) < 400_000  # was ~5 MB with every point

    days = pd.bdate_range("1980-01-01", periods=10_000)
    metrics = pd.DataFrame({"date": days, "mae": rng.random(len(days)), "naive_mae": rng.random(len(days)),
                            "directional_accuracy": rng.random(len(days)) * 100})
    assert all(len(t.x) <= MAX_POINTS for t in rolling_accuracy_figure(metrics).data)
    small = ab_error_distribution_figure(observations.head(200))  # a small test still shows every point
    assert small.data[0].boxpoints == "all" and len(small.data[0].y) == 100
    alerts = pd.DataFrame({"day": days, "severity": "warning", "kind": "drift", "message": "x",
                           "acknowledged_at": None})
    timeline = alerts_timeline_figure(alerts)
    assert sum(len(t.x) for t in timeline.data) == len(days)  # events are never thinned away


def test_ab_page_builds_the_download_only_when_asked(registry_copy, monkeypatch):
    from conftest import page_app
    from core.ab_analysis import ExperimentAnalysis

    built = []
    real = ExperimentAnalysis.results_csv
    monkeypatch.setattr(ExperimentAnalysis, "results_csv", lambda self: built.append(1) or real(self))
    at = page_app("pages/4_AB_Tests.py").run()
    assert not at.exception
    assert len(at.get("plotly_chart")) == 4 and not built  # the page drew the test without building its CSV


def test_stored_json_read_by_sqlite_equals_pythons_parse_also_with_nan(registry_copy):
    """Cycle summaries and drift reports are summarised by SQLite's JSON functions; a document it cannot read
    (Python writes NaN as a bare token) falls back to Python. Both give what json.loads of every row gives."""
    from core import drift, drift_view
    from core.cycle import cycle_history
    from core.metrics import _max_psi, psi_history

    model_id, report_id, text = registry_copy.execute(
        "SELECT model_id, id, report_json FROM drift_checks ORDER BY id DESC LIMIT 1").fetchone()
    with registry_copy.conn:
        registry_copy.execute("UPDATE drift_checks SET report_json = ? WHERE id = ?",
                              [text.replace('"drifted_share": ', '"x": NaN, "drifted_share": ', 1), report_id])
        registry_copy.execute("INSERT INTO audit_log (at, actor, action, target, details_json) VALUES (?, ?, ?, ?, ?)",
                              ["2099-01-01T00:00:00Z", "scheduler", "daily_cycle", "scheduler",
                               '{"as_of": "2099-01-01", "ok": 1, "failed": 1, "seconds": NaN, '
                               '"models": [{"steps_run": 4, "failed_steps": ["drift"]}, {"steps_run": 3, "failed_steps": []}]}'])
    assert registry_copy.execute("SELECT COUNT(*) FROM drift_checks WHERE NOT json_valid(report_json)").fetchone()[0] == 1
    reports = [(r[0], json.loads(r[1])) for r in registry_copy.execute(
        "SELECT as_of, report_json FROM drift_checks WHERE model_id = ? ORDER BY as_of, id", [model_id]).fetchall()]

    history = drift.drift_history(model_id)
    assert list(history["drifted_share"].fillna(-1)) == [r["dataset"].get("drifted_share", -1) for _, r in reports]
    codes, psis = drift_view.verdict_history(model_id)
    for as_of, report in reports:
        for feature in report["features"]:
            assert psis.loc[as_of, feature["feature"]] == pytest.approx(feature["psi"], nan_ok=True)
    maxima = psi_history(model_id=model_id)["max_psi"]
    assert len(maxima) == len(reports) and maxima.notna().all()
    for value, (_, report) in zip(maxima, reports):
        assert value == pytest.approx(_max_psi(report))  # the Python walk the page used to run on every report

    runs = cycle_history()
    last = runs.iloc[-1]
    assert (last["as_of"], last["ok"], last["failed"], np.isnan(last["seconds"])) == ("2099-01-01", 1, 1, True)
    assert last["error_rate"] == pytest.approx(1 / 7)
    stored = [json.loads(r[0]) for r in registry_copy.execute(
        "SELECT details_json FROM audit_log WHERE action = 'daily_cycle' ORDER BY id").fetchall()]
    rates = [sum(len(m.get("failed_steps", [])) for m in s.get("models", [])) / max(1, sum(m.get("steps_run", 0)
             for m in s.get("models", []))) for s in stored]
    assert list(runs["error_rate"]) == pytest.approx(rates[-len(runs):])


SCIPY_HEAVY = ("scipy.stats", "scipy.signal")
SCIPY_IMPORTS = IMPORTS.replace("{{m.split('.')[0] for m in sys.modules}}", "set(sys.modules)")


def test_a_page_imports_scipy_only_to_compute(registry_copy):
    """scipy.stats / scipy.signal cost ~2 s of a first visit (they import each other): the pages that only draw
    stored numbers never import them (features' EWM is pandas', the statistics import scipy where they run; Home's
    live-skill interval takes its t quantile from the light scipy.special). Monitoring is not among them: its model
    health tab computes a bootstrap interval (scipy.stats.bootstrap) on load."""
    from core.config import get_settings

    settings = get_settings()
    env = {"MLSA_DB_PATH": str(settings.db_path), "MLSA_MODELS_DIR": str(settings.models_dir), "MLSA_OFFLINE": "1",
           "PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}
    for page in ("Home.py", "pages/3_Drift.py", "pages/2_Model_Management.py"):
        script = SCIPY_IMPORTS.format(page=str(ROOT / page), heavy=SCIPY_HEAVY)
        done = subprocess.run([sys.executable, "-c", script], cwd=ROOT,
                              env=env, capture_output=True, text=True, timeout=300)
        result = json.loads(done.stdout.strip().splitlines()[-1])
        assert not result["exception"] and not result["heavy"], (page, result, done.stderr[-2000:])


BIG_TABLES = ("predictions", "prices", "daily_metrics", "drift_checks", "drift_watch_state", "alerts", "audit_log")


def test_the_daily_cycle_reads_each_tickers_prices_once_through_indexes(registry_copy, demo_registry, traced_sql,
                                                                        monkeypatch):
    """At 100 tickers the cycle read each ticker's prices ~10 times per model (issue 16): now one read per ticker
    (the cycle's PriceCache), and every read of a growing table is an index search, never a scan."""
    from core import cycle, market
    from core.store import get_db

    reads: list[str] = []
    real = market._from_cache
    monkeypatch.setattr(market, "_from_cache", lambda db, symbol, start, end: reads.append(symbol) or
                        real(db, symbol, start, end))
    summary = cycle.run_daily_cycle()
    assert summary["ok"] == len(demo_registry) and not summary["failed"], summary
    assert sorted(reads) == sorted(demo_registry), reads  # one read per ticker, whatever the steps ask for

    db = get_db()
    scans = {}
    for sql in {s for s in traced_sql if s.lstrip().upper().startswith(("SELECT", "WITH"))}:
        plan = [row[-1] for row in db.execute("EXPLAIN QUERY PLAN " + sql).fetchall()]
        full = [line for line in plan if re.match(rf"SCAN ({'|'.join(BIG_TABLES)})\b", line)
                and "USING" not in line and not re.search(r"\bLIMIT\b", sql, re.IGNORECASE)]
        if full or (re.search(r"\bpredictions\b", sql) and _scans_of_predictions(db, sql)):
            scans[sql[:300]] = plan
    assert not scans, json.dumps(scans, indent=1)
