"""The daily cycle: metrics by hand, idempotency, isolation of a failing model, clean stop, last run for Home."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pytest


@dataclass
class FakeReport:
    """The shape of core.drift's DriftReport that the cycle reads."""

    overall_drift: bool = False
    severity: str = "none"
    reasons: list = field(default_factory=list)
    features: pd.DataFrame = field(default_factory=lambda: pd.DataFrame({"psi": [0.01, 0.02]}, index=["a", "b"]))
    performance: dict = field(default_factory=lambda: {"degraded": False, "change_pct": 0.0})
    retrain: bool = False


def install_fake_drift(monkeypatch, report_for=lambda model_id, as_of: FakeReport()) -> list:
    """Replace the drift check (core.drift.check_model) and the retrain trigger (should_retrain, as core.retrain
    uses it) with fakes; the fake check stores checks like the real one."""
    from core.store import get_db, to_json, transaction, utc_now

    calls: list = []

    def check_model(model_id, as_of, window_days=30, db=None, store=True, cache=None):
        db = db or get_db()
        report = report_for(model_id, as_of)
        calls.append((model_id, as_of, store))
        if store:
            with transaction(db):
                db["drift_checks"].insert({
                    "model_id": model_id, "as_of": f"{pd.Timestamp(as_of):%Y-%m-%d}", "window_days": window_days,
                    "overall_drift": int(report.overall_drift), "severity": report.severity,
                    "reasons_json": to_json(report.reasons),
                    "report_json": to_json({"features": [{"psi": float(v)} for v in report.features["psi"]]}),
                    "created_at": utc_now(),
                })
        return report

    from core import drift, retrain

    monkeypatch.setattr(drift, "check_model", check_model)  # the cycle calls drift.check_model
    monkeypatch.setattr(retrain, "should_retrain", lambda r: (r.retrain, "fake drift"))  # where the trigger is judged
    return calls


def _last_logged_day(db, symbol: str) -> str:
    return db.execute("SELECT MAX(as_of) FROM predictions WHERE symbol = ?", [symbol]).fetchone()[0]


def test_daily_metrics_match_a_hand_computation(registry_copy, demo_registry):
    from core.metrics import compute_daily_metrics
    from core.predict import prediction_log
    from core.training import price_metrics

    model_id = demo_registry["AAPL"]
    frame = compute_daily_metrics("2000-01-01", "2100-01-01", [model_id])
    log = prediction_log(model_id=model_id, served_only=False).dropna(subset=["actual_close"])
    day = log["as_of"].iloc[10]
    rows = log[log["as_of"] == day]
    expected = price_metrics(rows["last_close"], rows["actual_close"], rows["predicted_close"])
    got = frame[frame["date"] == day].iloc[0]
    assert got["mae"] == pytest.approx(expected["mae"])
    assert got["rmse"] == pytest.approx(expected["rmse"])
    assert got["mape"] == pytest.approx(expected["mape"])
    assert got["directional_accuracy"] == pytest.approx(expected["directional_accuracy"])
    assert got["naive_mae"] == pytest.approx(np.mean(np.abs(rows["last_close"] - rows["actual_close"])))
    assert got["latency_p95"] == pytest.approx(np.percentile(rows["latency_ms"], 95))
    assert frame["n_predictions"].sum() == len(prediction_log(model_id=model_id, served_only=False))
    # the last day's prediction has no actual yet: counted, but no error columns
    assert np.isnan(frame.iloc[-1]["mae"]) and frame.iloc[-1]["n_predictions"] >= 1


def test_cycle_is_idempotent_per_day_and_recorded_for_home(registry_copy, demo_registry, monkeypatch):
    from core.cycle import last_cycle_run, run_daily_cycle

    calls = install_fake_drift(monkeypatch, lambda m, d: FakeReport(True, "significant", ["fake"],
                                                                    pd.DataFrame({"psi": [0.4, 0.05]}, index=["a", "b"])))
    db = registry_copy
    day = _last_logged_day(db, "AAPL")

    def counts():
        return {t: db[t].count for t in ("daily_metrics", "drift_checks", "alerts", "retrain_jobs", "predictions")}

    first = run_daily_cycle(day, db=db)
    after_first = counts()
    second = run_daily_cycle(day, db=db)
    assert counts() == after_first
    assert first["ok"] == 2 and first["failed"] == 0
    assert {e["model_id"] for e in first["models"]} == set(demo_registry.values())
    assert all(set(e["alerts"]) >= {"drift", "psi"} for e in first["models"] if e["symbol"] == "AAPL")
    assert all(e["alerts"] == [] for e in second["models"])  # de-duplicated
    # checked on both runs, stored at most once per (model, day) whatever was stored before
    assert len(calls) == 4 and not any(store for _, _, store in calls[2:])
    assert db.execute("SELECT COUNT(*) FROM drift_checks WHERE as_of = ?", [day]).fetchone()[0] == 2
    last = last_cycle_run(db)
    assert last["as_of"] == day and last["succeeded"] and last["ok"] == 2 and last["seconds"] >= 0
    assert db.execute("SELECT COUNT(*) FROM audit_log WHERE action = 'daily_cycle' AND actor = 'scheduler'").fetchone()[0] == 2


