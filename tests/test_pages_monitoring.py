"""The Monitoring page and the retraining section of Model Management, driven through AppTest."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core.store import close_all, get_db
from core.text import escape_markdown


@pytest.fixture(autouse=True)
def direct_deploy(monkeypatch):
    """These tests cover a retrain that deploys right after its gate (MLSA_CHALLENGER_AB_TEST=0); the
    challenger stage's shadow A/B test is tests/test_challenger.py's."""
    monkeypatch.setenv("MLSA_CHALLENGER_AB_TEST", "0")


ROOT = Path(__file__).resolve().parent.parent


def _run(page: str) -> AppTest:
    at = AppTest.from_file(str(ROOT / page), default_timeout=120).run()
    assert not at.exception, at.exception
    return at


def test_monitoring_page_shows_metrics_charts_and_acknowledges(registry_copy):
    from core.alerts import raise_alert
    from core.cycle import run_daily_cycle

    day = registry_copy.execute("SELECT MAX(as_of) FROM predictions WHERE symbol = 'AAPL'").fetchone()[0]
    run_daily_cycle(day, db=registry_copy)
    model_id = registry_copy.execute("SELECT model_id FROM models WHERE status = 'deployed' ORDER BY model_id").fetchone()[0]
    alert_id = raise_alert(model_id, "latency_spike", "warning", "P95 tripled", day)
    at = _run("pages/6_Monitoring.py")
    metrics = {m.label: m.value for m in at.metric}
    assert int(metrics["Predictions"].replace(",", "")) > 100
    assert int(metrics["Open alerts"]) >= 1
    assert "Last daily cycle: as of" in at.caption[0].value
    assert len(at.get("plotly_chart")) >= 6  # volume, latency, error rate, widths, accuracy x2, PSI...
    at.multiselect(key="mon_ack_ids").select(alert_id)
    at = [b for b in at.button if b.label == "Acknowledge selected"][0].click().run()
    assert not at.exception
    assert any("Acknowledged 1 alert" in s.value for s in at.success)
    assert registry_copy.execute("SELECT acknowledged_at FROM alerts WHERE id = ?", [alert_id]).fetchone()[0]


def test_monitoring_page_filters_by_ticker(registry_copy):
    at = _run("pages/6_Monitoring.py")
    at.selectbox(key="mon_symbol").select("MSFT").run()
    assert not at.exception
    assert all(v.startswith(("rf_", "xgb_", "All")) and ("MSFT" in v or v == "All")
               for v in at.selectbox(key="mon_model").options)


def test_retrain_now_shows_the_gate_result_and_approval_queue(registry_copy, monkeypatch):
    from core import training

    real = training.train_model
    monkeypatch.setattr(training, "train_model",
                        lambda symbol, model_type, **kw: real(symbol, model_type, **{**kw, "params": {"n_estimators": 20}}))
    at = _run("pages/2_Model_Management.py")
    assert any("Approval queue: empty" in c.value for c in at.caption)
    at = [b for b in at.button if b.label == "Retrain Now"][0].click().run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    gate = [d.value for d in at.dataframe if "challenger MAE $" in d.value.columns][0]
    assert {"challenger MAE $", "champion MAE $", "naive MAE $", "passed"} <= set(gate.columns)
    job = registry_copy.execute("SELECT status, trigger FROM retrain_jobs ORDER BY id DESC LIMIT 1").fetchone()
    assert job[1] == "manual" and job[0] in ("rejected", "validating")
    assert bool(gate["passed"].iloc[0]) == (job[0] == "validating")
    challenger = registry_copy.execute("SELECT challenger_id FROM retrain_jobs ORDER BY id DESC LIMIT 1").fetchone()[0]
    boxes = at.success if job[0] == "validating" else at.warning  # a rejected challenger is never in a green box
    assert any(escape_markdown(challenger) in b.value for b in boxes)  # the result names the new model
    assert challenger in set(at.dataframe[0].value["model_id"])  # and the models table already lists it


def test_monitoring_shows_alert_messages_literally(registry_copy):
    from core.alerts import raise_alert

    hostile = "[ack here](http://evil.example) <b>x</b> **now**"
    day = registry_copy.execute("SELECT MAX(as_of) FROM predictions WHERE symbol = 'AAPL'").fetchone()[0]
    model_id = registry_copy.execute("SELECT model_id FROM models WHERE status = 'deployed' ORDER BY model_id").fetchone()[0]
    raise_alert(model_id, "drift", "warning", hostile, day)
    at = _run("pages/6_Monitoring.py")
    assert any((df.value["message"] == hostile).any() for df in at.dataframe if "message" in df.value)
    rendered = [e.value for kind in ("markdown", "caption", "info", "error", "success") for e in at.get(kind)]
    assert not any("](http" in text or "<b>" in text for text in rendered)


def test_monitoring_on_a_read_only_file_system_shows_the_words(tmp_path, monkeypatch):
    """A read-only bind mount of a WAL database: SQLite cannot even create its -shm file to read."""
    source, mount = tmp_path / "source", tmp_path / "ro"
    source.mkdir()
    mount.mkdir()
    get_db(source / "app.db")
    close_all()
    if subprocess.run(["mount", "--bind", str(source), str(mount)], capture_output=True).returncode:
        pytest.skip("mount is not permitted here: cannot make a read-only file system")
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(mount)], check=True, capture_output=True)
        monkeypatch.setenv("MLSA_DB_PATH", str(mount / "app.db"))
        at = AppTest.from_file(str(ROOT / "pages/6_Monitoring.py"), default_timeout=60).run()
        assert not at.exception
        assert len(at.error) == 1 and f"the file system mounted at {mount} is read-only" in at.error[0].value
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def test_alert_hover_text_is_escaped():
    """Plotly renders <b>, <a> and <br> in hover text: a stored alert message must arrive as text."""
    import pandas as pd

    from core.charts import alerts_timeline_figure

    alerts = pd.DataFrame({"day": ["2012-06-01"], "kind": ["drift"], "severity": ["critical"], "acknowledged_at": [None],
                           "message": ['<a href="http://evil.example">click</a> <b>x</b>']})
    text = alerts_timeline_figure(alerts).data[0].text[0]
    assert "<a" not in text and "&lt;a href=" in text


def test_monitoring_deep_link_one_point_charts_and_alert_columns(registry_copy):
    """?model= selects its ticker and model (and the URL follows); a chart with one point is a sentence;
    the alerts table leads with severity, kind and message."""
    from conftest import page_app

    from core.alerts import raise_alert

    model_id = registry_copy.execute("SELECT model_id FROM models WHERE symbol = 'MSFT' AND status = 'deployed'").fetchone()[0]
    registry_copy.execute("DELETE FROM drift_checks")
    registry_copy["drift_checks"].insert({"model_id": model_id, "as_of": "2012-06-01", "window_days": 30, "overall_drift": 0,
                                          "severity": "none", "reasons_json": "[]", "report_json": "{}",
                                          "created_at": "2026-01-01T00:00:00Z"})
    raise_alert(model_id, "latency_spike", "warning", "P95 tripled", "2012-06-01", db=registry_copy)
    at = page_app("pages/6_Monitoring.py")
    at.query_params["model"] = model_id
    at.run()
    assert not at.exception
    assert at.selectbox(key="mon_symbol").value == "MSFT" and at.selectbox(key="mon_model").value == model_id
    assert at.query_params["model"] == model_id
    assert any("Only one drift check so far" in c.value for c in at.caption)
    table = next(df.value for df in at.dataframe if "severity" in df.value.columns)
    assert list(table.columns[:3]) == ["severity", "kind", "message"]
