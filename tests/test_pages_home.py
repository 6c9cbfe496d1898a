"""Home through AppTest: the dashboard on an empty database and on a registry with monitoring data."""
import json
import sqlite3

import pandas as pd
import pytest
from conftest import ROOT, page_app

from core.predict import live_performance
from core.text import escape_markdown
from core.store import close_all, get_db


def _metrics(at) -> dict:
    return {m.label: (m.value, m.delta) for m in at.metric}


def _linked_pages(at) -> list[str]:
    return [element.proto.page for element in at.get("page_link")]


def test_home_on_an_empty_database(fresh_db):
    at = page_app().run()
    assert not at.exception
    metrics = _metrics(at)
    assert metrics["Deployed tickers"][0].startswith("0 / ") and metrics["Last scheduler run"][0] == "never"
    assert metrics["Open alerts"][0] == "0" and metrics["Running A/B tests"][0] == "0"
    tickers = at.dataframe[0].value
    assert {"AAPL", "MSFT", "^GSPC"} <= set(tickers["ticker"]) and (tickers["deployed model"] == "none").all()
    texts = [md.value for md in at.markdown]
    assert "No experiment is running." in texts and "No open alerts." in texts
    assert any("daily cycle has not run yet" in t for t in texts)
    assert any("No live predictions" in i.value for i in at.info)
    linked = set(_linked_pages(at))  # page names: "Model_Management" for pages/2_Model_Management.py
    existing = {path.stem.split("_", 1)[1] for path in (ROOT / "pages").glob("*.py")}
    assert {"Forecast", "Model_Management"} <= linked <= existing


@pytest.fixture()
def monitored_copy(demo_registry, tmp_path, monkeypatch):
    """A copy of the demo database with a drift check, alerts, an A/B test, daily metrics and a
    failed scheduler run added (the shared registry stays untouched)."""
    copy = tmp_path / "app.db"
    target = sqlite3.connect(copy)
    get_db().conn.backup(target)
    target.close()
    monkeypatch.setenv("MLSA_DB_PATH", str(copy))
    db = get_db()
    aapl, msft = demo_registry["AAPL"], demo_registry["MSFT"]
    # start from known monitoring state, whatever the demo's own replay wrote
    for statement in ("DELETE FROM drift_checks", "DELETE FROM alerts", "DELETE FROM experiment_arms",
                      "DELETE FROM experiments", "DELETE FROM daily_metrics", "DELETE FROM audit_log WHERE action = 'daily_cycle'"):
        db.execute(statement)
    db["drift_checks"].insert_all([
        {"model_id": aapl, "as_of": "2012-06-01", "window_days": 30, "overall_drift": 0, "severity": "none",
         "reasons_json": "[]", "report_json": "{}", "created_at": "2026-01-01T00:00:00Z"},
        {"model_id": aapl, "as_of": "2012-07-02", "window_days": 30, "overall_drift": 1, "severity": "significant",
         "reasons_json": "[]", "report_json": "{}", "created_at": "2026-01-02T00:00:00Z"},
    ])
    db["alerts"].insert_all([
        {"dedup_key": "home|a", "model_id": aapl, "kind": "drift", "severity": "critical", "message": "PSI 0.4 on rsi_14",
         "created_at": "2026-01-02T00:00:00Z", "acknowledged_at": None},
        {"dedup_key": "home|b", "model_id": msft, "kind": "latency", "severity": "warning", "message": "P95 up",
         "created_at": "2026-01-01T00:00:00Z", "acknowledged_at": None},
        {"dedup_key": "home|c", "model_id": msft, "kind": "accuracy", "severity": "critical", "message": "old",
         "created_at": "2025-12-01T00:00:00Z", "acknowledged_at": "2025-12-02T00:00:00Z"},
    ])
    experiment_id = db["experiments"].insert(
        {"name": "home test", "symbol": "MSFT", "status": "running", "created_at": "2026-01-01T00:00:00Z",
         "start_date": "2012-06-01", "end_date": "2012-08-30", "min_samples": 30, "confidence_level": 0.95,
         "metric": "mae", "shadow": 0}).last_pk
    db["experiment_arms"].insert({"experiment_id": experiment_id, "arm": "A", "model_id": msft, "traffic_share": 1.0})
    db["daily_metrics"].insert_all([
        {"model_id": aapl, "date": f"2012-05-{day:02d}", "n_predictions": 1, "mae": 0.5 + day / 100, "naive_mae": 0.5}
        for day in range(1, 29)
    ])
    db["audit_log"].insert({"at": "2026-01-03T06:00:00Z", "actor": "scheduler", "action": "daily_cycle", "target": "all",
                            "details_json": json.dumps({"as_of": "2012-07-02", "ok": 1, "failed": 1, "seconds": 2.5})})
    yield demo_registry
    close_all()