def test_one_failing_model_does_not_stop_the_others(registry_copy, demo_registry, monkeypatch):
    from core import cycle

    install_fake_drift(monkeypatch)
    original = cycle.STEP_FUNCTIONS["metrics"]

    def broken_for_aapl(model, day, context, db):
        if model["symbol"] == "AAPL":
            raise RuntimeError("disk full")
        return original(model, day, context, db)

    monkeypatch.setitem(cycle.STEP_FUNCTIONS, "metrics", broken_for_aapl)
    summary = cycle.run_daily_cycle(_last_logged_day(registry_copy, "MSFT"), db=registry_copy)
    by_symbol = {e["symbol"]: e for e in summary["models"]}
    assert by_symbol["AAPL"]["status"] == "failed" and by_symbol["AAPL"]["failed_steps"] == ["metrics"]
    assert "disk full" in by_symbol["AAPL"]["errors"]["metrics"]
    assert by_symbol["AAPL"]["steps_run"] == len(cycle.STEPS)  # later steps still ran
    assert by_symbol["MSFT"]["status"] == "ok"
    assert summary["failed"] == 1 and not cycle.last_cycle_run(registry_copy)["succeeded"]
    later = pd.Timestamp(summary["as_of"]) + pd.Timedelta(days=1)
    rates = cycle.error_rates(later, runs=1, db=registry_copy)  # this run only, not the demo's cycles
    assert rates[demo_registry["AAPL"]] == pytest.approx(1 / len(cycle.STEPS))
    assert rates[demo_registry["MSFT"]] == 0.0


def test_stop_request_ends_the_cycle_between_steps(registry_copy, monkeypatch):
    from core.cycle import run_daily_cycle

    install_fake_drift(monkeypatch)
    checks = iter([False, False, False, True])
    summary = run_daily_cycle(_last_logged_day(registry_copy, "AAPL"), db=registry_copy,
                              should_stop=lambda: next(checks, True))
    assert summary["stopped"] and len(summary["models"]) == 1
    assert summary["models"][0]["status"] == "stopped" and summary["models"][0]["steps_run"] == 2


def test_cycle_makes_the_days_forecast_once(registry_copy, monkeypatch):
    from core.market import load_prices
    from core.cycle import run_daily_cycle

    install_fake_drift(monkeypatch)
    db = registry_copy
    last = pd.Timestamp(_last_logged_day(db, "AAPL"))
    next_day = load_prices("AAPL", start=last + pd.Timedelta(days=1)).index[0]
    before = db["predictions"].count
    run_daily_cycle(next_day, db=db)
    run_daily_cycle(next_day, db=db)
    made = db.execute("SELECT COUNT(*) FROM predictions WHERE symbol = 'AAPL' AND as_of = ?",
                      [f"{next_day:%Y-%m-%d}"]).fetchone()[0]
    assert made == 1 and db["predictions"].count >= before + 1
    filled = db.execute("SELECT actual_close FROM predictions WHERE symbol = 'AAPL' AND as_of = ?",
                        [f"{last:%Y-%m-%d}"]).fetchone()[0]
    assert filled == pytest.approx(float(load_prices("AAPL", start=next_day, end=next_day)["close"].iloc[0]))


def test_psi_history_reads_the_largest_psi_of_each_check(registry_copy, demo_registry, monkeypatch):
    from core.metrics import psi_history
    from core.cycle import run_daily_cycle

    install_fake_drift(monkeypatch, lambda m, d: FakeReport(features=pd.DataFrame({"psi": [0.31, 0.02]}, index=["a", "b"])))
    registry_copy.execute("DELETE FROM drift_checks")
    registry_copy.conn.commit()
    run_daily_cycle(_last_logged_day(registry_copy, "AAPL"), db=registry_copy)
    history = psi_history(model_id=demo_registry["AAPL"], db=registry_copy)
    assert history["max_psi"].tolist() == [pytest.approx(0.31)]


def test_cycle_with_the_real_drift_check_is_idempotent(registry_copy):
    from core.cycle import run_daily_cycle

    db = registry_copy
    day = _last_logged_day(db, "MSFT")
    first = run_daily_cycle(day, db=db)
    tables = ("daily_metrics", "drift_checks", "alerts", "retrain_jobs", "predictions")
    counts = {t: db[t].count for t in tables}
    second = run_daily_cycle(day, db=db)
    assert {t: db[t].count for t in tables} == counts
    assert first["failed"] == 0, first
    assert [e["drift"] for e in first["models"]] == [e["drift"] for e in second["models"]]
    assert db.execute("SELECT COUNT(*) FROM drift_checks WHERE as_of = ?", [day]).fetchone()[0] == 2


def test_psi_history_reads_the_real_drift_reports(registry_copy, demo_registry):
    from core.metrics import psi_history

    history = psi_history(symbol="AAPL", db=registry_copy)
    stored = registry_copy.execute("SELECT COUNT(*) FROM drift_checks c JOIN models m ON m.model_id = c.model_id "
                                   "WHERE m.symbol = 'AAPL'").fetchone()[0]
    assert len(history) == stored > 0  # the demo backfills weekly checks
    assert history["max_psi"].notna().all() and (history["max_psi"] >= 0).all()


def test_threshold_labels_sit_on_their_lines_on_a_log_axis():
    """Plotly places an hline's own label in linear units; on a log axis it floated away from its line."""
    import math

    import pandas as pd

    from core.charts import psi_history_figure

    history = pd.DataFrame({"as_of": pd.to_datetime(["2018-01-05", "2018-01-12"]), "max_psi": [8.3, 4.1],
                            "severity": ["none", "moderate"]})
    fig = psi_history_figure(history, threshold=0.25, moderate=0.10)
    labels = {a.text: a.y for a in fig.layout.annotations if a.text and a.text.startswith(("PSI test", "moderate"))}
    assert labels == {"PSI test 0.25": math.log10(0.25), "moderate 0.1": math.log10(0.10)}
    assert {shape.y0 for shape in fig.layout.shapes} == {0.25, 0.10} and fig.layout.yaxis.type == "log"