def test_home_with_monitoring_data(monitored_copy):
    at = page_app().run()
    assert not at.exception
    metrics = _metrics(at)
    assert metrics["Deployed tickers"][0].startswith(f"{len(monitored_copy)} / ")
    assert metrics["Open alerts"] == ("2", "1 critical")
    assert metrics["Running A/B tests"][0] == "1"
    assert metrics["Last scheduler run"] == ("2012-07-02", "failed (1 models)")
    tickers = at.dataframe[0].value.set_index("ticker")
    aapl, msft = tickers.loc["AAPL"], tickers.loc["MSFT"]
    assert aapl["deployed model"] == monitored_copy["AAPL"]
    assert aapl["last drift"] == "⚠️ drift (significant)" and aapl["drift checked"] == "2012-07-02"
    assert msft["last drift"] == "no drift check yet"
    assert aapl["certification"] in {"✅ certified", "❌ failed (override)"}  # the demo certifies before deploying
    live = live_performance("MSFT", days=30, model_id=monitored_copy["MSFT"])
    assert msft["live MAE $ (30 d)"] == pytest.approx(live["mae"]) and msft["skill (30 d)"] == pytest.approx(live["skill"])
    frames = [df.value for df in at.dataframe]
    assert any("home test" in set(f.get("name", [])) for f in frames)
    alerts = next(f for f in frames if "severity" in f.columns)
    assert list(alerts["message"]) == ["PSI 0.4 on rsi_14", "P95 up"]  # newest first, acknowledged ones hidden
    assert len(at.get("plotly_chart")) == 2  # AAPL from daily_metrics, MSFT from the prediction log
    captions = " ".join(c.value for c in at.caption)
    assert "daily_metrics" not in captions and "prediction log" not in captions  # no internal table names
    assert any("20-day MAE" in md.value for md in at.markdown)  # each card says what it plots
    assert {"severity", "kind", "message"} <= set(alerts.columns)
    assert list(tickers.columns[:7]) == ["deployed model", "verdict", "skill (30 d)", "last drift", "drift checked",
                                         "open alerts", "certification"]  # what an analyst acts on comes first
    assert aapl["open alerts"] == "1 (1 critical)" and msft["open alerts"] == "1"
    assert any("failed for 1 model(s)" in md.value for md in at.markdown)


def test_the_demo_shows_a_complete_product_from_the_first_start(demo_registry):
    """The demo runs the real daily cycle over its last replayed days: Home shows a scheduler run, and
    Monitoring's sources (cycle history, error rates, daily metrics) are filled, not "never"."""
    from core import demo
    from core.cycle import cycle_history, error_rates

    app = page_app().run()
    assert not app.exception
    metrics = {m.label: (m.value, m.delta) for m in app.metric}
    assert metrics["Last scheduler run"][0] != "never"
    from core.dashboard import last_scheduler_run, run_scope
    from core.store import get_db

    run = last_scheduler_run(get_db())  # a cycle may cover some tickers only (the demo's loop window: one): it says which
    sentence = next(md.value for md in app.markdown if md.value.startswith("Last daily cycle for"))
    assert run["tickers"] and set(run["tickers"]) <= set(demo_registry) and "model(s) ok" in sentence
    assert sentence.endswith(f"; {escape_markdown(run_scope(run))}).") and run_scope(run) == ", ".join(run["tickers"])
    history = cycle_history()
    assert len(history) >= demo.CYCLE_DAYS and history["failed"].sum() == 0
    last_day = history["as_of"].iloc[-1]
    assert set(error_rates(pd.Timestamp(last_day) + pd.Timedelta(days=1), runs=5)) == set(demo_registry.values())


HOSTILE = "[win](http://evil.example) <img src=x onerror=alert(1)> **now** $x$"


def test_home_shows_stored_user_text_literally(fresh_db):
    """Experiment names and alert messages are data: shown as typed, never rendered as links or HTML."""
    from core.alerts import raise_alert

    fresh_db["experiments"].insert({"name": HOSTILE, "symbol": "AAPL", "status": "running", "start_date": "2012-01-03",
                                    "end_date": "2012-06-29", "min_samples": 30, "confidence_level": 0.95, "metric": "mae"})
    raise_alert("m1", "drift", "critical", HOSTILE, "2012-01-03", db=fresh_db)
    at = page_app().run()
    assert not at.exception
    tables = [df.value for df in at.dataframe]
    assert any((t.get("name") == HOSTILE).any() for t in tables if "name" in t)
    assert any((t.get("message") == HOSTILE).any() for t in tables if "message" in t)
    rendered = [e.value for kind in ("markdown", "caption", "info", "error", "success") for e in at.get(kind)]
    assert not any("](http" in text or "<img" in text for text in rendered)


def test_home_on_a_damaged_database_shows_the_words_not_a_traceback(tmp_path, monkeypatch):
    path = tmp_path / "app.db"
    path.write_bytes(b"not a database at all" * 200)
    monkeypatch.setenv("MLSA_DB_PATH", str(path))
    at = page_app().run()
    assert not at.exception
    assert len(at.error) == 1 and "damaged or not an SQLite database" in at.error[0].value
    assert "backup" in at.error[0].value and "move" not in at.error[0].value.lower()


def test_a_deploy_does_not_move_live_history(registry_copy, demo_registry):
    """Scores belong to the model that earned them: after a deploy, the new model has no live history
    (Home and Forecast say so) and the old model keeps its own."""
    from core.registry import deploy, list_models

    old = demo_registry["MSFT"]  # its candidate never served (AAPL's did, in the demo's A/B test)
    before = live_performance("MSFT", days=30, model_id=old)
    assert before is not None and before["n"] > 0
    new = next(m["model_id"] for m in list_models("MSFT") if m["model_id"] != old and m["model_type"] != "naive")
    deploy(new, actor="test", reason="test: a deploy must not move live history", override=True)
    assert live_performance("MSFT", days=30, model_id=new) is None
    after = live_performance("MSFT", days=30, model_id=old)
    assert (after["n"], after["mae"], after["skill"]) == (before["n"], before["mae"], before["skill"])
    home = page_app().run()
    assert not home.exception
    row = home.dataframe[0].value.set_index("ticker").loc["MSFT"]
    assert row["deployed model"] == new and row["verdict"] == "no live history yet" and pd.isna(row["skill (30 d)"])
    forecast = page_app("pages/1_Forecast.py")
    forecast.query_params["ticker"] = "MSFT"  # a deep link
    forecast = forecast.run()
    assert not forecast.exception
    boxes = [e.value for kind in ("success", "warning") for e in forecast.get(kind)]
    assert any("no live history yet" in text and new in text.replace("\\", "") for text in boxes)
    assert not any("over the last 30 days live" in e.value for e in forecast.success)
